import type { Http2Session } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { type GrpcTransportOptions, Http2SessionManager } from '@connectrpc/connect-node';
import type { BackendTarget } from '../config.js';
import { BackendService } from '../gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../gen/grpc/health/v1/health_pb.js';
import { type IdTokenCredentials, isCredentialsError } from '../identity/id-token-credentials.js';
import { createClientTracingInterceptor, withAttempt } from '../telemetry/rpc-tracing.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { createGrpcUnaryTransport } from './grpc-unary-transport.js';

/** The original service's policy: only UNAVAILABLE is retried, with full-jitter backoff. */
export const RETRY_POLICY = Object.freeze({ initialBackoffMs: 100, maxBackoffMs: 10_000 });

const READINESS_TIMEOUT_MS = 1_000;
/** A retry is not started with less of the deadline left than this. */
const MIN_ATTEMPT_MS = 50;

export type GreetInput = { name: string; withError: boolean };

export type BackendClient = {
  greet(input: GreetInput, signal?: AbortSignal): Promise<string>;
  /** Whether the backend reports SERVING on grpc.health.v1. Never throws. */
  isServing(): Promise<boolean>;
  close(): void;
};

export type BackendClientDeps = {
  telemetry: Pick<Telemetry, 'tracer' | 'meter'>;
  /** Credentials for every call (the ID token on https targets). */
  credentials?: IdTokenCredentials;
};

/** Created once per process: one HTTP/2 session to the backend, reused by every call. */
export function createBackendClient(target: BackendTarget, deps: BackendClientDeps): BackendClient {
  const manager = new Http2SessionManager(target.url, {
    // Google's front end closes idle connections; a ping keeps ours honest between bursts.
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
  const baseUrl = target.url.toString();
  const backend = createClient(
    BackendService,
    createGrpcUnaryTransport({ baseUrl, sessionManager, interceptors: [tracing] }),
  );
  const health = createClient(Health, createGrpcUnaryTransport({ baseUrl, sessionManager }));
  const { credentials } = deps;
  // Undefined without credentials: a call then awaits nothing before it starts.
  const credentialHeaders =
    credentials && (async () => ({ authorization: await credentials.authorization() }));

  return {
    async greet(input, signal) {
      const deadline = Date.now() + target.timeoutMs;
      for (let attempt = 1; ; attempt++) {
        const timeoutMs = deadline - Date.now();
        if (timeoutMs <= 0)
          throw new ConnectError('backend deadline exceeded', Code.DeadlineExceeded);
        try {
          const callHeaders = credentialHeaders ? await credentialHeaders() : undefined;
          const response = await withAttempt(attempt, () =>
            backend.greet(input, {
              timeoutMs,
              ...(callHeaders ? { headers: callHeaders } : {}),
              ...(signal ? { signal } : {}),
            }),
          );
          return response.reply;
        } catch (thrown) {
          const error = ConnectError.from(thrown);
          // Credentials failures are not the backend's: google-auth-library already retried.
          const retryable = error.code === Code.Unavailable && !isCredentialsError(error);
          if (!retryable || attempt >= target.maxAttempts) throw error;
          const backoff = Math.min(
            RETRY_POLICY.maxBackoffMs,
            RETRY_POLICY.initialBackoffMs * 2 ** (attempt - 1),
          );
          const delay = Math.random() * backoff;
          // An attempt left with a few milliseconds could only time out: report why we retried.
          if (Date.now() + delay + MIN_ATTEMPT_MS >= deadline) throw error;
          await sleep(delay, undefined, signal ? { signal } : {});
        }
      }
    },
    async isServing() {
      try {
        const callHeaders = credentialHeaders ? await credentialHeaders() : undefined;
        const { status } = await health.check(
          { service: '' },
          { timeoutMs: READINESS_TIMEOUT_MS, ...(callHeaders ? { headers: callHeaders } : {}) },
        );
        return status === HealthCheckResponse_ServingStatus.SERVING;
      } catch {
        return false;
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
