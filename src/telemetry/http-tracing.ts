import { createServer, IncomingMessage, type RequestListener, type Server } from 'node:http';
import { type Attributes, context, type Meter, type TextMapGetter } from '@opentelemetry/api';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_URL_PATH,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
  METRIC_HTTP_SERVER_REQUEST_DURATION,
} from '@opentelemetry/semantic-conventions';
import { isServerFaultStatus } from '../errors/status.js';
import { setServerAddress } from './server-address.js';
import type { HttpRequestLog, ServerSpan, ServerSpans } from './server-span.js';

const headerGetter: TextMapGetter<IncomingMessage> = {
  keys: (request) => Object.keys(request.headers),
  get: (request, key) => request.headers[key],
};

const KNOWN_METHODS = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'CONNECT',
  'OPTIONS',
  'TRACE',
  'PATCH',
]);

export type HttpTracing = {
  /** A Fastify `serverFactory`: every traced request runs inside its SERVER span's context. */
  serverFactory(handler: RequestListener): Server;
  /** The request's span, or undefined for untraced paths. */
  spanOf(request: IncomingMessage): ServerSpan | undefined;
  /** Call once the route is known (Fastify onRequest). */
  setRoute(request: IncomingMessage, route: string | undefined): void;
  /**
   * Call when the response is decided, before it is written (Fastify onSend). A promise comes
   * back when the response must wait for it (see ServerSpan.end).
   */
  end(request: IncomingMessage, outcome: HttpOutcome): Promise<void> | undefined;
};

export type HttpOutcome = { statusCode: number; error?: unknown; responseSize?: number };

type Traced = { span: ServerSpan; method: string; scheme: string; route: string | undefined };

const kTraced = Symbol('traced request');

/** The request with its span on a field of its own (a WeakMap costs the GC on every request). */
class TracedRequest extends IncomingMessage {
  [kTraced]: Traced | undefined = undefined;
}

/** HTTP SERVER spans with the stable HTTP semantic conventions, named `METHOD /route/{template}`. */
export function createHttpTracing(
  serverSpans: ServerSpans,
  meter: Meter,
  untracedPaths: (path: string) => boolean,
): HttpTracing {
  const duration = meter.createHistogram(METRIC_HTTP_SERVER_REQUEST_DURATION, {
    unit: 's',
    description: 'Duration of HTTP server requests.',
    advice: {
      explicitBucketBoundaries: [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
      ],
    },
  });

  function start(request: IncomingMessage): Traced {
    const method = KNOWN_METHODS.has(request.method ?? '') ? (request.method as string) : '_OTHER';
    const path = (request.url ?? '/').split('?', 1)[0] ?? '/';
    const forwardedFor = firstValue(request.headers['x-forwarded-for']);
    const scheme = firstValue(request.headers['x-forwarded-proto']) === 'https' ? 'https' : 'http';
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: method,
      [ATTR_URL_SCHEME]: scheme,
      [ATTR_URL_PATH]: path,
      [ATTR_NETWORK_PROTOCOL_VERSION]: request.httpVersion,
      [ATTR_CLIENT_ADDRESS]: forwardedFor?.split(',')[0]?.trim() ?? request.socket.remoteAddress,
      [ATTR_NETWORK_PEER_ADDRESS]: request.socket.remoteAddress,
    };
    setServerAddress(attributes, request.headers.host);
    const userAgent = request.headers['user-agent'];
    if (userAgent) attributes[ATTR_USER_AGENT_ORIGINAL] = userAgent;
    const span = serverSpans.start(method, request, headerGetter, attributes);
    return { span, method, scheme, route: undefined };
  }

  function end(request: IncomingMessage, outcome: HttpOutcome): Promise<void> | undefined {
    const entry = tracedOf(request);
    if (!entry) return undefined;
    const { statusCode } = outcome;
    const fault = isServerFaultStatus(statusCode);
    // The stable HTTP conventions: a response that was sent is typed by its status code.
    const type = fault ? String(statusCode) : undefined;
    const metricAttributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: entry.method,
      [ATTR_HTTP_RESPONSE_STATUS_CODE]: statusCode,
      [ATTR_URL_SCHEME]: entry.scheme,
    };
    if (entry.route) metricAttributes[ATTR_HTTP_ROUTE] = entry.route;
    if (type) metricAttributes[ATTR_ERROR_TYPE] = type;
    const httpRequest: HttpRequestLog = {
      requestMethod: request.method ?? '',
      requestUrl: request.url ?? '',
      status: statusCode,
      protocol: `HTTP/${request.httpVersion}`,
    };
    if (outcome.responseSize !== undefined) httpRequest.responseSize = String(outcome.responseSize);
    const userAgent = request.headers['user-agent'];
    if (userAgent) httpRequest.userAgent = userAgent;
    if (request.socket.remoteAddress) httpRequest.remoteIp = request.socket.remoteAddress;
    return entry.span.end({
      fault,
      errorType: type,
      exception: outcome.error,
      attributes: { [ATTR_HTTP_RESPONSE_STATUS_CODE]: statusCode },
      metric: { histogram: duration, attributes: metricAttributes },
      httpRequest,
    });
  }

  return {
    serverFactory(handler) {
      // Node 24 keeps the context across what Fastify does next: its body parser resumes in the
      // request's async scope, and the response's events are scheduled from inside it, so the
      // request and response need no binding (test/telemetry-traces, test/request-hooks).
      return createServer<typeof TracedRequest>(
        { IncomingMessage: TracedRequest },
        (request, response) => {
          if (untracedPaths(request.url ?? '/')) {
            handler(request, response);
            return;
          }
          const entry = start(request);
          request[kTraced] = entry;
          // Aborted or otherwise unanswered requests still end their span.
          response.once('close', () => {
            void end(request, {
              statusCode: response.writableFinished ? response.statusCode : 499,
            });
          });
          context.with(entry.span.context, handler, undefined, request, response);
        },
      );
    },
    spanOf: (request) => tracedOf(request)?.span,
    setRoute(request, route) {
      const entry = tracedOf(request);
      if (!entry || !route) return;
      entry.route = route;
      entry.span.span.updateName(`${entry.method} ${route}`);
      entry.span.span.setAttribute(ATTR_HTTP_ROUTE, route);
    },
    end,
  };
}

function tracedOf(request: IncomingMessage): Traced | undefined {
  return request instanceof TracedRequest ? request[kTraced] : undefined;
}

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
