import { setTimeout as sleep } from 'node:timers/promises';
import type { DescMethod } from '@bufbuild/protobuf';
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { parseTimeout } from '@connectrpc/connect/protocol-grpc';
import { grpcTimeout } from '../grpc/timeout.js';
import { isCredentialsError } from '../identity/id-token-credentials.js';
import { withAttempt } from '../telemetry/rpc-tracing.js';

/** gRPC's retry policy, as the original service configured it: UNAVAILABLE only. */
export type RetryPolicy = {
  /** 1 means no retry. */
  maxAttempts: number;
  /** The first backoff's ceiling; it doubles with each attempt, up to maxBackoffMs. */
  initialBackoffMs: number;
  maxBackoffMs: number;
};

/** A retry is not started with less of the deadline left than this. */
const MIN_ATTEMPT_MS = 50;

/** `MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN`: what a method without the option has. */
const IDEMPOTENCY_UNKNOWN = 0;

/**
 * Whether the proto says a method may run twice: `option idempotency_level = IDEMPOTENT` (or
 * `NO_SIDE_EFFECTS`). A call that failed with UNAVAILABLE may still have reached the server, so
 * only these are retried.
 */
function isSafeToRepeat(method: DescMethod): boolean {
  return method.idempotency !== IDEMPOTENCY_UNKNOWN;
}

/**
 * Retries unary calls that fail with UNAVAILABLE, for methods safe to repeat, with exponential
 * backoff and full jitter, all within the call's one deadline (its `grpc-timeout` is set to what
 * is left for each attempt). Each attempt is a call of its own to the interceptors after this
 * one: its own CLIENT span, numbered in `rpc.attempt`. Credentials failures are not retried:
 * the token source has already been asked again.
 */
export function createRetryInterceptor(policy: RetryPolicy): Interceptor {
  return (next) => async (req) => {
    if (req.stream || policy.maxAttempts < 2 || !isSafeToRepeat(req.method)) return next(req);
    const deadline = deadlineOf(req.header.get('grpc-timeout'));
    for (let attempt = 1; ; attempt++) {
      try {
        return await withAttempt(attempt, () => next(req));
      } catch (thrown) {
        const error = ConnectError.from(thrown);
        const retryable = error.code === Code.Unavailable && !isCredentialsError(error);
        if (!retryable || attempt >= policy.maxAttempts || req.signal.aborted) throw thrown;
        const backoff = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (attempt - 1));
        const delay = Math.random() * backoff;
        // An attempt left with a few milliseconds could only time out: report why we retried.
        if (deadline !== undefined && Date.now() + delay + MIN_ATTEMPT_MS >= deadline) throw thrown;
        await sleep(delay, undefined, { signal: req.signal });
        if (deadline !== undefined)
          req.header.set('grpc-timeout', grpcTimeout(deadline - Date.now()));
      }
    }
  };
}

/** The call's deadline from its `grpc-timeout`, as a Date.now() time. */
function deadlineOf(timeout: string | null): number | undefined {
  const { timeoutMs } = parseTimeout(timeout, Number.POSITIVE_INFINITY);
  return timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
}
