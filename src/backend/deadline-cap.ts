import type { IncomingHttpHeaders } from 'node:http2';
import { isGrpcFamily } from '../grpc/envelope.js';

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
 *
 * Returns the deadline, capped, in milliseconds from now, as the request's protocol states it
 * (`grpc-timeout` for gRPC and gRPC-Web, `connect-timeout-ms` otherwise); undefined for none or
 * a malformed one.
 */
export function capDeadline(headers: IncomingHttpHeaders, maxMs: number): number | undefined {
  let grpcMs: number | undefined;
  const grpc = headers['grpc-timeout'];
  const match = typeof grpc === 'string' ? GRPC_TIMEOUT.exec(grpc) : null;
  if (match?.[1] && match[2]) {
    grpcMs = Number(match[1]) * (UNIT_MS[match[2]] ?? 0);
    if (grpcMs > maxMs) {
      headers['grpc-timeout'] = `${maxMs}m`;
      grpcMs = maxMs;
    }
  }
  let connectMs: number | undefined;
  const connect = headers['connect-timeout-ms'];
  if (typeof connect === 'string' && CONNECT_TIMEOUT.test(connect)) {
    connectMs = Number(connect);
    if (connectMs > maxMs) {
      headers['connect-timeout-ms'] = String(maxMs);
      connectMs = maxMs;
    }
  }
  return isGrpcFamily(headers['content-type']) ? grpcMs : connectMs;
}
