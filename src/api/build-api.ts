import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
  LogController,
} from 'fastify';
import {
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
} from 'fastify-type-provider-zod';
import packageJson from '../../package.json' with { type: 'json' };
import { healthRoutes, routes, UNTRACED_PATHS } from '../routes/index.js';
import { createHttpTracing } from '../telemetry/http-tracing.js';
import {
  logHookError,
  type RequestHook,
  runRequestHooks,
} from '../telemetry/request-attributes.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import type { BackendClient } from './backend-client.js';
import { sendProblem } from './error-handler.js';
import { enduserFromHeader } from './request-hooks.js';

/** Largest JSON body accepted; larger ones get 413. */
export const BODY_LIMIT_BYTES = 64 * 1024;

export type ApiDeps = {
  telemetry: Telemetry;
  backend: BackendClient;
  /** Run at the start of every traced request, inside its span; see README "Telemetry". */
  requestHooks?: readonly RequestHook<FastifyRequest>[];
};

export type Api = {
  app: FastifyInstance;
  /** Stop answering probes as ready and ask clients to close kept-alive connections. */
  startDraining(): void;
};

/** The public role: REST on Fastify, not yet listening. */
export async function buildApi(deps: ApiDeps): Promise<Api> {
  const { telemetry, backend, requestHooks = [enduserFromHeader('x-user-id')] } = deps;
  const tracing = createHttpTracing(telemetry.serverSpans, telemetry.meter, (url) =>
    UNTRACED_PATHS.some(
      (path) => url === path || url.startsWith(`${path}/`) || url.startsWith(`${path}?`),
    ),
  );
  let draining = false;

  const app = Fastify({
    loggerInstance: telemetry.logger as FastifyBaseLogger,
    // One access line per request comes from the server span instead (with its trace ids).
    logController: new LogController({ disableRequestLogging: true }),
    serverFactory: tracing.serverFactory,
    bodyLimit: BODY_LIMIT_BYTES,
    return503OnClosing: false,
    forceCloseConnections: false,
    requestTimeout: 30_000,
    keepAliveTimeout: 65_000,
    routerOptions: { maxParamLength: 200 },
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.addHook('onRequest', async (request, reply) => {
    if (draining) reply.header('connection', 'close');
    tracing.setRoute(request.raw, request.routeOptions.url);
    if (tracing.spanOf(request.raw)) runRequestHooks(requestHooks, request, logHookError);
  });
  const errors = new WeakMap<FastifyRequest, Error>();
  app.addHook('onError', async (request, _reply, error) => {
    errors.set(request, error);
  });
  app.addHook('onSend', async (request, reply, payload) => {
    await tracing.end(request.raw, {
      statusCode: reply.statusCode,
      error: errors.get(request),
      ...(typeof payload === 'string' ? { responseSize: Buffer.byteLength(payload) } : {}),
    });
    return payload;
  });
  app.setErrorHandler((error, request, reply) =>
    sendProblem(error instanceof Error ? error : new Error(String(error)), request, reply),
  );
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      Object.assign(new Error(`No route ${request.method} ${request.url.split('?', 1)[0]}`), {
        statusCode: 404,
      }),
      request,
      reply,
    ),
  );

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Greeter API',
        description:
          'The public REST role. Every call is traced end to end into the private gRPC backend.',
        version: packageJson.version,
      },
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  await app.register(healthRoutes, { backend, isDraining: () => draining });
  for (const route of routes) await app.register(route, { backend });

  return {
    app,
    startDraining() {
      draining = true;
    },
  };
}
