import { Code, ConnectError } from '@connectrpc/connect';

type CodeFacts = { grpc: string; connect: string; httpStatus: number };

/**
 * The one table of our error vocabulary: each Connect/gRPC code with its gRPC name, its
 * Connect-protocol name and the HTTP status Connect maps it to (protocol-connect/http-status.ts).
 */
const CODES: Record<Code, CodeFacts> = {
  [Code.Canceled]: { grpc: 'CANCELLED', connect: 'canceled', httpStatus: 499 },
  [Code.Unknown]: { grpc: 'UNKNOWN', connect: 'unknown', httpStatus: 500 },
  [Code.InvalidArgument]: {
    grpc: 'INVALID_ARGUMENT',
    connect: 'invalid_argument',
    httpStatus: 400,
  },
  [Code.DeadlineExceeded]: {
    grpc: 'DEADLINE_EXCEEDED',
    connect: 'deadline_exceeded',
    httpStatus: 504,
  },
  [Code.NotFound]: { grpc: 'NOT_FOUND', connect: 'not_found', httpStatus: 404 },
  [Code.AlreadyExists]: { grpc: 'ALREADY_EXISTS', connect: 'already_exists', httpStatus: 409 },
  [Code.PermissionDenied]: {
    grpc: 'PERMISSION_DENIED',
    connect: 'permission_denied',
    httpStatus: 403,
  },
  [Code.ResourceExhausted]: {
    grpc: 'RESOURCE_EXHAUSTED',
    connect: 'resource_exhausted',
    httpStatus: 429,
  },
  [Code.FailedPrecondition]: {
    grpc: 'FAILED_PRECONDITION',
    connect: 'failed_precondition',
    httpStatus: 400,
  },
  [Code.Aborted]: { grpc: 'ABORTED', connect: 'aborted', httpStatus: 409 },
  [Code.OutOfRange]: { grpc: 'OUT_OF_RANGE', connect: 'out_of_range', httpStatus: 400 },
  [Code.Unimplemented]: { grpc: 'UNIMPLEMENTED', connect: 'unimplemented', httpStatus: 501 },
  [Code.Internal]: { grpc: 'INTERNAL', connect: 'internal', httpStatus: 500 },
  [Code.Unavailable]: { grpc: 'UNAVAILABLE', connect: 'unavailable', httpStatus: 503 },
  [Code.DataLoss]: { grpc: 'DATA_LOSS', connect: 'data_loss', httpStatus: 500 },
  [Code.Unauthenticated]: { grpc: 'UNAUTHENTICATED', connect: 'unauthenticated', httpStatus: 401 },
};

/** gRPC's canonical name, e.g. `DEADLINE_EXCEEDED`; `OK` for success (undefined). */
export function grpcCodeName(code: Code | undefined): string {
  return code === undefined ? 'OK' : CODES[code].grpc;
}

/** The Connect protocol's name, e.g. `deadline_exceeded`; `ok` for success (undefined). */
export function connectCodeName(code: Code | undefined): string {
  return code === undefined ? 'ok' : CODES[code].connect;
}

export function codeToHttpStatus(code: Code): number {
  return CODES[code].httpStatus;
}

/** Codes that mean the server failed, as opposed to the caller asking for something wrong. */
const SERVER_FAULT_CODES: ReadonlySet<Code> = new Set([
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Unimplemented,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
]);

/** The one error rule for SERVER spans, RPC side: see README "Errors". */
export function isServerFault(code: Code | undefined): boolean {
  return code !== undefined && SERVER_FAULT_CODES.has(code);
}

/** The one error rule for SERVER spans, HTTP side. */
export function isServerFaultStatus(httpStatus: number): boolean {
  return httpStatus >= 500;
}

/**
 * What the backend aborts calls still running late in a drain with: UNAVAILABLE, which clients
 * retry. This one object, so that telemetry can tell it from a client's REFUSED_STREAM reset,
 * which Connect also maps to UNAVAILABLE.
 */
export const SERVER_SHUTTING_DOWN = new ConnectError(
  'the server is shutting down; call again',
  Code.Unavailable,
);

/**
 * Whether a call's signal aborted for the server's own reason: its deadline, or a drain's
 * notice. Not a client's reset, whatever Connect maps its code to.
 */
export function isServerStop(reason: unknown): reason is ConnectError {
  return (
    reason === SERVER_SHUTTING_DOWN ||
    (reason instanceof ConnectError && reason.code === Code.DeadlineExceeded)
  );
}
