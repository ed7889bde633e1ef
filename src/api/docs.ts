import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import packageJson from '../../package.json' with { type: 'json' };
import { lazy } from '../lazy.js';
import { routes } from '../routes/index.js';
import type { RouteDeps } from '../routes/route-deps.js';
import { noRouteError, sendProblem } from './error-handler.js';
import { sharedFastifyOptions } from './fastify-options.js';

export type ApiDocs = {
  /** The OpenAPI 3.1 document of `routes`. */
  document(): Promise<unknown>;
  /** Swagger UI and its assets: a Node request handler for the paths under /docs. */
  uiHandler(): Promise<(request: IncomingMessage, response: ServerResponse) => void>;
};

/**
 * The OpenAPI document and Swagger UI, built on first use in an instance of their own that never
 * listens. Loading @fastify/swagger-ui (and @fastify/static, glob, yaml) costs about 40 ms of
 * start-up, paid by every cold start; the docs are read by people, rarely, and can wait for it.
 */
export function createApiDocs(logger: FastifyBaseLogger, deps: RouteDeps): ApiDocs {
  const docsApp = lazy(() => buildDocsApp(logger, deps));
  return {
    async document() {
      return (await docsApp()).swagger();
    },
    async uiHandler() {
      const app = await docsApp();
      return (request, response) => app.routing(request, response);
    },
  };
}

async function buildDocsApp(logger: FastifyBaseLogger, deps: RouteDeps): Promise<FastifyInstance> {
  const [{ default: fastifySwagger }, { default: fastifySwaggerUi }] = await Promise.all([
    import('@fastify/swagger'),
    import('@fastify/swagger-ui'),
  ]);
  const app = Fastify(sharedFastifyOptions(logger));
  app.setErrorHandler((error, request, reply) =>
    sendProblem(error instanceof Error ? error : new Error(String(error)), request, reply),
  );
  app.setNotFoundHandler((request, reply) => sendProblem(noRouteError(request), request, reply));
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
    transformObject: (input) =>
      describeResponses(referencedSchemasOnly(jsonSchemaTransformObject(input))),
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', staticCSP: true });
  // Registered for their schemas only: this instance serves nothing but /docs.
  for (const route of routes) await app.register(route, deps);
  await app.ready();
  return app;
}

type OpenApiResponse = { description?: string; content?: Record<string, unknown> };
type OpenApiDocument = {
  paths?: Record<string, Record<string, { responses?: Record<string, OpenApiResponse> }>>;
};

/**
 * What zod schemas cannot say: error answers are RFC 9457 problem details
 * (`application/problem+json`), and each response is described by its status's reason phrase
 * instead of "Default Response".
 */
function describeResponses<T>(document: T): T {
  const { paths = {} } = document as OpenApiDocument;
  for (const operations of Object.values(paths)) {
    for (const { responses = {} } of Object.values(operations)) {
      for (const [status, response] of Object.entries(responses)) {
        if (response.description === 'Default Response') {
          response.description = STATUS_CODES[status] ?? response.description;
        }
        const json = response.content?.['application/json'];
        if (Number(status) >= 400 && json) response.content = { 'application/problem+json': json };
      }
    }
  }
  return document;
}

type SchemaComponents = { components?: { schemas?: Record<string, unknown> } };
const SCHEMA_REF = '#/components/schemas/';

/**
 * fastify-type-provider-zod puts every named schema in twice: `X`, what a response sends, and
 * `XInput`, what a request sends (defaulted fields optional). Keeps the ones the paths refer to,
 * and names a schema used only as input `X`, so that clients generated from the document get
 * `GreetRequest`, not `GreetRequestInput` beside an unused `GreetRequest`.
 */
function referencedSchemasOnly<T>(document: T): T {
  const schemas = (document as SchemaComponents).components?.schemas;
  if (!schemas) return document;
  const used = new Set<string>();
  const pending: unknown[] = [(document as OpenApiDocument).paths];
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    visitRefs(node, (name) => {
      if (!used.has(name) && name in schemas) {
        used.add(name);
        pending.push(schemas[name]);
      }
      return undefined;
    });
  }
  const renamed = new Map<string, string>();
  for (const name of Object.keys(schemas)) {
    const base = name.endsWith('Input') ? name.slice(0, -'Input'.length) : undefined;
    if (!used.has(name)) delete schemas[name];
    else if (base && base in schemas && !used.has(base)) renamed.set(name, base);
  }
  for (const [name, base] of renamed) {
    schemas[base] = schemas[name];
    delete schemas[name];
  }
  if (renamed.size > 0) visitRefs(document, (name) => renamed.get(name));
  return document;
}

/** Calls `visit` with the schema name of every `$ref` in `node`; a name it returns replaces it. */
function visitRefs(node: unknown, visit: (name: string) => string | undefined): void {
  if (Array.isArray(node)) {
    for (const item of node) visitRefs(item, visit);
    return;
  }
  if (typeof node !== 'object' || node === null) return;
  const object = node as Record<string, unknown>;
  const ref = object.$ref;
  if (typeof ref === 'string' && ref.startsWith(SCHEMA_REF)) {
    const replacement = visit(ref.slice(SCHEMA_REF.length));
    if (replacement) object.$ref = `${SCHEMA_REF}${replacement}`;
  }
  for (const value of Object.values(object)) visitRefs(value, visit);
}
