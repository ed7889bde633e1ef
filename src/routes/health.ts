import type { FastifyPluginAsync } from 'fastify';
import type { RouteDeps } from './route-deps.js';

export type HealthDeps = RouteDeps & { isDraining: () => boolean };

/** Probes: untraced, and out of the OpenAPI document (it documents `routes` only). */
export const healthRoutes: FastifyPluginAsync<HealthDeps> = async (
  app,
  { backend, isDraining },
) => {
  app.get('/healthz', async (_request, reply) => {
    if (isDraining()) return reply.code(503).send({ status: 'draining' });
    return { status: 'ok' };
  });
  app.get('/readyz', async (_request, reply) => {
    if (isDraining()) return reply.code(503).send({ status: 'draining' });
    if (!(await backend.isServing())) {
      return reply.code(503).header('retry-after', '1').send({ status: 'backend unavailable' });
    }
    return { status: 'ready' };
  });
};

/** Answered even when the api sheds load: a refused liveness probe would restart a busy instance. */
export const PROBE_PATHS = ['/healthz', '/readyz'];

export const UNTRACED_PATHS = [...PROBE_PATHS, '/docs', '/favicon.ico'];
