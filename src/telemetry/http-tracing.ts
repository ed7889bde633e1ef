import { createServer, IncomingMessage, type RequestListener, type Server } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { type Attributes, context, type Meter, type TextMapGetter } from '@opentelemetry/api';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
  HTTP_REQUEST_METHOD_VALUE_CONNECT,
  HTTP_REQUEST_METHOD_VALUE_DELETE,
  HTTP_REQUEST_METHOD_VALUE_GET,
  HTTP_REQUEST_METHOD_VALUE_HEAD,
  HTTP_REQUEST_METHOD_VALUE_OPTIONS,
  HTTP_REQUEST_METHOD_VALUE_OTHER,
  HTTP_REQUEST_METHOD_VALUE_PATCH,
  HTTP_REQUEST_METHOD_VALUE_POST,
  HTTP_REQUEST_METHOD_VALUE_PUT,
  HTTP_REQUEST_METHOD_VALUE_TRACE,
  METRIC_HTTP_SERVER_REQUEST_DURATION,
} from '@opentelemetry/semantic-conventions';
import { isServerFaultStatus } from '../errors/status.js';
import { firstHeaderValue } from './propagation/header-value.js';
import {
  DURATION_BUCKETS_SECONDS,
  HTTP_REQUEST_METHOD_VALUE_QUERY,
  URL_QUERY_REDACTED_KEYS,
} from './semconv.js';
import { setServerAddress } from './server-address.js';
import type { HttpRequestLog, ServerSpan, ServerSpans } from './server-span.js';

const headerGetter: TextMapGetter<IncomingMessage> = {
  keys: (request) => Object.keys(request.headers),
  get: (request, key) => request.headers[key],
};

/** The conventions' known methods, matched case-sensitively: any other is `_OTHER`. */
const KNOWN_METHODS: ReadonlySet<string> = new Set([
  HTTP_REQUEST_METHOD_VALUE_CONNECT,
  HTTP_REQUEST_METHOD_VALUE_DELETE,
  HTTP_REQUEST_METHOD_VALUE_GET,
  HTTP_REQUEST_METHOD_VALUE_HEAD,
  HTTP_REQUEST_METHOD_VALUE_OPTIONS,
  HTTP_REQUEST_METHOD_VALUE_PATCH,
  HTTP_REQUEST_METHOD_VALUE_POST,
  HTTP_REQUEST_METHOD_VALUE_PUT,
  HTTP_REQUEST_METHOD_VALUE_QUERY,
  HTTP_REQUEST_METHOD_VALUE_TRACE,
]);

/** Span attributes of a request that ended before any response was sent. */
const NOT_ANSWERED: Attributes = Object.freeze({});

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

type Traced = {
  span: ServerSpan;
  /** `client.address` and the access line's `remoteIp`: see `clientAddress`. */
  client: string | undefined;
  /** What the answer's problem details said, for the access line (see `noteProblem`). */
  problem: string | undefined;
  /** The server fault behind the answer, when the outcome does not carry it. */
  fault: Error | undefined;
  /** `http.request.method`: a known method or `_OTHER`. */
  method: string;
  /** The span name's method part: `HTTP` for `_OTHER`, as the conventions say. */
  nameMethod: string;
  scheme: string;
  route: string | undefined;
  /** The URL for the access line, with the same values redacted as in `url.query`. */
  loggedUrl: string;
  ended: boolean;
  /** The status Node's parser answered with, writing to the socket itself (see `noteParserAnswer`). */
  parserStatus: number | undefined;
};

const kTraced = Symbol('traced request');
/** The traced request a connection is serving, for answers written past the response. */
const kInFlight = Symbol('traced request in flight');

type ServingSocket = Socket & { [kInFlight]?: TracedRequest | undefined };

/** The request with its span on a field of its own (a WeakMap costs the GC on every request). */
class TracedRequest extends IncomingMessage {
  [kTraced]: Traced | undefined = undefined;
}

/** HTTP SERVER spans with the stable HTTP semantic conventions, named `METHOD /route/{template}`. */
export function createHttpTracing(
  serverSpans: ServerSpans,
  meter: Meter,
  options: {
    untracedPaths: (path: string) => boolean;
    /** Proxies in front that append to `X-Forwarded-For`: see `clientAddress`. */
    trustedProxyHops: number;
  },
): HttpTracing {
  const { untracedPaths, trustedProxyHops } = options;
  const duration = meter.createHistogram(METRIC_HTTP_SERVER_REQUEST_DURATION, {
    unit: 's',
    description: 'Duration of HTTP server requests.',
    advice: { explicitBucketBoundaries: [...DURATION_BUCKETS_SECONDS] },
  });

  function start(request: IncomingMessage): Traced {
    const original = request.method ?? '';
    const known = KNOWN_METHODS.has(original);
    const method = known ? original : HTTP_REQUEST_METHOD_VALUE_OTHER;
    const url = request.url ?? '/';
    const queryAt = url.indexOf('?');
    const client = clientAddress(
      request.headers['x-forwarded-for'],
      request.socket.remoteAddress,
      trustedProxyHops,
    );
    // The caller's scheme, as a proxy in front says (Cloud Run's front end: `https`); without
    // one (TRUSTED_PROXY_HOPS=0), the header is the caller's own word, and the socket is http.
    const scheme =
      trustedProxyHops > 0 && firstHeaderValue(request.headers['x-forwarded-proto']) === 'https'
        ? 'https'
        : 'http';
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: method,
      [ATTR_URL_SCHEME]: scheme,
      [ATTR_URL_PATH]: queryAt === -1 ? url : url.slice(0, queryAt),
      [ATTR_NETWORK_PROTOCOL_VERSION]: request.httpVersion,
      [ATTR_CLIENT_ADDRESS]: client,
      [ATTR_NETWORK_PEER_ADDRESS]: request.socket.remoteAddress,
      [ATTR_NETWORK_PEER_PORT]: request.socket.remotePort,
    };
    if (!known) attributes[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = original;
    let loggedUrl = url;
    if (queryAt !== -1 && queryAt < url.length - 1) {
      const query = redactQuery(url.slice(queryAt + 1));
      attributes[ATTR_URL_QUERY] = query;
      loggedUrl = `${url.slice(0, queryAt)}?${query}`;
    }
    // Cloud Run's front end sends `Host` without a port: the port the caller reached, by scheme.
    setServerAddress(attributes, request.headers.host, scheme === 'https' ? 443 : 80);
    const userAgent = request.headers['user-agent'];
    if (userAgent) attributes[ATTR_USER_AGENT_ORIGINAL] = userAgent;
    const nameMethod = known ? method : 'HTTP';
    const span = serverSpans.start(nameMethod, request, headerGetter, attributes);
    return {
      span,
      client,
      problem: undefined,
      fault: undefined,
      method,
      nameMethod,
      scheme,
      route: undefined,
      loggedUrl,
      ended: false,
      parserStatus: undefined,
    };
  }

  function end(request: IncomingMessage, outcome: HttpOutcome): Promise<void> | undefined {
    const entry = tracedOf(request);
    if (!entry) return undefined;
    // The connection can be gone before the answer is written (cut at the drain deadline):
    // nothing reaches the client, as when the client leaves.
    if (request.socket.destroyed) return finish(entry, request, { statusCode: 499 }, false);
    return finish(entry, request, outcome, true);
  }

  /**
   * `sent` is false when the connection closed before any response: the span then has no
   * `http.response.status_code` (the conventions set it only when one was sent) while the metric
   * and the access line say 499, nginx's "client closed request".
   */
  function finish(
    entry: Traced,
    request: IncomingMessage,
    outcome: HttpOutcome,
    sent: boolean,
  ): Promise<void> | undefined {
    if (entry.ended) return undefined;
    entry.ended = true;
    const { statusCode } = outcome;
    const fault = isServerFaultStatus(statusCode);
    // The stable HTTP conventions: a response that was sent is typed by its status code.
    const type = fault ? String(statusCode) : undefined;
    const metricAttributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: entry.method,
      [ATTR_HTTP_RESPONSE_STATUS_CODE]: statusCode,
      [ATTR_URL_SCHEME]: entry.scheme,
      [ATTR_NETWORK_PROTOCOL_VERSION]: request.httpVersion,
    };
    if (entry.route) metricAttributes[ATTR_HTTP_ROUTE] = entry.route;
    if (type) metricAttributes[ATTR_ERROR_TYPE] = type;
    const httpRequest: HttpRequestLog = {
      requestMethod: request.method ?? '',
      requestUrl: entry.loggedUrl,
      status: statusCode,
      protocol: `HTTP/${request.httpVersion}`,
    };
    if (outcome.responseSize !== undefined) httpRequest.responseSize = String(outcome.responseSize);
    const userAgent = request.headers['user-agent'];
    if (userAgent) httpRequest.userAgent = userAgent;
    if (entry.client) httpRequest.remoteIp = entry.client;
    return entry.span.end({
      fault,
      errorType: type,
      exception: outcome.error ?? entry.fault,
      attributes: sent ? { [ATTR_HTTP_RESPONSE_STATUS_CODE]: statusCode } : NOT_ANSWERED,
      metric: { histogram: duration, attributes: metricAttributes },
      httpRequest,
      ...(entry.problem === undefined ? {} : { logFields: { problem: entry.problem } }),
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
          if (request.url?.charCodeAt(0) !== SLASH) toOriginForm(request);
          if (untracedPaths(request.url ?? '/')) {
            handler(request, response);
            return;
          }
          const entry = start(request);
          request[kTraced] = entry;
          const socket: ServingSocket = request.socket;
          socket[kInFlight] = request;
          // Aborted or otherwise unanswered requests still end their span.
          response.once('close', () => {
            if (socket[kInFlight] === request) socket[kInFlight] = undefined;
            if (entry.ended) return;
            const statusCode = response.headersSent ? response.statusCode : entry.parserStatus;
            void finish(
              entry,
              request,
              { statusCode: statusCode ?? 499 },
              statusCode !== undefined,
            );
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
      entry.span.span.updateName(`${entry.nameMethod} ${route}`);
      entry.span.span.setAttribute(ATTR_HTTP_ROUTE, route);
    },
    end,
  };
}

const SLASH = 0x2f;

/**
 * A request target in absolute form (`POST http://host/greet HTTP/1.1`), which a server must
 * accept, is given the origin form the routes, spans and logs expect, and its authority wins
 * over `Host` (RFC 9112 §3.2.2). `*` and anything unparseable stay as they are.
 */
function toOriginForm(request: IncomingMessage): void {
  const url = request.url ?? '';
  const target = URL.parse(url);
  if (!target || (target.protocol !== 'http:' && target.protocol !== 'https:')) return;
  // The path as sent, not as URL normalises it (`..` resolved, `\` read as `/`): it routes as
  // the same path in origin form would.
  const afterScheme = url.slice(target.protocol.length + 2);
  const pathAt = afterScheme.search(/[/?\\]/);
  const path = pathAt === -1 ? '' : afterScheme.slice(pathAt);
  request.url = path.startsWith('/') ? path : `/${path}`;
  // Without a Host line the request stays refused (RFC 9112 §3.2), target or not.
  if (request.headers.host !== undefined) request.headers.host = target.host;
}

function tracedOf(request: IncomingMessage): Traced | undefined {
  return request instanceof TracedRequest ? request[kTraced] : undefined;
}

/**
 * For an answer written straight to the socket when Node's parser refuses a request's body
 * (too slow: 408; a broken chunk: 400): that request ends with the status and detail, not as
 * one whose caller left.
 */
export function noteParserAnswer(socket: Socket, statusCode: number, detail: string): void {
  const request = (socket as ServingSocket)[kInFlight];
  // A request whose body was read whole is not what the parser refused: bytes after it were
  // (a pipelined request), and its own answer stands.
  if (!request || request.complete) return;
  const entry = tracedOf(request);
  if (!entry || entry.ended) return;
  entry.parserStatus = statusCode;
  entry.problem = detail;
}

/**
 * Puts the answer's problem `detail`, and the server `fault` behind a 5xx, on the request's
 * access line, which is then the one line about the request. False when the request has no
 * access line to come (an untraced path): the caller logs it itself.
 */
export function noteProblem(request: IncomingMessage, detail: string, fault?: Error): boolean {
  const entry = tracedOf(request);
  if (!entry) return false;
  // Ended: its line is written already (the caller left first: 499). The answer is moot, but a
  // server fault behind it still gets a line of its own.
  if (entry.ended) return fault === undefined;
  entry.problem = detail;
  entry.fault = fault;
  return true;
}

/**
 * The address of the client, as far as it can be trusted. Each proxy in front appends the
 * address it took the request from to `X-Forwarded-For` (entries before them are whatever the
 * caller sent), and the socket's peer is the last proxy: so the entry `hops` from the end (the
 * first entry when there are fewer, as for a request that came round the outer proxy), when it is
 * an IP address. On Cloud Run, Google's front end is the one proxy; behind an external
 * Application Load Balancer there are two. Without the header (no proxy, as locally), or with
 * `hops` 0, the socket's peer.
 */
export function clientAddress(
  forwardedFor: string | string[] | undefined,
  peer: string | undefined,
  hops = 1,
): string | undefined {
  const header = Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor;
  if (!header || hops === 0) return peer;
  let end = header.length;
  let start = header.lastIndexOf(',', end - 1) + 1;
  for (let hop = 1; hop < hops && start > 0; hop++) {
    end = start - 1;
    start = header.lastIndexOf(',', end - 1) + 1;
  }
  const entry = header.slice(start, end).trim();
  return isIP(entry) === 0 ? peer : entry;
}

/** `url.query` with the values of the keys the conventions name replaced by `REDACTED`. */
function redactQuery(query: string): string {
  const pairs = query.split('&');
  let redacted = false;
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i] as string;
    const equals = pair.indexOf('=');
    if (equals === -1) continue;
    const key = pair.slice(0, equals);
    if (!URL_QUERY_REDACTED_KEYS.has(decodedKey(key))) continue;
    pairs[i] = `${key}=REDACTED`;
    redacted = true;
  }
  return redacted ? pairs.join('&') : query;
}

/** A key as the app's query parser reads it: `si%67` is `sig`. */
function decodedKey(key: string): string {
  if (!key.includes('%')) return key;
  try {
    return decodeURIComponent(key);
  } catch {
    return key;
  }
}
