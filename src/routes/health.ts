import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { sendProblemBody } from '../api/error-handler.js';
import { problem } from '../errors/problem-details.js';
import type { RouteDeps } from './route-deps.js';

export type HealthDeps = RouteDeps & { isDraining: () => boolean };

const DRAINING = 'The api is shutting down: send requests to another instance.';
const NOT_READY =
  "The backend does not answer its health check as serving. The reason is in the api's log.";

/** Probes: untraced, and out of the OpenAPI document (it documents `routes` only). */
export const healthRoutes: FastifyPluginAsync<HealthDeps> = async (
  app,
  { backend, isDraining },
) => {
  /**
   * Probes come every few seconds: the log gets a line when readiness changes (or its reason
   * does), not one per probe.
   */
  let lastFailure: string | undefined;
  app.get('/healthz', async (request, reply) => {
    if (isDraining()) return unavailable(request, reply, DRAINING);
    return { status: 'ok' };
  });
  app.get('/readyz', async (request, reply) => {
    if (isDraining()) return unavailable(request, reply, DRAINING);
    const readiness = await backend.readiness();
    if (!readiness.ready) {
      if (readiness.reason !== lastFailure) {
        lastFailure = readiness.reason;
        request.log.warn(`not ready: the backend is not serving: ${readiness.reason}`);
      }
      return unavailable(request, reply, NOT_READY);
    }
    if (lastFailure !== undefined) {
      lastFailure = undefined;
      request.log.info('ready again: the backend answers its health check as serving');
    }
    return { status: 'ready' };
  });
};

function unavailable(request: FastifyRequest, reply: FastifyReply, detail: string) {
  return sendProblemBody(request, reply, problem(503, detail));
}

/** Answered even when the api sheds load: a refused liveness probe would restart a busy instance. */
export const PROBE_PATHS = ['/healthz', '/readyz'];

export const UNTRACED_PATHS = [...PROBE_PATHS, '/docs', '/favicon.ico'];
