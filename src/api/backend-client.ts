import { setTimeout as sleep } from 'node:timers/promises';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import type { BackendTarget } from '../config.js';
import { BackendService } from '../gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../gen/grpc/health/v1/health_pb.js';
import { type IdTokenCredentials, isCredentialsError } from '../identity/id-token-credentials.js';
import { createClientTracingInterceptor, withAttempt } from '../telemetry/rpc-tracing.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';

/** The original service's policy: only UNAVAILABLE is retried, with full-jitter backoff. */
export const RETRY_POLICY = Object.freeze({ initialBackoffMs: 100, maxBackoffMs: 10_000 });

const READINESS_TIMEOUT_MS = 1_000;

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
  const sessionManager = new Http2SessionManager(target.url, {
    // Google's front end closes idle connections; a ping keeps ours honest between bursts.
    pingIntervalMs: 30_000,
    pingIdleConnection: false,
    idleConnectionTimeoutMs: 5 * 60_000,
  });
  const tracing = createClientTracingInterceptor(
    deps.telemetry.tracer,
    deps.telemetry.meter,
    target.url,
  );
  const baseUrl = target.url.toString();
  const backend = createClient(
    BackendService,
    createGrpcTransport({ baseUrl, sessionManager, interceptors: [tracing] }),
  );
  const health = createClient(Health, createGrpcTransport({ baseUrl, sessionManager }));
  const headers = async (): Promise<Record<string, string> | undefined> =>
    deps.credentials ? { authorization: await deps.credentials.authorization() } : undefined;

  return {
    async greet(input, signal) {
      const deadline = Date.now() + target.timeoutMs;
      for (let attempt = 1; ; attempt++) {
        const timeoutMs = deadline - Date.now();
        if (timeoutMs <= 0)
          throw new ConnectError('backend deadline exceeded', Code.DeadlineExceeded);
        try {
          const callHeaders = await headers();
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
          if (Date.now() + delay >= deadline) throw error;
          await sleep(delay, undefined, signal ? { signal } : {});
        }
      }
    },
    async isServing() {
      try {
        const callHeaders = await headers();
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
      sessionManager.abort();
    },
  };
}
