import {
  Code,
  ConnectError,
  createContextKey,
  type HandlerContext,
  type Interceptor,
} from '@connectrpc/connect';
import { trace } from '@opentelemetry/api';
import type { OAuth2Client } from 'google-auth-library';
import type { Config } from '../config.js';
import { lazy } from '../lazy.js';
import { INFRASTRUCTURE_SERVICES } from '../rpc/index.js';
import type { Logger } from '../telemetry/logger.js';
import { markCallerRefusal } from './caller-refusal.js';
import { loadGoogleAuthLibrary } from './google-auth-library.js';

const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];
const CERTS_MAX_AGE_MS = 60 * 60_000;
const CERTS_FETCH_TIMEOUT_MS = 5_000;
/** A JWT is three base64url parts; anything longer than this is not a Google ID token. */
const MAX_TOKEN_LENGTH = 8 * 1024;

export type VerifiedCaller = { email: string | undefined; subject: string };

/** The verified caller of the current RPC, for handlers: `context.values.get(CALLER)`. */
export const CALLER = createContextKey<VerifiedCaller | undefined>(undefined, {
  description: 'verified caller',
});

/** Where the verified caller's service account is recorded on the server span. */
export const ATTR_CALLER_SERVICE_ACCOUNT = 'caller.service_account';

export type TokenVerifier = {
  /**
   * Connect's `requestGate`: runs on the headers, before the request body is read, so a caller
   * without a valid token cannot make the server read, decompress or parse anything.
   */
  requestGate(context: HandlerContext): Promise<void>;
  /** Puts the verified caller on the call's span (place it after the tracing interceptor). */
  recordCaller: Interceptor;
};

/**
 * The in-app check for running outside Cloud Run's IAM (Knative, GKE, a VM): a Google-signed
 * ID token for our audience, unexpired, from an allowed service account. Health and reflection
 * are exempt so probes and tools work without tokens. Refused calls end before any span
 * starts (as they would at Cloud Run's front end), so each is logged here, at info.
 */
export function createTokenVerifier(config: Config, logger: Logger): TokenVerifier {
  const audience = config.AUTH_AUDIENCE;
  if (!audience) throw new Error('AUTH_AUDIENCE is required when AUTH_VERIFY_TOKENS=true');
  const allowed = config.AUTH_ALLOWED_CALLERS ? new Set(config.AUTH_ALLOWED_CALLERS) : undefined;
  if (!allowed) {
    logger.warn(
      'AUTH_ALLOWED_CALLERS is not set: any Google service account, from any project, that asks for a token for this audience is let in. List the callers (comma-separated emails) to admit only them, as Cloud Run IAM would.',
    );
  }
  // Loaded with the first token to check, off the start-up path.
  const oauthClient = lazy(async () => new (await loadGoogleAuthLibrary()).OAuth2Client());
  const certs = createCertsCache(config.AUTH_CERTS_URL);

  async function verify(authorization: string | null): Promise<VerifiedCaller> {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
    if (!match?.[1]) {
      throw new ConnectError(
        'missing bearer token: send a Google ID token as "authorization: Bearer <token>"',
        Code.Unauthenticated,
      );
    }
    if (match[1].length > MAX_TOKEN_LENGTH) {
      throw new ConnectError('invalid ID token: too long', Code.Unauthenticated);
    }
    let signingCerts: Record<string, string>;
    try {
      signingCerts = await certs();
    } catch (error) {
      // Our failure, not the caller's: UNAVAILABLE, which callers retry.
      throw new ConnectError(
        `cannot check ID tokens right now: ${error instanceof Error ? error.message : String(error)} (AUTH_CERTS_URL)`,
        Code.Unavailable,
      );
    }
    let verifier: OAuth2Client;
    try {
      verifier = await oauthClient();
    } catch (error) {
      // Our failure, not the caller's (as with the certificates above).
      throw new ConnectError(
        `cannot check ID tokens right now: ${reasonOf(error)}`,
        Code.Unavailable,
      );
    }
    let payload: { email?: string; sub?: string } | undefined;
    try {
      const ticket = await verifier.verifySignedJwtWithCertsAsync(
        match[1],
        signingCerts,
        audience,
        GOOGLE_ISSUERS,
      );
      payload = ticket.getPayload();
    } catch (error) {
      throw new ConnectError(`invalid ID token: ${reasonOf(error)}`, Code.Unauthenticated);
    }
    const caller: VerifiedCaller = { email: payload?.email, subject: payload?.sub ?? '' };
    if (allowed && !(caller.email && allowed.has(caller.email))) {
      throw new ConnectError(
        'this caller is not allowed (AUTH_ALLOWED_CALLERS)',
        Code.PermissionDenied,
      );
    }
    return caller;
  }

  return {
    async requestGate(context) {
      if (INFRASTRUCTURE_SERVICES.has(context.service.typeName)) return;
      try {
        context.values.set(CALLER, await verify(context.requestHeader.get('authorization')));
      } catch (error) {
        const refusal = ConnectError.from(error);
        const { code, rawMessage } = refusal;
        logger.info(
          { rpc: `${context.service.typeName}/${context.method.name}`, code: Code[code] },
          `call refused: ${rawMessage}`,
        );
        throw code === Code.Unavailable ? refusal : markCallerRefusal(refusal, 'id-token');
      }
    },
    recordCaller: (next) => (request) => {
      const email = request.contextValues.get(CALLER)?.email;
      if (email) trace.getActiveSpan()?.setAttribute(ATTR_CALLER_SERVICE_ACCOUNT, email);
      return next(request);
    },
  };
}

/**
 * google-auth-library's reason without what follows its colon: the messages go on to quote the
 * whole token or its payload, which must not reach logs, spans or the caller's error message.
 */
function reasonOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return (message.split(':', 1)[0] ?? '').slice(0, 120);
}

function isPemMap(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((pem) => typeof pem === 'string' && pem.includes('BEGIN'))
  );
}

/** Google's signing certificates (or a local issuer's), fetched once an hour. */
function createCertsCache(url: string): () => Promise<Record<string, string>> {
  let cached: { certs: Record<string, string>; fetchedAt: number } | undefined;
  let pending: Promise<Record<string, string>> | undefined;
  return () => {
    if (cached && Date.now() - cached.fetchedAt < CERTS_MAX_AGE_MS)
      return Promise.resolve(cached.certs);
    pending ??= (async () => {
      const response = await fetch(url, { signal: AbortSignal.timeout(CERTS_FETCH_TIMEOUT_MS) });
      if (!response.ok)
        throw new Error(`fetching signing certificates from ${url} gave HTTP ${response.status}`);
      const certs: unknown = await response.json();
      if (!isPemMap(certs)) {
        throw new Error(
          `${url} did not answer with PEM certificates by key id; AUTH_CERTS_URL takes Google's v1 format (https://www.googleapis.com/oauth2/v1/certs), not JWK (v3)`,
        );
      }
      cached = { certs, fetchedAt: Date.now() };
      return certs;
    })().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}
