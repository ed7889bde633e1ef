export type { FrontEnd, FrontEndAuthOptions, FrontEndOptions } from './front-end.ts';
export { startFrontEnd } from './front-end.ts';
export type {
  IdTokenVerdict,
  IdTokenVerifier,
  IdTokenVerifierOptions,
} from './id-token-verifier.ts';
export { createIdTokenVerifier } from './id-token-verifier.ts';
export type {
  IdentityAnswer,
  MetadataServer,
  MetadataServerOptions,
  MintIdTokenOptions,
} from './metadata-server.ts';
export { startMetadataServer } from './metadata-server.ts';
export type { TraceRewrite } from './trace-rewrite.ts';
export { rewriteTraceHeaders } from './trace-rewrite.ts';
