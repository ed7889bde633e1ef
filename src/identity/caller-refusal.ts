import { Code, type ConnectError } from '@connectrpc/connect';

/**
 * Marks a refusal of the caller itself, as opposed to a handler refusing a request with the same
 * codes: the caller's ID token missing, invalid or not allowed (our token check), or Cloud Run's
 * front end answering HTTP 401 or 403. The api answers the first as its own failure (a
 * misconfigured service account), the second as the caller's.
 */
const CALLER_REFUSED = 'x-caller-refused';

/** `error`, marked as a refusal of the caller by `by`; sent in the trailers. */
export function markCallerRefusal(error: ConnectError, by: 'id-token' | 'front-end'): ConnectError {
  error.metadata.set(CALLER_REFUSED, by);
  return error;
}

export function isCallerRefusal(error: ConnectError): boolean {
  return (
    (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied) &&
    error.metadata.has(CALLER_REFUSED)
  );
}

/**
 * Whether the caller's token itself was refused: missing, invalid, expired or signed by a key the
 * checker does not know (UNAUTHENTICATED from our token check, a front end's HTTP 401). Another
 * token may pass; a caller refused PERMISSION_DENIED would be refused with any token.
 */
export function isTokenRefusal(error: ConnectError): boolean {
  return error.code === Code.Unauthenticated && error.metadata.has(CALLER_REFUSED);
}
