import type { IncomingHttpHeaders } from 'node:http2';

/** `grpc-timeout`: at most 8 digits and a unit (gRPC over HTTP/2). */
const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 0.001,
  n: 0.000_001,
};
/** `connect-timeout-ms`: at most 10 digits (Connect protocol). */
const CONNECT_TIMEOUT = /^\d{1,10}$/;

/**
 * Shortens a caller's deadline to `maxMs`, as Envoy's `max_grpc_timeout` does: the call's signal
 * aborts at the cap, so a handler that watches it ends with DEADLINE_EXCEEDED there (as in
 * Connect, a handler that ignores its signal is not cut). Connect's own `maxTimeoutMs` refuses
 * such a call with INVALID_ARGUMENT instead, which would fail every call of a client whose
 * deadline is merely generous. Malformed values are left for Connect to refuse; no deadline
 * stays none.
 */
export function capDeadline(headers: IncomingHttpHeaders, maxMs: number): void {
  const grpc = headers['grpc-timeout'];
  const match = typeof grpc === 'string' ? GRPC_TIMEOUT.exec(grpc) : null;
  if (match?.[1] && match[2] && Number(match[1]) * (UNIT_MS[match[2]] ?? 0) > maxMs) {
    headers['grpc-timeout'] = `${maxMs}m`;
  }
  const connect = headers['connect-timeout-ms'];
  if (typeof connect === 'string' && CONNECT_TIMEOUT.test(connect) && Number(connect) > maxMs) {
    headers['connect-timeout-ms'] = String(maxMs);
  }
}
