import type { Http2ServerRequest } from 'node:http2';
import { Code, ConnectError } from '@connectrpc/connect';
import { resetBeforeEnd } from './reset-error.js';

/**
 * Connect's handlers start a call's deadline with its headers but read the request body
 * without it: a caller that sent part of a body (or none) and then nothing held the stream until
 * it went away. At the deadline, a body not yet complete fails with Connect's DEADLINE_EXCEEDED
 * error; Connect's handler, reading it, answers that in the call's protocol (a gRPC or gRPC-Web
 * status, the Connect protocol's 504), and releaseUnreadRequest then resets the caller's half of
 * the stream. Destroying the request object leaves the HTTP/2 stream open for that answer.
 */
export function expireUnfinishedRequest(request: Http2ServerRequest, deadlineMs: number): void {
  const timer = setTimeout(() => failUnfinishedRequest(request, DEADLINE_EXCEEDED), deadlineMs);
  timer.unref();
  const stop = () => clearTimeout(timer);
  request.once('end', stop);
  request.once('close', stop);
}

const DEADLINE_EXCEEDED = new ConnectError('the operation timed out', Code.DeadlineExceeded);

/**
 * A client that resets its stream before the handler has read its request to the end (grpcio's
 * cancel, a proxy whose caller left): the rest of the body fails with CANCELLED, the client's
 * doing, where Connect's read would fail with "Premature close", an INTERNAL server fault.
 */
export function failRequestOnReset(request: Http2ServerRequest): void {
  request.once('aborted', () => {
    // `complete` is already true here (aborted): only the reading decides.
    if (!request.readableEnded) failRest(request, resetBeforeEnd(request.stream.rstCode));
  });
}

/** Fails the rest of a request body with `error`, for Connect's handler to answer; see above. */
export function failUnfinishedRequest(request: Http2ServerRequest, error: ConnectError): void {
  if (!request.complete) failRest(request, error);
}

function failRest(request: Http2ServerRequest, error: ConnectError): void {
  // Connect may not be reading yet (a request gate deciding): its first read then fails.
  request.on('error', ignore);
  request.destroy(error);
}

function ignore(): void {}
