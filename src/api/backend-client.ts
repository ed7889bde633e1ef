import type { Http2Session } from 'node:http2';
import { type CallOptions, Code, ConnectError, createClient } from '@connectrpc/connect';
import { type GrpcTransportOptions, Http2SessionManager } from '@connectrpc/connect-node';
import type { BackendTarget } from '../config.js';
import { BackendService } from '../gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../gen/grpc/health/v1/health_pb.js';
import {
  createCredentialsInterceptor,
  type IdTokenCredentials,
} from '../identity/id-token-credentials.js';
import { createClientTracingInterceptor } from '../telemetry/rpc-tracing.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { createGrpcUnaryTransport } from './grpc-unary-transport.js';
import { createRetryInterceptor } from './retry-interceptor.js';

/** The original service's backoff: 100 ms doubling to 10 s, full jitter (UNAVAILABLE only). */
const RETRY_BACKOFF = Object.freeze({ initialBackoffMs: 100, maxBackoffMs: 10_000 });

const READINESS_TIMEOUT_MS = 1_000;

export type GreetInput = { name: string; withError: boolean };

export type BackendClient = {
  greet(input: GreetInput, signal?: AbortSignal): Promise<string>;
  /** Whether the backend reports SERVING on grpc.health.v1, and if not, why. Never throws. */
  readiness(): Promise<Readiness>;
  close(): void;
};

/** `reason` names the backend's status or the call's failure: for the api's log, not callers. */
export type Readiness = { ready: true } | { ready: false; reason: string };

export type BackendClientDeps = {
  telemetry: Pick<Telemetry, 'tracer' | 'meter'>;
  /** Credentials for every call (the ID token on https targets). */
  credentials?: IdTokenCredentials;
};

/** Created once per process: one HTTP/2 session to the backend, reused by every call. */
export function createBackendClient(target: BackendTarget, deps: BackendClientDeps): BackendClient {
  const manager = new Http2SessionManager(target.url, {
    // Google's front end closes idle connections: one unused for more than 30 s is checked with a
    // PING before it carries a call (and pinged while calls are open), not kept alive by pings.
    pingIntervalMs: 30_000,
    pingIdleConnection: false,
    idleConnectionTimeoutMs: 5 * 60_000,
  });
  const sessionManager = withClosedSessionsHandled(manager);
  const tracing = createClientTracingInterceptor(
    deps.telemetry.tracer,
    deps.telemetry.meter,
    target.url,
  );
  // A token for each attempt, where there are credentials (https targets; none on local h2c).
  const credentials = deps.credentials ? [createCredentialsInterceptor(deps.credentials)] : [];
  const retries = createRetryInterceptor({ maxAttempts: target.maxAttempts, ...RETRY_BACKOFF });
  const baseUrl = target.url.toString();
  // Outermost first: each attempt gets a fresh token, then a CLIENT span of its own.
  const transport = createGrpcUnaryTransport({
    baseUrl,
    sessionManager,
    interceptors: [retries, ...credentials, tracing],
  });
  // Another service of the backend gets its client on the same transport.
  const backend = createClient(BackendService, transport);
  const health = createClient(
    Health,
    createGrpcUnaryTransport({ baseUrl, sessionManager, interceptors: credentials }),
  );

  /**
   * Every backend call's options: its deadline, BACKEND_TIMEOUT_MS with the token and any retries
   * included. The token is asked for before the call's clock starts, so that a slow or failing
   * token source is reported as such rather than as a deadline; the attempts then find it cached.
   */
  async function callOptions(signal: AbortSignal | undefined): Promise<CallOptions> {
    const startedAt = Date.now();
    if (deps.credentials) await deps.credentials.authorization();
    const timeoutMs = target.timeoutMs - (Date.now() - startedAt);
    if (timeoutMs <= 0) throw new ConnectError('backend deadline exceeded', Code.DeadlineExceeded);
    return { timeoutMs, ...(signal ? { signal } : {}) };
  }

  return {
    async greet(input, signal) {
      const { reply } = await backend.greet(input, await callOptions(signal));
      return reply;
    },
    async readiness() {
      try {
        const { status } = await health.check({ service: '' }, { timeoutMs: READINESS_TIMEOUT_MS });
        if (status === HealthCheckResponse_ServingStatus.SERVING) return { ready: true };
        return {
          ready: false,
          reason: `its grpc.health.v1 check answered ${HealthCheckResponse_ServingStatus[status] ?? status}`,
        };
      } catch (error) {
        return {
          ready: false,
          reason: `its grpc.health.v1 check failed: ${ConnectError.from(error).message}`,
        };
      }
    },
    close() {
      manager.abort();
    },
  };
}

type SessionManager = NonNullable<GrpcTransportOptions['sessionManager']>;

/**
 * connect-es #1768: after a GOAWAY on an idle connection the manager destroys the session with
 * an error that Node emits only once the socket has closed; if a new request made the manager
 * move on meanwhile, nobody listens and the error crashes the process. Every session that
 * carries a request gets a listener of its own, so a late error is dropped (the manager has
 * already replaced the connection). Seen in test/reliability-faults.test.ts.
 */
function withClosedSessionsHandled(manager: Http2SessionManager): SessionManager {
  const handled = new WeakSet<Http2Session>();
  const ignore = () => {};
  return {
    get authority() {
      return manager.authority;
    },
    async request(method, path, headers, options) {
      const stream = await manager.request(method, path, headers, options);
      const { session } = stream;
      if (session && !handled.has(session)) {
        handled.add(session);
        session.on('error', ignore);
      }
      return stream;
    },
    notifyResponseByteRead: (stream) => manager.notifyResponseByteRead(stream),
  };
}
