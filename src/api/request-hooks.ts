import type { FastifyRequest } from 'fastify';
import { setRequestAttributes } from '../telemetry/request-attributes.js';
import { ATTR_ENDUSER_ID } from '../telemetry/semconv.js';

const MAX_USER_ID_LENGTH = 128;

/** Runs at the start of every traced request, inside its SERVER span. */
export type RequestHook = (request: FastifyRequest) => void;

/**
 * Runs users' hooks so that a throwing hook never breaks the request: it is logged (an ERROR
 * line with its stack, in the request's trace) and the hooks after it still run.
 */
export function runRequestHooks(hooks: readonly RequestHook[], request: FastifyRequest): void {
  for (const hook of hooks) {
    try {
      hook(request);
    } catch (error) {
      request.log.error({ error }, 'a request hook threw; the request goes on without it');
    }
  }
}

/**
 * An example hook: takes the caller's user id from a header and puts `enduser.id` on every
 * span of the request, in both roles. Replace the header with the id your authentication
 * verified; a header anyone can send is only good for a demo.
 */
export function enduserFromHeader(header: string) {
  return (request: FastifyRequest): void => {
    const value = request.headers[header];
    if (typeof value !== 'string' || value.length === 0 || value.length > MAX_USER_ID_LENGTH)
      return;
    if (!/^[\w.@+-]+$/.test(value)) return;
    setRequestAttributes({ [ATTR_ENDUSER_ID]: value }, { propagate: true });
  };
}
