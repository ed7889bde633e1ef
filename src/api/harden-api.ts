import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import fastifyUnderPressure from '@fastify/under-pressure';
import type { FastifyInstance } from 'fastify';
import helmet from 'helmet';
import type { Config } from '../config.js';

import { PROBE_PATHS } from '../routes/index.js';
import { overloadedError, refusal, sendProblem, writeProblemAndClose } from './error-handler.js';

/** The api's HTTP server limits and load shedding; see docs/reliability.md. */
type ApiLimits = Pick<
  Config,
  | 'HTTP_HEADERS_TIMEOUT_MS'
  | 'HTTP_REQUEST_TIMEOUT_MS'
  | 'OVERLOAD_MAX_EVENT_LOOP_DELAY_MS'
  | 'OVERLOAD_SAMPLE_INTERVAL_MS'
>;

/** Idle time of a kept-alive connection: longer than common load balancers' (60 s). */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/**
 * What the public edge needs against hostile or excessive traffic: server timeouts, security
 * headers, a problem body for what Node answers by itself, and load shedding. Register it after
 * the tracing hook (refused requests keep their span name) and before the routes.
 */
export async function hardenApi(app: FastifyInstance, limits: ApiLimits): Promise<void> {
  configureServer(app.server, limits, app.initialConfig.bodyLimit ?? Number.POSITIVE_INFINITY);
  // Computed once: they do not depend on the request. Given to Fastify's reply rather than set on
  // Node's response, so Node writes all headers in one pass (docs/benchmarks.md).
  const securityHeaders = headersSetBy(
    helmet({
      // Responses are JSON: nothing in them may load, run, frame or submit anything. The /docs
      // page replaces this with swagger-ui's own policy (its `staticCSP` option).
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'none'"],
          baseUri: ["'none'"],
          formAction: ["'none'"],
          frameAncestors: ["'none'"],
        },
      },
      frameguard: { action: 'deny' },
    }),
  );
  app.addHook('onRequest', (_request, reply, done) => {
    reply.headers(securityHeaders);
    done();
  });
  app.addHook('onRequest', (request, _reply, done) => {
    // RFC 9112 §3.2. Node's own check is off (configureServer): it answers with an empty body.
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      return done(refusal(400, 'An HTTP/1.1 request needs a Host header'));
    }
    // Node keeps the first of several and drops the others: which host was meant is unclear.
    if (hostLines(request.raw.rawHeaders) > 1) {
      return done(refusal(400, 'A request must have one Host header, not several'));
    }
    // Node answers 100-continue itself (configureServer) and hands on any other expectation.
    const expectation = request.headers.expect;
    if (expectation !== undefined && expectation.toLowerCase() !== '100-continue') {
      return done(refusal(417, 'Only "Expect: 100-continue" is supported.'));
    }
    // Node decodes the chunking of `gzip, chunked` and hands on the compressed bytes as the body.
    // Refused as a content-encoding is (415), not as RFC 9112's 501: the caller's to change.
    const coding = request.headers['transfer-encoding'];
    if (coding !== undefined && coding.trim().toLowerCase() !== 'chunked') {
      return done(
        refusal(
          415,
          'Compressed bodies are not accepted: send the body with Content-Length, or with Transfer-Encoding: chunked alone.',
          { 'accept-encoding': 'identity' },
        ),
      );
    }
    done();
  });
  await app.register(fastifyUnderPressure, {
    maxEventLoopDelay: limits.OVERLOAD_MAX_EVENT_LOOP_DELAY_MS,
    sampleInterval: limits.OVERLOAD_SAMPLE_INTERVAL_MS,
    pressureHandler(request, reply) {
      // Returning without sending lets the request through.
      if (PROBE_PATHS.includes(request.routeOptions.url ?? '')) return;
      sendProblem(overloadedError(), request, reply);
    },
  });
}

/** How many Host header lines a request has (Node's raw list: name, value, name, value...). */
function hostLines(rawHeaders: string[]): number {
  let count = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host') count++;
  }
  return count;
}

type Middleware = (request: IncomingMessage, response: ServerResponse, next: () => void) => void;

/** The headers a middleware that only sets headers (helmet's) sets on every response. */
function headersSetBy(middleware: Middleware): Record<string, string> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: string) {
      headers[name.toLowerCase()] = value;
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  let finished = false;
  middleware({} as IncomingMessage, recorder as unknown as ServerResponse, () => {
    finished = true;
  });
  if (!finished) throw new Error('the security headers middleware did not finish synchronously');
  return headers;
}

/** Fastify applies its timeout options only to servers it creates; ours comes from serverFactory. */
function configureServer(server: Server, limits: ApiLimits, bodyLimit: number): void {
  server.headersTimeout = limits.HTTP_HEADERS_TIMEOUT_MS;
  server.requestTimeout = limits.HTTP_REQUEST_TIMEOUT_MS;
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Two createServer options that Node reads from the instance; @types/node does not declare them.
  const options = server as Server & {
    connectionsCheckingInterval: number;
    requireHostHeader: boolean;
  };
  // How often Node enforces the two timeouts above: 30 s by default, too coarse for a 10 s limit.
  options.connectionsCheckingInterval = Math.min(
    1_000,
    Math.ceil(limits.HTTP_HEADERS_TIMEOUT_MS / 4),
  );
  options.requireHostHeader = false;
  server.on('connect', (_request: IncomingMessage, socket: Duplex) =>
    writeProblemAndClose(socket, 400, 'CONNECT is not supported: this server is not a proxy.'),
  );
  // Answered 417 by the hook in hardenApi, so it is traced and logged like any other request.
  server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) =>
    server.emit('request', request, response),
  );
  // The point of 100-continue is a refusal before the body is sent (RFC 9110 §10.1.1): a body
  // declared over the limit gets no "100 Continue", and Fastify refuses it (413) from the header.
  server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    if (!(Number(request.headers['content-length']) > bodyLimit)) response.writeContinue();
    server.emit('request', request, response);
  });
}
