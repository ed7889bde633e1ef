import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type HTTPMethods,
} from 'fastify';
import type { Config } from '../config.js';
import { echoed } from '../errors/caller-text.js';
import { healthRoutes, routes, UNTRACED_PATHS } from '../routes/index.js';
import type { RouteDeps } from '../routes/route-deps.js';
import { createHttpTracing } from '../telemetry/http-tracing.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { createApiDocs } from './docs.js';
import { createClientErrorHandler, noRouteError, refusal, sendProblem } from './error-handler.js';
import { sharedFastifyOptions } from './fastify-options.js';
import { hardenApi } from './harden-api.js';
import { parseJsonBody } from './json-body-parser.js';
import { type RequestHook, runRequestHooks } from './request-hooks.js';
import { createRouteTemplates } from './route-templates.js';

/** Largest JSON body accepted; larger ones get 413. */
export const BODY_LIMIT_BYTES = 64 * 1024;

export type ApiDeps = {
  telemetry: Telemetry;
  /** What every route plugin gets as its options; add your own in src/routes/route-deps.ts. */
  routeDeps: RouteDeps;
  /** Run at the start of every traced request, inside its span; see README "Telemetry". */
  requestHooks?: readonly RequestHook[];
};

export type Api = {
  app: FastifyInstance;
  /** Stop answering probes as ready and ask clients to close kept-alive connections. */
  startDraining(): void;
};

/**
 * The public role: REST on Fastify, not yet listening. `config` gives its limits and load
 * shedding (HTTP_*_TIMEOUT_MS, OVERLOAD_*) and TRUSTED_PROXY_HOPS.
 */
export async function buildApi(config: Config, deps: ApiDeps): Promise<Api> {
  const { telemetry, routeDeps, requestHooks = [] } = deps;
  const tracing = createHttpTracing(telemetry.serverSpans, telemetry.meter, {
    untracedPaths: (url) =>
      UNTRACED_PATHS.some(
        (path) => url === path || url.startsWith(`${path}/`) || url.startsWith(`${path}?`),
      ),
    trustedProxyHops: config.TRUSTED_PROXY_HOPS,
  });
  let draining = false;
  const fastifyOptions = sharedFastifyOptions(telemetry.logger as FastifyBaseLogger);
  const routeTemplates = createRouteTemplates(fastifyOptions.routerOptions);

  const app = Fastify({
    ...fastifyOptions,
    serverFactory: tracing.serverFactory,
    bodyLimit: BODY_LIMIT_BYTES,
    return503OnClosing: false,
    forceCloseConnections: false,
    clientErrorHandler: createClientErrorHandler(telemetry.logger as FastifyBaseLogger),
    // A URL that cannot be decoded (`/greet%zz`) is rejected before routing: problem body too.
    frameworkErrors: (error, request, reply) => sendProblem(error, request, reply),
  });
  // Before any route: every template, so that a 405 is named by its route.
  app.addHook('onRoute', (route) => routeTemplates.add(route));
  // UTF-8 JSON only: any other type is 415 (text/plain too, not a confusing 400).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJsonBody);

  app.addHook('onRequest', (request, reply, done) => {
    // Also here, not only in onSend: the /docs handler answers on its own and skips onSend.
    if (draining) reply.header('connection', 'close');
    tracing.setRoute(request.raw, request.routeOptions.url);
    if (tracing.spanOf(request.raw)) runRequestHooks(requestHooks, request);
    done();
  });
  const errors = new WeakMap<FastifyRequest, Error>();
  app.addHook('onError', async (request, _reply, error) => {
    errors.set(request, error);
  });
  /**
   * Checked as the response leaves, not only as the request comes in: otherwise a request that
   * began before the drain leaves its connection open, and the server cannot close until the
   * drain is cut.
   */
  const send = (
    reply: FastifyReply,
    payload: unknown,
    done: (error: null, payload: unknown) => void,
  ) => {
    if (draining) reply.header('connection', 'close');
    done(null, payload);
  };
  app.addHook('onSend', (request, reply, payload, done) => {
    const flushing = tracing.end(request.raw, {
      statusCode: reply.statusCode,
      error: errors.get(request),
      // A HEAD answer's body is not sent: Node drops it.
      ...(typeof payload === 'string' && request.method !== 'HEAD'
        ? { responseSize: Buffer.byteLength(payload) }
        : {}),
    });
    if (!flushing) return send(reply, payload, done);
    flushing.then(() => send(reply, payload, done), done);
  });
  app.setErrorHandler((error, request, reply) =>
    sendProblem(error instanceof Error ? error : new Error(String(error)), request, reply),
  );
  const answerUnrouted = (request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?', 1)[0] ?? '/';
    const allowed = allowedMethods(app, path);
    if (allowed.length === 0) return sendProblem(noRouteError(request), request, reply);
    // The path has a route, for other methods: the span and metrics name it (`PUT /greet`).
    tracing.setRoute(request.raw, routeTemplates.find(allowed[0] as string, path));
    reply.header('allow', allowed.join(', '));
    const message = `${echoed(path)} does not accept ${request.method}; it accepts ${allowed.join(', ')}`;
    return sendProblem(refusal(405, message), request, reply);
  };
  app.setNotFoundHandler(answerUnrouted);

  // After the tracing hook, so refused requests still get their span named; before the routes.
  await hardenApi(app, config);
  // After every onRequest hook (a fork's authentication among them), before the body is
  // parsed: a request no route takes is told so, not what its body lacks. A plugin with a
  // not-found handler of its own (its `request.server`) keeps its 404s.
  app.addHook('preParsing', (request, reply, payload, done) => {
    if (request.is404 && request.server === app) answerUnrouted(request, reply);
    else done(null, payload);
  });

  const docs = createApiDocs(telemetry.logger as FastifyBaseLogger, routeDeps);
  app.get('/openapi.json', () => docs.document());
  const serveDocs = async (request: FastifyRequest, reply: FastifyReply) => {
    const serve = await docs.uiHandler();
    // Headers set by this app's hooks (`connection: close` while draining) would be lost.
    for (const [name, value] of Object.entries(reply.getHeaders())) {
      if (value !== undefined) reply.raw.setHeader(name, value);
    }
    reply.hijack();
    serve(request.raw, reply.raw);
  };
  app.get('/docs', serveDocs);
  app.get('/docs/*', serveDocs);

  await app.register(healthRoutes, { ...routeDeps, isDraining: () => draining });
  for (const route of routes) await app.register(route, routeDeps);

  return {
    app,
    startDraining() {
      draining = true;
    },
  };
}

/** The methods that have a route for `path`: a 404 for those is really a 405. */
function allowedMethods(app: FastifyInstance, path: string): string[] {
  return app.supportedMethods.filter((method) => {
    try {
      return app.findRoute({ method: method as HTTPMethods, url: path }) !== null;
    } catch {
      return false;
    }
  });
}
