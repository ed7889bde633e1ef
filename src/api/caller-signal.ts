import { Code, ConnectError } from '@connectrpc/connect';
import type { FastifyReply } from 'fastify';

/**
 * Aborts when the caller goes away before its answer was sent. Pass it to the calls a route
 * makes for the request, so that they stop with it instead of running to their deadline.
 * (Fastify's `request.signal` listens on the request stream, which Node closes once it has read
 * the body: before the handler of any request with a body runs.)
 */
export function callerSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const response = reply.raw;
  const abortIfUnanswered = () => {
    if (!response.writableFinished) {
      controller.abort(new ConnectError('the caller went away before the answer', Code.Canceled));
    }
  };
  // The caller may have left already, while the route awaited something else.
  if (response.destroyed) abortIfUnanswered();
  else response.once('close', abortIfUnanswered);
  return controller.signal;
}
