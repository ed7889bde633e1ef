import { createServer, type Http2Server } from 'node:http2';
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { connectNodeAdapter, Http2SessionManager } from '@connectrpc/connect-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcUnaryTransport } from '../src/api/grpc-unary-transport.js';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { markCallerRefusal } from '../src/identity/caller-refusal.js';
import {
  createCredentialsInterceptor,
  createIdTokenCredentials,
  type IdTokenCredentials,
  isCredentialsError,
} from '../src/identity/id-token-credentials.js';
import {
  type IdentityAnswer,
  type MetadataServer,
  startFrontEnd,
  startMetadataServer,
} from '../tools/cloud-run-local/index.ts';
import { useMetadataServer } from './helpers/google-auth-env.js';
import { listenH2c } from './helpers/listen-h2c.js';
import { eventually } from './helpers/roles.js';

/*
 * The api's ID tokens from a real local metadata server (RS256 tokens, or whatever it is told to
 * answer), through google-auth-library's credentials as on Cloud Run (K_SERVICE set, so
 * gcp-metadata puts no time limit of its own on its requests), sent by the credentials
 * interceptor to a real gRPC backend, directly or through the local front end's IAM check.
 */

const AUDIENCE = 'https://backend.example';

/** What the backend does with the next calls; every call's `authorization` header. */
let backendAnswer: () => void = () => {};
const seen: (string | null)[] = [];
let backendUrl = '';
let server: Http2Server;
let metadata: MetadataServer;
let restoreEnv: (() => Promise<void>) | undefined;
const cleanups: (() => Promise<unknown> | unknown)[] = [];

beforeAll(async () => {
  metadata = await startMetadataServer();
  restoreEnv = await useMetadataServer(metadata);
  server = createServer(
    connectNodeAdapter({
      routes: (router) => {
        router.service(BackendService, {
          greet: ({ name }, context) => {
            seen.push(context.requestHeader.get('authorization'));
            backendAnswer();
            return { reply: `Hello ${name}!!` };
          },
        });
      },
    }),
  );
  const listening = await listenH2c(server);
  backendUrl = listening.url;
  cleanups.push(() => listening.close());
});

afterEach(() => {
  backendAnswer = () => {};
  seen.length = 0;
  metadata.setIdentityAnswer(undefined);
  metadata.setDelayMs(0);
  metadata.setIdTokenLifetimeSeconds(3600);
});

afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await metadata?.close();
  await restoreEnv?.();
});

/** A Greet client whose calls get their token from `credentials`. */
function client(credentials: IdTokenCredentials, baseUrl = backendUrl, ca?: string) {
  const sessionManager = new Http2SessionManager(baseUrl, {}, ca ? { ca } : {});
  cleanups.push(() => sessionManager.abort());
  const interceptors: Interceptor[] = [createCredentialsInterceptor(credentials)];
  return createClient(
    BackendService,
    createGrpcUnaryTransport({ baseUrl, sessionManager, interceptors }),
  );
}

async function greet(backend: ReturnType<typeof client>): Promise<ConnectError | 'OK'> {
  try {
    await backend.greet({ name: 'Id' }, { timeoutMs: 10_000 });
    return 'OK';
  } catch (error) {
    return ConnectError.from(error);
  }
}

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** The error `authorization()` fails with. */
async function failure(credentials: IdTokenCredentials): Promise<ConnectError> {
  const outcome = await credentials.authorization().then(
    () => new Error('expected a credentials error, got a token'),
    (error: unknown) => error,
  );
  if (!(outcome instanceof ConnectError)) throw outcome;
  return outcome;
}

describe('what the token source answers', () => {
  const valid = () => metadata.mintIdToken(AUDIENCE);
  // Each answer comes from the metadata server's identity endpoint, as the api asks for it.
  it.each<[string, () => IdentityAnswer, RegExp]>([
    ['text that is not a JWT', () => ({ body: 'this is not a jwt' }), /not an ID token \(a JWT\)/],
    [
      "a captive portal's HTML",
      () => ({ body: '<html><body>captive portal</body></html>' }),
      /not an ID token \(a JWT\)/,
    ],
    ['an empty body', () => ({ body: '' }), /not an ID token \(a JWT\)/],
    [
      'a valid token followed by CR/LF and a header',
      () => ({ body: `${valid()}\r\nx-evil: 1` }),
      /not an ID token \(a JWT\)/,
    ],
    ['a valid token and a newline', () => ({ body: `${valid()}\n` }), /not an ID token \(a JWT\)/],
    [
      'a JWT without exp',
      () => ({ body: `${base64url({ alg: 'RS256' })}.${base64url({ aud: AUDIENCE })}.c2ln` }),
      /a JWT without a numeric expiry \(exp\)/,
    ],
    [
      'a JWT whose exp is not a number',
      () => ({ body: `${base64url({ alg: 'RS256' })}.${base64url({ exp: 'soon' })}.c2ln` }),
      /a JWT without a numeric expiry \(exp\)/,
    ],
    [
      'a token that expired 100 s ago',
      () => ({ body: metadata.mintIdToken(AUDIENCE, { expiresInSeconds: -100 }) }),
      /an ID token that expired at \d{4}-\d\d-\d\dT[\d:.]+Z \(this clock: [^)]+\): check the clock/,
    ],
    [
      'a token with 30 s left',
      () => ({ body: metadata.mintIdToken(AUDIENCE, { expiresInSeconds: 30 }) }),
      /an ID token that expires at \S+Z, in less than 60 s .*: check the clock/,
    ],
    [
      'HTTP 500 with a body',
      () => ({ status: 500, body: '<html>internal error eyJhbGciOi.x.y</html>' }),
      /the metadata server answered HTTP 500 for the ID token\. On Cloud Run check the service account/,
    ],
  ])(
    '%s: a credentials error that does not quote it, nothing sent, nothing kept',
    async (_case, answer, reason) => {
      const credentials = createIdTokenCredentials(AUDIENCE);
      const backend = client(credentials);
      const before = metadata.idTokenRequests();
      const body = answer();
      metadata.setIdentityAnswer(body);

      const error = await greet(backend);
      expect(error).toBeInstanceOf(ConnectError);
      if (!(error instanceof ConnectError)) return;
      expect(isCredentialsError(error)).toBe(true);
      expect(error.code).toBe(Code.Unavailable);
      expect(error.rawMessage).toMatch(
        /^could not get a Google ID token for audience https:\/\/backend\.example: /,
      );
      expect(error.rawMessage).toMatch(reason);
      expect(error.message).not.toContain('eyJ');
      expect(error.message).not.toContain('portal');
      expect(error.cause).toBeUndefined();
      // Nothing reached the backend, and nothing was kept: each call asks again, once.
      expect(seen).toEqual([]);
      await expect(credentials.authorization()).rejects.toSatisfy(isCredentialsError);
      expect(metadata.idTokenRequests() - before).toBe(2);

      metadata.setIdentityAnswer(undefined);
      expect(await greet(backend)).toBe('OK');
      expect(seen).toEqual([expect.stringMatching(/^Bearer eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+$/)]);
      expect(metadata.idTokenRequests() - before).toBe(3);
    },
  );

  it('a source that fails: the reason once, with what to check; no cause to repeat it', async () => {
    // google-auth-library's own message, which ends with a period.
    const reason =
      'Could not load the default credentials. Browse to https://cloud.google.com/docs/authentication/getting-started for more information.';
    const credentials = createIdTokenCredentials(AUDIENCE, async () => {
      throw new Error(reason);
    });
    const error = await failure(credentials);
    expect(isCredentialsError(error)).toBe(true);
    expect(error.rawMessage).toBe(
      `could not get a Google ID token for audience ${AUDIENCE}: ${reason} ` +
        'On Cloud Run check the service account of this service; locally set ' +
        'GOOGLE_APPLICATION_CREDENTIALS to impersonated or service-account credentials.',
    );
    expect(error.cause).toBeUndefined();
  });
});

describe('a slow or hanging token source', () => {
  it('calls waiting together for a token share one request to the source', async () => {
    // A cold start at Cloud Run's concurrency: 80 requests and no token yet.
    metadata.setDelayMs(200);
    const credentials = createIdTokenCredentials(AUDIENCE);
    const before = metadata.idTokenRequests();
    const answers = await Promise.all(
      Array.from({ length: 80 }, () => credentials.authorization()),
    );
    expect(new Set(answers).size).toBe(1);
    expect(metadata.idTokenRequests() - before).toBe(1);
  });

  it('while the token in hand has more than a minute left, calls get it at once and one background refresh replaces it', async () => {
    // Tokens of 4 minutes: inside the 5-minute refresh window from the start.
    metadata.setIdTokenLifetimeSeconds(240);
    const credentials = createIdTokenCredentials(AUDIENCE);
    const first = await credentials.authorization();
    const before = metadata.idTokenRequests();

    metadata.setDelayMs(2_000);
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      expect(await credentials.authorization()).toBe(first);
      expect(performance.now() - started).toBeLessThan(100);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // One refresh for all of them; its token is sent once it is in.
    await eventually(async () => {
      expect(await credentials.authorization()).not.toBe(first);
    });
    expect(metadata.idTokenRequests() - before).toBe(1);
  });

  it('a refresh that fails in the background leaves the token in hand, and the source alone for 10 s', async () => {
    metadata.setIdTokenLifetimeSeconds(240);
    const credentials = createIdTokenCredentials(AUDIENCE);
    const first = await credentials.authorization();
    const before = metadata.idTokenRequests();
    metadata.setIdentityAnswer({ body: 'not a token' });
    expect(await credentials.authorization()).toBe(first);
    await eventually(() => expect(metadata.idTokenRequests() - before).toBe(1));
    for (let i = 0; i < 3; i++) expect(await credentials.authorization()).toBe(first);
    expect(metadata.idTokenRequests() - before).toBe(1);
  });

  it('without a usable token a call waits at most 3 s; the request given up is closed; no service-account advice', async () => {
    // The metadata server answers gcp-metadata's probe, but its identity endpoint never answers.
    const hanging = createIdTokenCredentials(AUDIENCE);
    metadata.setIdentityAnswer('hang');
    for (let i = 0; i < 2; i++) {
      const started = performance.now();
      const error = await failure(hanging);
      const ms = performance.now() - started;
      expect(ms).toBeGreaterThanOrEqual(2_900);
      expect(ms).toBeLessThan(3_800);
      expect(isCredentialsError(error)).toBe(true);
      expect(error.rawMessage).toBe(
        `could not get a Google ID token for audience ${AUDIENCE}: the token source did not answer within 3000 ms; the next call asks again`,
      );
    }
    // Each given-up request was closed: no connection is left open for it (keep-alive
    // connections idle in a pool close on their own within seconds).
    await eventually(() => expect(metadata.openConnections()).toBe(0), 15_000);
  }, 30_000);
  it('a source that does not stop when its signal aborts is given up at 3 s all the same', async () => {
    let asked = 0;
    const deaf = createIdTokenCredentials(AUDIENCE, () => {
      asked++;
      return new Promise<string>(() => {});
    });
    const started = performance.now();
    const error = await failure(deaf);
    expect(performance.now() - started).toBeGreaterThanOrEqual(2_900);
    expect(error.rawMessage).toBe(
      `could not get a Google ID token for audience ${AUDIENCE}: the token source did not answer within 3000 ms; the next call asks again`,
    );
    expect(asked).toBe(1);
  }, 15_000);

  it('a search for the credentials given up at 3 s is not joined by the next call, which asks afresh', async () => {
    // The whole metadata server hangs (20 s), gcp-metadata's probe and project lookup included.
    metadata.setDelayMs(20_000);
    const credentials = createIdTokenCredentials(AUDIENCE);
    const error = await failure(credentials);
    expect(error.rawMessage).toContain('did not answer within 3000 ms; the next call asks again');
    metadata.setDelayMs(0);
    const started = performance.now();
    expect(await credentials.authorization()).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect(performance.now() - started).toBeLessThan(2_500);
  }, 30_000);
});

describe('a token the backend refuses', () => {
  it("is forgotten on the token check's UNAUTHENTICATED refusal, at most once every 15 s", async () => {
    const credentials = createIdTokenCredentials(AUDIENCE);
    const backend = client(credentials);
    expect(await greet(backend)).toBe('OK');
    const before = metadata.idTokenRequests();
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // a new iat: a different token

    backendAnswer = () => {
      throw markCallerRefusal(
        new ConnectError('invalid ID token: No pem found for envelope', Code.Unauthenticated),
        'id-token',
      );
    };
    expect(await greet(backend)).toMatchObject({ code: Code.Unauthenticated });
    backendAnswer = () => {};
    expect(await greet(backend)).toBe('OK');
    expect(metadata.idTokenRequests() - before).toBe(1);
    expect(seen[2]).not.toBe(seen[1]);

    // Refused again at once: the new token is kept (no second refetch within 15 s).
    backendAnswer = () => {
      throw markCallerRefusal(new ConnectError('invalid', Code.Unauthenticated), 'id-token');
    };
    expect(await greet(backend)).toMatchObject({ code: Code.Unauthenticated });
    backendAnswer = () => {};
    expect(await greet(backend)).toBe('OK');
    expect(seen[4]).toBe(seen[2]);
    expect(metadata.idTokenRequests() - before).toBe(1);
  });

  it.each([
    [
      'a PERMISSION_DENIED refusal (another token would be refused too)',
      () => markCallerRefusal(new ConnectError('not allowed', Code.PermissionDenied), 'id-token'),
    ],
    ["a handler's own UNAUTHENTICATED", () => new ConnectError('no session', Code.Unauthenticated)],
  ])('is kept after %s', async (_case, refusal) => {
    const credentials = createIdTokenCredentials(AUDIENCE);
    const backend = client(credentials);
    backendAnswer = () => {
      throw refusal();
    };
    await greet(backend);
    const before = metadata.idTokenRequests();
    await greet(backend);
    expect(metadata.idTokenRequests()).toBe(before);
    expect(seen[1]).toBe(seen[0]);
  });

  it("is forgotten on the front end's HTTP 401 after the signing key changed: the next call gets through", async () => {
    const frontEnd = await startFrontEnd({
      upstream: backendUrl,
      upstreamProtocol: 'h2c',
      auth: { certsUrl: metadata.certsUrl, audience: AUDIENCE },
    });
    cleanups.push(() => frontEnd.close());
    const credentials = createIdTokenCredentials(AUDIENCE);
    const backend = client(credentials, frontEnd.url, frontEnd.caCertPem);
    expect(await greet(backend)).toBe('OK');
    const before = metadata.idTokenRequests();

    // A restarted metadata server signs with a new key and publishes only that one; the front
    // end fetches the new set when a token of the new key reaches it.
    await metadata.rotateSigningKey();
    const other = client(
      { authorization: async () => `Bearer ${metadata.mintIdToken(AUDIENCE)}`, refused() {} },
      frontEnd.url,
      frontEnd.caCertPem,
    );
    expect(await greet(other)).toBe('OK');
    const refused = await greet(backend);
    expect(refused).toMatchObject({ code: Code.Unauthenticated, rawMessage: 'HTTP 401' });
    expect(await greet(backend)).toBe('OK');
    expect(metadata.idTokenRequests() - before).toBe(1);
  });
});
