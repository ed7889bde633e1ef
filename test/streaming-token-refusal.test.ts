import { createServer } from 'node:http2';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { connectNodeAdapter, Http2SessionManager } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcUnaryTransport } from '../src/api/grpc-unary-transport.js';
import {
  createCredentialsInterceptor,
  createIdTokenCredentials,
  type IdTokenCredentials,
} from '../src/identity/id-token-credentials.js';
import {
  type FrontEnd,
  type MetadataServer,
  startFrontEnd,
  startMetadataServer,
} from '../tools/cloud-run-local/index.ts';
import {
  registerStreamingTestService,
  StreamingTestService,
} from './fixtures/streaming-test-service.js';
import { useMetadataServer } from './helpers/google-auth-env.js';
import { type ListeningH2c, listenH2c } from './helpers/listen-h2c.js';

/*
 * A streaming backend call through the local Cloud Run front end, with the api's transport and
 * credentials: the front end's HTTP 401 for a token it cannot check drops the token, as on a
 * unary call, so that the next call fetches one that passes. Tokens come from a real local
 * metadata server through google-auth-library, as on Cloud Run.
 */

const AUDIENCE = 'https://backend.example';

let metadata: MetadataServer;
let backend: ListeningH2c;
let frontEnd: FrontEnd;
let restoreEnv: (() => Promise<void>) | undefined;
const managers: Http2SessionManager[] = [];

beforeAll(async () => {
  metadata = await startMetadataServer();
  restoreEnv = await useMetadataServer(metadata);
  backend = await listenH2c(
    createServer(connectNodeAdapter({ routes: registerStreamingTestService })),
  );
  frontEnd = await startFrontEnd({
    upstream: backend.url,
    upstreamProtocol: 'h2c',
    auth: { certsUrl: metadata.certsUrl, audience: AUDIENCE },
  });
});

afterAll(async () => {
  for (const manager of managers) manager.abort();
  await frontEnd?.close();
  await backend?.close();
  await metadata?.close();
  await restoreEnv?.();
});

/** A client of the test service through the front end, on the api's transport. */
function client(credentials: IdTokenCredentials) {
  const sessionManager = new Http2SessionManager(frontEnd.url, {}, { ca: frontEnd.caCertPem });
  managers.push(sessionManager);
  const transport = createGrpcUnaryTransport({
    baseUrl: frontEnd.url,
    sessionManager,
    interceptors: [createCredentialsInterceptor(credentials)],
  });
  return createClient(StreamingTestService, transport);
}

/** The server stream's texts, or the error that ended it. */
async function stream(backendClient: ReturnType<typeof client>): Promise<string[] | ConnectError> {
  const texts: string[] = [];
  try {
    const messages = backendClient.stream({ text: 'hi', count: 2 }, { timeoutMs: 10_000 });
    for await (const { text } of messages) texts.push(text);
    return texts;
  } catch (error) {
    return ConnectError.from(error);
  }
}

describe("a streaming call refused by the front end's HTTP 401", () => {
  it('drops the token, so that the next call fetches one that passes', async () => {
    const credentials = createIdTokenCredentials(AUDIENCE);
    const backendClient = client(credentials);
    expect(await stream(backendClient)).toEqual(['hi', 'hi']);
    const before = metadata.idTokenRequests();

    // A restarted metadata server signs with a new key and publishes only that one; the front
    // end fetches the new set when a token of the new key reaches it.
    await metadata.rotateSigningKey();
    const other = client({
      authorization: async () => `Bearer ${metadata.mintIdToken(AUDIENCE)}`,
      refused() {},
    });
    expect(await stream(other)).toEqual(['hi', 'hi']);

    expect(await stream(backendClient)).toMatchObject({
      code: Code.Unauthenticated,
      rawMessage: 'HTTP 401',
    });
    expect(await stream(backendClient)).toEqual(['hi', 'hi']);
    expect(metadata.idTokenRequests() - before).toBe(1);
  });
});
