import { createServer } from 'node:http2';
import { Code, ConnectError, createClient, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter, Http2SessionManager } from '@connectrpc/connect-node';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createGrpcUnaryTransport } from '../src/api/grpc-unary-transport.js';
import { createRetryInterceptor, type RetryPolicy } from '../src/api/retry-interceptor.js';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../src/gen/grpc/health/v1/health_pb.js';
import {
  createCredentialsInterceptor,
  createIdTokenCredentials,
} from '../src/identity/id-token-credentials.js';
import { listenH2c } from './helpers/listen-h2c.js';

/*
 * A real backend whose methods fail as told, and Connect clients over the api's transport with
 * the retry interceptor. Greet is marked IDEMPOTENT in its proto; grpc.health.v1's Check is not.
 */

type Failure = { code: Code; times: number };
type Call = {
  method: string;
  timeoutHeader: string | null;
  authorization: string | null;
  at: number;
};

let failure: Failure = { code: Code.Unavailable, times: 0 };
let calls: Call[] = [];
let baseUrl = '';
let close: () => Promise<void>;

function answer(method: string, context: HandlerContext): void {
  calls.push({
    method,
    timeoutHeader: context.requestHeader.get('grpc-timeout'),
    authorization: context.requestHeader.get('authorization'),
    at: performance.now(),
  });
  if (calls.length <= failure.times) throw new ConnectError('not now', failure.code);
}

beforeAll(async () => {
  const server = createServer(
    connectNodeAdapter({
      routes: (router) => {
        router.service(BackendService, {
          greet: ({ name }, context) => {
            answer('Greet', context);
            return { reply: `Hello ${name}!!` };
          },
        });
        router.service(Health, {
          check: (_, context) => {
            answer('Check', context);
            return { status: HealthCheckResponse_ServingStatus.SERVING };
          },
          watch: async function* () {},
          list: () => ({ statuses: {} }),
        });
      },
    }),
  );
  ({ url: baseUrl, close } = await listenH2c(server));
});

afterAll(() => close());

beforeEach(() => {
  calls = [];
  failure = { code: Code.Unavailable, times: 0 };
});

afterEach(() => {
  vi.restoreAllMocks();
});

function clients(policy: Partial<RetryPolicy> = {}, tokenSource?: () => Promise<string>) {
  const sessionManager = new Http2SessionManager(baseUrl);
  const retries = createRetryInterceptor({
    maxAttempts: 4,
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    ...policy,
  });
  const credentials = tokenSource
    ? [createCredentialsInterceptor(createIdTokenCredentials(baseUrl, tokenSource))]
    : [];
  const transport = createGrpcUnaryTransport({
    baseUrl,
    sessionManager,
    interceptors: [retries, ...credentials],
  });
  return {
    backend: createClient(BackendService, transport),
    health: createClient(Health, transport),
    [Symbol.dispose]: () => sessionManager.abort(),
  };
}

async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return 'OK';
  } catch (error) {
    return Code[ConnectError.from(error).code] ?? 'unknown';
  }
}

describe('retries on UNAVAILABLE', () => {
  it('retries a method marked idempotent until it succeeds', async () => {
    using client = clients();
    failure = { code: Code.Unavailable, times: 2 };
    const { reply } = await client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 });
    expect(reply).toBe('Hello Ada!!');
    expect(calls.map((call) => call.method)).toEqual(['Greet', 'Greet', 'Greet']);
  });

  it('gives each attempt what is left of the one deadline', async () => {
    using client = clients({ initialBackoffMs: 300, maxBackoffMs: 300 });
    failure = { code: Code.Unavailable, times: 3 };
    await client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 });
    expect(calls).toHaveLength(4);
    expect(calls.every((call) => /^\d+m$/.test(call.timeoutHeader ?? ''))).toBe(true);
    const first = calls[0]?.at ?? 0;
    for (const call of calls) {
      const left = 5_000 - (call.at - first);
      expect(Math.abs(Number(call.timeoutHeader?.slice(0, -1)) - left)).toBeLessThan(50);
    }
  });

  it('does not retry a method without an idempotency level: it may have run', async () => {
    using client = clients();
    failure = { code: Code.Unavailable, times: 1 };
    expect(await outcome(client.health.check({ service: '' }, { timeoutMs: 5_000 }))).toBe(
      'Unavailable',
    );
    expect(calls.map((call) => call.method)).toEqual(['Check']);
  });

  it('stops after maxAttempts and reports UNAVAILABLE', async () => {
    using client = clients({ maxAttempts: 3 });
    failure = { code: Code.Unavailable, times: 100 };
    expect(await outcome(client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 }))).toBe(
      'Unavailable',
    );
    expect(calls).toHaveLength(3);
  });

  it.each([Code.Internal, Code.InvalidArgument, Code.DeadlineExceeded, Code.ResourceExhausted])(
    'does not retry code %s',
    async (code) => {
      using client = clients();
      failure = { code, times: 1 };
      expect(await outcome(client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 }))).toBe(
        Code[code],
      );
      expect(calls).toHaveLength(1);
    },
  );

  it('does not start an attempt that the deadline would cut short, and says why it retried', async () => {
    using client = clients({ initialBackoffMs: 10_000, maxBackoffMs: 10_000 });
    failure = { code: Code.Unavailable, times: 100 };
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const startedAt = performance.now();
    // A backoff of 5 s against a deadline of 300 ms: UNAVAILABLE at once, not a 300 ms wait.
    expect(await outcome(client.backend.greet({ name: 'Ada' }, { timeoutMs: 300 }))).toBe(
      'Unavailable',
    );
    expect(calls).toHaveLength(1);
    expect(performance.now() - startedAt).toBeLessThan(250);
  });

  it('keeps to the deadline given in fractions of a millisecond', async () => {
    using client = clients({ initialBackoffMs: 10_000, maxBackoffMs: 10_000 });
    failure = { code: Code.Unavailable, times: 100 };
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    expect(await outcome(client.backend.greet({ name: 'Ada' }, { timeoutMs: 300.5 }))).toBe(
      'Unavailable',
    );
    expect(calls.map((call) => call.timeoutHeader)).toEqual(['301m']);
  });

  it('asks for a token for every attempt', async () => {
    let minted = 0;
    // Tokens due for refresh at once (two minutes left, inside the five-minute margin): each
    // attempt sends the token in hand and has the next one fetched meanwhile.
    const expiringToken = async () => {
      minted++;
      const payload = { exp: Math.floor(Date.now() / 1000) + 120, n: minted };
      return `x.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.y`;
    };
    using client = clients({}, expiringToken);
    failure = { code: Code.Unavailable, times: 2 };
    await client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 });
    const tokens = calls.map((call) => call.authorization);
    expect(tokens).toHaveLength(3);
    expect(minted).toBe(3);
    expect(tokens[2]).not.toBe(tokens[0]);
    expect(tokens.every((token) => token?.startsWith('Bearer x.'))).toBe(true);
  });

  it('does not retry when no token can be had, and never reaches the backend', async () => {
    let asked = 0;
    using client = clients({}, async () => {
      asked++;
      throw new Error('metadata server down');
    });
    const result = await client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 }).then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    expect(result?.code).toBe(Code.Unavailable);
    expect(result?.message).toContain('could not get a Google ID token');
    expect(asked).toBe(1);
    expect(calls).toHaveLength(0);
  });

  it("stops waiting when the caller's signal is aborted during the backoff", async () => {
    using client = clients({ initialBackoffMs: 2_000, maxBackoffMs: 2_000 });
    failure = { code: Code.Unavailable, times: 100 };
    const caller = new AbortController();
    setTimeout(() => caller.abort(), 100);
    const startedAt = performance.now();
    const result = await outcome(
      client.backend.greet({ name: 'Ada' }, { timeoutMs: 60_000, signal: caller.signal }),
    );
    // Aborted during the backoff (canceled), unless the draw was under 100 ms and the next
    // attempt failed first: then the abort met a second backoff.
    expect(result).toBe('Canceled');
    expect(performance.now() - startedAt).toBeLessThan(1_000);
    expect(calls.length).toBeLessThanOrEqual(3);
  });

  it('with maxAttempts 1 makes one attempt', async () => {
    using client = clients({ maxAttempts: 1 });
    failure = { code: Code.Unavailable, times: 1 };
    expect(await outcome(client.backend.greet({ name: 'Ada' }, { timeoutMs: 5_000 }))).toBe(
      'Unavailable',
    );
    expect(calls).toHaveLength(1);
  });
});
