import { constants, type Http2ServerRequest, type IncomingHttpHeaders } from 'node:http2';
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
} from '@connectrpc/connect';
import type { ConnectNodeAdapterOptions } from '@connectrpc/connect-node';
import {
  type Attributes,
  type Context,
  context,
  createContextKey,
  type Histogram,
  type Meter,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import {
  ATTR_ERROR_TYPE,
  ATTR_RPC_METHOD,
  ATTR_RPC_METHOD_ORIGINAL,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  METRIC_RPC_CLIENT_CALL_DURATION,
  METRIC_RPC_SERVER_CALL_DURATION,
  RPC_SYSTEM_NAME_VALUE_GRPC,
} from '@opentelemetry/semantic-conventions';
import { unknownMethodMessage } from '../errors/caller-text.js';
import {
  codeToHttpStatus,
  connectCodeName,
  grpcCodeName,
  isServerFault,
  isServerFaultStatus,
  isServerStop,
} from '../errors/status.js';
import { isGrpcFamily } from '../grpc/envelope.js';
import { NETWORK_PEER, type NetworkPeer, setNetworkPeer } from './network-peer.js';
import { withPropagatedAttributes } from './request-attributes.js';
import { traceClientStream, traceServerStream } from './rpc-streams.js';
import {
  DURATION_BUCKETS_SECONDS,
  RPC_METHOD_VALUE_OTHER,
  RPC_SYSTEM_NAME_VALUE_CONNECTRPC,
} from './semconv.js';
import { setServerAddress, splitUrl } from './server-address.js';
import { SERVER_CALL, type ServerCall } from './server-call.js';
import {
  type HttpRequestLog,
  recordException,
  type ServerOutcome,
  type ServerSpan,
  type ServerSpans,
} from './server-span.js';

const headersGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

const nodeHeadersGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (headers) => Object.keys(headers),
  get: (headers, key) => headers[key],
};

const headersSetter: TextMapSetter<Headers> = {
  set: (headers, key, value) => headers.set(key, value),
};

/** The RPC method name both span name and `rpc.method` use: `package.Service/Method`. */
function rpcMethod(req: { service: { typeName: string }; method: { name: string } }): string {
  return `${req.service.typeName}/${req.method.name}`;
}

function rpcSystem(contentType: string | null): string {
  return isGrpcFamily(contentType ?? undefined)
    ? RPC_SYSTEM_NAME_VALUE_GRPC
    : RPC_SYSTEM_NAME_VALUE_CONNECTRPC;
}

/**
 * SERVER spans for every RPC (Connect server interceptor). Services in `untraced` are skipped.
 * A streaming call ends with its stream, which also runs inside the span's context.
 */
export function createServerTracingInterceptor(
  serverSpans: ServerSpans,
  meter: Meter,
  untraced: ReadonlySet<string> = new Set(),
): Interceptor {
  const duration = serverCallDuration(meter);
  return (next) => async (req) => {
    if (untraced.has(req.service.typeName)) return next(req);
    const call = req.contextValues.get(SERVER_CALL);
    if (call) {
      // Recorded already, as a call that ended before its interceptors (recordUninterceptedCalls).
      if (call.claimed) return next(req);
      call.claimed = true;
    }
    const method = rpcMethod(req);
    const system = rpcSystem(req.header.get('content-type'));
    const { authority, path } = splitUrl(req.url);
    const attributes: Attributes = { [ATTR_RPC_SYSTEM_NAME]: system, [ATTR_RPC_METHOD]: method };
    setServerAddress(attributes, authority, schemePort(req.header.get('x-forwarded-proto')));
    const peer = req.contextValues.get(NETWORK_PEER);
    setNetworkPeer(attributes, peer);
    const serverSpan = serverSpans.start(
      method,
      req.header,
      headersGetter,
      attributes,
      call?.arrivedAt,
    );
    const finish: Finish = (error, exception) => {
      const code = error?.code;
      const access = accessLog(
        req.requestMethod,
        path,
        clientLeft(code, req.signal) ? CLIENT_CLOSED : httpStatus(system, req.stream, code),
        req.header.get('user-agent'),
        peer,
      );
      return serverSpan.end(rpcOutcome(duration, system, method, code, access, exception));
    };
    return context.with(serverSpan.context, async () => {
      try {
        const response = await next(req);
        if (response.stream) {
          const end = {
            done: () => finish(),
            failed: (thrown: unknown) => finishFailed(finish, thrown, req.signal),
            abandoned: () => {
              const error = abandonedError(req.signal);
              void finish(error, error);
            },
          };
          return {
            ...response,
            message: traceServerStream(response.message, serverSpan.context, end),
          };
        }
        await finish();
        return response;
      } catch (thrown) {
        throw await finishFailed(finish, thrown, req.signal);
      }
    });
  };
}

type Finish = (error?: ConnectError, exception?: unknown) => Promise<void> | undefined;

/** Ends a call whose handler threw `thrown`; returns what the client is sent. */
async function finishFailed(
  finish: Finish,
  thrown: unknown,
  signal: AbortSignal,
): Promise<ConnectError> {
  const error = servedError(thrown, signal);
  // A handler's own failure is recorded as itself, though the client is told INTERNAL.
  await finish(error, error.cause === thrown ? thrown : error);
  return error;
}

/**
 * What the client is sent when a handler throws `thrown`, so that the span, the metric and the
 * access line say the same as the wire: an abort (a handler that awaited something with its
 * signal, e.g. `setTimeout(ms, v, { signal })`, or threw the signal's reason) as why the signal
 * aborted (see `abortOutcome`); a ConnectError as it is; anything else as Connect sends it,
 * INTERNAL.
 */
function servedError(thrown: unknown, signal: AbortSignal): ConnectError {
  if (
    signal.aborted &&
    (thrown === signal.reason || (thrown instanceof Error && thrown.name === 'AbortError'))
  ) {
    return abortOutcome(signal);
  }
  if (thrown instanceof ConnectError) return wellFormed(thrown);
  return new ConnectError('internal error', Code.Internal, undefined, undefined, thrown);
}

/**
 * The error with half a surrogate pair in its message (a caller's text cut by `slice`) replaced:
 * `grpc-message` is percent-encoded, which throws on one, and Connect then never answers a
 * gRPC stream or a gRPC-Web call.
 */
function wellFormed(error: ConnectError): ConnectError {
  if (error.rawMessage.isWellFormed()) return error;
  const fixed = new ConnectError(
    error.rawMessage.toWellFormed(),
    error.code,
    error.metadata,
    undefined,
    error.cause,
  );
  fixed.details = error.details;
  return fixed;
}

/** Why Connect stopped reading a stream before its end: the client went away. */
function abandonedError(signal: AbortSignal): ConnectError {
  if (signal.aborted) return abortOutcome(signal);
  return new ConnectError('the client went away before the stream ended', Code.Canceled);
}

/**
 * A call its signal ended: the server's deadline and a drain's notice as they are; anything
 * else is the client leaving (a reset, whatever its code: Connect's clients reset with
 * INTERNAL_ERROR at their own deadline, and REFUSED_STREAM maps to UNAVAILABLE too), CANCELLED
 * and not a server fault.
 */
function abortOutcome(signal: AbortSignal): ConnectError {
  const { reason } = signal;
  if (isServerStop(reason)) return reason;
  const message = reason instanceof Error ? reason.message : 'the client cancelled the call';
  return new ConnectError(message, Code.Canceled, undefined, undefined, reason);
}

function serverCallDuration(meter: Meter): Histogram {
  return meter.createHistogram(METRIC_RPC_SERVER_CALL_DURATION, {
    unit: 's',
    description: 'Duration of RPCs served.',
    advice: { explicitBucketBoundaries: [...DURATION_BUCKETS_SECONDS] },
  });
}

type Fallback = NonNullable<ConnectNodeAdapterOptions['fallback']>;
type NodeRequest = Parameters<Fallback>[0];

/**
 * A SERVER span, duration point and access line for calls to a method the server does not have
 * (Connect's fallback runs outside the interceptors), so that a client ahead of its server is
 * seen: `rpc.method=_OTHER` with the path in `rpc.method_original`, named after the RPC system
 * (semantic conventions), and UNIMPLEMENTED, a server fault by the error rule.
 */
export function traceUnknownMethods(
  serverSpans: ServerSpans,
  meter: Meter,
  answer: Fallback,
  peerOf: (request: NodeRequest) => NetworkPeer | undefined,
): Fallback {
  const duration = serverCallDuration(meter);
  return (request, response) => {
    const system = rpcSystem(request.headers['content-type'] ?? null);
    const path = requestPath(request);
    const peer = peerOf(request);
    const serverSpan = startFromRequest(serverSpans, request, system, peer, {
      [ATTR_RPC_SYSTEM_NAME]: system,
      [ATTR_RPC_METHOD]: RPC_METHOD_VALUE_OTHER,
      [ATTR_RPC_METHOD_ORIGINAL]: path.slice(1, 257),
    });
    // gRPC answers UNIMPLEMENTED in trailers (HTTP 200), the Connect protocol with a 404.
    const status = system === RPC_SYSTEM_NAME_VALUE_GRPC ? 200 : 404;
    const access = accessLogOf(request, path, status, peer);
    const code = Code.Unimplemented;
    const error = new ConnectError(unknownMethodMessage(path), code);
    const ended = serverSpan.end(
      rpcOutcome(duration, system, RPC_METHOD_VALUE_OTHER, code, access, error),
    );
    const send = () => {
      if (!response.destroyed) context.with(serverSpan.context, () => answer(request, response));
    };
    // As for every RPC: in request export mode a sampled answer waits for its span's export.
    if (ended) void ended.then(send, send);
    else send();
  };
}

type RequestGate = (context: HandlerContext) => Promise<void>;

export type UninterceptedCalls = {
  /** Connect's adapter's `contextValues`: watches the call `values` (SERVER_CALL) describe. */
  watch(request: NodeRequest, values: ContextValues): ContextValues;
  /** Connect's `requestGate`: keeps each call's handler context, then runs `gate`. */
  requestGate(gate?: RequestGate): RequestGate;
};

/**
 * Connect's adapter hands a unary call to its interceptors only once it has read the request,
 * and refuses some calls before they have a handler context at all (415 for a content type it
 * does not serve, 405 for a GET it does not allow). A call that ends before reaching the
 * interceptors gets its SERVER span, duration point and access line here when its stream
 * closes, or shortly after its answer: a request refused while parsing, a deadline or a drain
 * that came before the body, a client that reset the stream mid-body. Its stream and its handler
 * context's signal say why it ended.
 * Services in `untraced` are skipped, as by the interceptor; calls the gate refuses are logged
 * by the gate (token-verifier.ts), as Cloud Run's front end would refuse them.
 */
export function recordUninterceptedCalls(
  serverSpans: ServerSpans,
  meter: Meter,
  untraced: ReadonlySet<string> = new Set(),
): UninterceptedCalls {
  const duration = serverCallDuration(meter);

  /** Each call's handler context, once it has one: its signal says how the call ended. */
  const handlerContexts = new WeakMap<ServerCall, HandlerContext>();
  /** Calls whose stream closed while the gate was deciding: recorded once it lets them in. */
  const closedAtTheGate = new WeakMap<ServerCall, () => void>();
  const atTheGate = new WeakSet<ServerCall>();

  function record(request: Http2ServerRequest, path: string, call: ServerCall, peer?: NetworkPeer) {
    const method = path.slice(1);
    const system = rpcSystem(request.headers['content-type'] ?? null);
    const serverSpan = startFromRequest(
      serverSpans,
      request,
      method,
      peer,
      { [ATTR_RPC_SYSTEM_NAME]: system, [ATTR_RPC_METHOD]: method },
      call.arrivedAt,
    );
    const handler = handlerContexts.get(call);
    if (!handler) {
      // Refused before it was a call: there is no RPC status, only the HTTP answer.
      const status = request.stream.sentHeaders[':status'];
      const access = accessLogOf(request, path, Number(status ?? CLIENT_CLOSED), peer);
      void serverSpan.end(refusedOutcome(duration, system, method, access));
      return;
    }
    const { error, left } = uninterceptedOutcome(request, handler.signal);
    const stream = handler.method.methodKind !== 'unary';
    const status = left ? CLIENT_CLOSED : httpStatus(system, stream, error.code);
    const access = accessLogOf(request, path, status, peer);
    // In request export mode the answer has gone: a sampled span goes out with the next flush.
    void serverSpan.end(rpcOutcome(duration, system, method, error.code, access, error));
  }

  return {
    watch(request, values) {
      const call = values.get(SERVER_CALL);
      const path = requestPath(request);
      // HTTP/2 only: the stream says whether the client reset it, and what was answered.
      if (call && 'stream' in request && !untraced.has(path.slice(1, path.lastIndexOf('/')))) {
        const recordUnclaimed = () => {
          if (call.claimed) return;
          call.claimed = true;
          record(request, path, call, values.get(NETWORK_PEER));
        };
        // When the stream closes, or shortly after the answer is out: a stream answered before
        // its body was read (a message over the limit) stays open as long as its caller keeps
        // it. Not the request's close: the request closes when it is destroyed
        // (expire-unfinished-request.ts), before Connect has answered.
        const ended = () => {
          if (atTheGate.has(call)) closedAtTheGate.set(call, recordUnclaimed);
          else recordUnclaimed();
        };
        request.stream.once('close', ended);
        request.stream.once('finish', () => {
          if (!call.claimed) setTimeout(ended, RESET_GRACE_MS).unref();
        });
      }
      return values;
    },
    requestGate(gate) {
      return async (handlerContext) => {
        const call = handlerContext.values.get(SERVER_CALL);
        if (!call) return gate?.(handlerContext);
        handlerContexts.set(call, handlerContext);
        if (!gate) return;
        atTheGate.add(call);
        try {
          await gate(handlerContext);
        } catch (refusal) {
          call.claimed = true;
          throw refusal;
        } finally {
          atTheGate.delete(call);
        }
        closedAtTheGate.get(call)?.();
      };
    },
  };
}

/**
 * What ended a call before its interceptors. A server stop (the deadline, a drain) fails the
 * request body (expire-unfinished-request.ts) or aborts the call's signal; a reset is the
 * client's doing, even after a truncated body that Connect then failed to parse (Node's
 * `close(code)` ends the request before resetting it), and with NO_ERROR (Node's `destroy()`)
 * when nothing was answered; anything else aborted the signal with the error Connect answered.
 */
function uninterceptedOutcome(
  request: Http2ServerRequest,
  signal: AbortSignal,
): { error: ConnectError; left: boolean } {
  const reason: unknown = signal.aborted ? signal.reason : undefined;
  const stop = [request.errored, reason].find(isServerStop);
  if (stop) return { error: stop, left: false };
  // NO_ERROR is the client's too when nothing was answered: ours follows an answer (release-unread-request.ts).
  const { rstCode, headersSent } = request.stream;
  if (rstCode !== undefined && (rstCode !== constants.NGHTTP2_NO_ERROR || !headersSent)) {
    return { error: CLIENT_RESET, left: true };
  }
  if (reason instanceof ConnectError) return { error: wellFormed(reason), left: false };
  return {
    error: new ConnectError('internal error', Code.Internal, undefined, undefined, reason),
    left: false,
  };
}

const CLIENT_RESET = new ConnectError('the client reset the stream', Code.Canceled);

/**
 * How long an answered call waits for a reset that may follow before it is recorded: Node's
 * client ends a request, then resets it (`close(code)`), and Connect may answer in between.
 */
const RESET_GRACE_MS = 100;

/** A request refused before it became a call (415, 405): its HTTP status, and no RPC status. */
function refusedOutcome(
  duration: Histogram,
  system: string,
  method: string,
  httpRequest: HttpRequestLog,
): ServerOutcome {
  const fault = isServerFaultStatus(httpRequest.status);
  const labels: Attributes = { [ATTR_RPC_SYSTEM_NAME]: system, [ATTR_RPC_METHOD]: method };
  if (fault) labels[ATTR_ERROR_TYPE] = String(httpRequest.status);
  return {
    fault,
    errorType: fault ? String(httpRequest.status) : undefined,
    attributes: labels,
    metric: { histogram: duration, attributes: labels },
    httpRequest,
  };
}

/** A SERVER span started from a request's own headers, for calls no interceptor sees. */
function startFromRequest(
  serverSpans: ServerSpans,
  request: NodeRequest,
  name: string,
  peer: NetworkPeer | undefined,
  attributes: Attributes,
  arrivedAt?: number,
): ServerSpan {
  const authority = request.headers[':authority'] ?? request.headers.host;
  if (typeof authority === 'string') {
    const proto = request.headers['x-forwarded-proto'];
    setServerAddress(attributes, authority, schemePort(typeof proto === 'string' ? proto : null));
  }
  setNetworkPeer(attributes, peer);
  return serverSpans.start(name, request.headers, nodeHeadersGetter, attributes, arrivedAt);
}

/**
 * The port an `:authority` without one implies, as the api's spans take it: 443 where a proxy in
 * front says the caller used https (Cloud Run's front end, which sends no port), else h2c's 80.
 */
function schemePort(forwardedProto: string | null): number {
  return forwardedProto === 'https' ? 443 : 80;
}

function requestPath(request: NodeRequest): string {
  return (request.url ?? '').split('?', 1)[0] ?? '';
}

function accessLogOf(
  request: NodeRequest,
  path: string,
  status: number,
  peer: NetworkPeer | undefined,
): HttpRequestLog {
  return accessLog(request.method ?? '', path, status, request.headers['user-agent'], peer);
}

/** The outcome of a served RPC: its status, the error rule, the duration's labels. */
function rpcOutcome(
  duration: Histogram,
  system: string,
  method: string,
  code: Code | undefined,
  httpRequest: HttpRequestLog,
  exception?: unknown,
): ServerOutcome {
  const status = statusName(system, code);
  const fault = isServerFault(code);
  const labels: Attributes = {
    [ATTR_RPC_SYSTEM_NAME]: system,
    [ATTR_RPC_METHOD]: method,
    [ATTR_RPC_STATUS_CODE]: status,
  };
  if (fault) labels[ATTR_ERROR_TYPE] = status;
  return {
    fault,
    errorType: fault ? status : undefined,
    exception,
    // The span gets the labels too: the system and method it started with, its status, and
    // `error.type` exactly when it is ERROR.
    attributes: labels,
    metric: { histogram: duration, attributes: labels },
    httpRequest,
    rpc: { system, method, grpcStatus: grpcCodeName(code), grpcStatusCode: code ?? 0 },
  };
}

/** The access line's `httpRequest` of an RPC, which always travels over HTTP/2 here. */
function accessLog(
  requestMethod: string,
  requestUrl: string,
  status: number,
  userAgent: string | null | undefined,
  peer: NetworkPeer | undefined,
): HttpRequestLog {
  const httpRequest: HttpRequestLog = { requestMethod, requestUrl, status, protocol: 'HTTP/2' };
  if (userAgent) httpRequest.userAgent = userAgent;
  // The socket's peer, as `network.peer.address`: Google's front end on Cloud Run.
  if (peer) httpRequest.remoteIp = peer.address;
  return httpRequest;
}

const ATTEMPT = createContextKey('rpc attempt');

/** Marks the calls made inside `fn` as attempt number `attempt` (1 = first try). */
export function withAttempt<T>(attempt: number, fn: () => T): T {
  // A call without the mark is a first attempt: most calls need no context of their own.
  if (attempt === 1) return fn();
  return context.with(context.active().setValue(ATTEMPT, attempt), fn);
}

/** Our attribute for retried calls: each attempt is its own CLIENT span. */
export const ATTR_RPC_ATTEMPT = 'rpc.attempt';

/**
 * CLIENT spans around each outgoing RPC attempt, with context and baggage injected. A
 * streaming call ends when its last message has been read, or when its signal aborts first.
 */
export function createClientTracingInterceptor(
  tracer: Tracer,
  meter: Meter,
  target: URL,
): Interceptor {
  const duration = meter.createHistogram(METRIC_RPC_CLIENT_CALL_DURATION, {
    unit: 's',
    description: 'Duration of RPCs made.',
    advice: { explicitBucketBoundaries: [...DURATION_BUCKETS_SECONDS] },
  });
  const server: Attributes = {
    // An IPv6 address without the brackets the URL needs, as the SERVER side writes it.
    [ATTR_SERVER_ADDRESS]: target.hostname.replace(/^\[(.*)\]$/, '$1'),
    [ATTR_SERVER_PORT]: Number(target.port || (target.protocol === 'https:' ? 443 : 80)),
  };
  return (next) => async (req) => {
    const method = rpcMethod(req);
    const active = context.active();
    const attempt = (active.getValue(ATTEMPT) as number | undefined) ?? 1;
    const span = tracer.startSpan(
      method,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          [ATTR_RPC_SYSTEM_NAME]: RPC_SYSTEM_NAME_VALUE_GRPC,
          [ATTR_RPC_METHOD]: method,
          ...server,
          [ATTR_RPC_ATTEMPT]: attempt,
        },
      },
      active,
    );
    const ctx: Context = withPropagatedAttributes(trace.setSpan(active, span));
    propagation.inject(ctx, req.header, headersSetter);
    const startedAt = performance.now();
    let response: Awaited<ReturnType<typeof next>>;
    try {
      response = await context.with(ctx, () => next(req));
    } catch (thrown) {
      endCall(span, duration, server, method, startedAt, ConnectError.from(thrown));
      throw thrown;
    }
    if (!response.stream) {
      endCall(span, duration, server, method, startedAt, undefined);
      return response;
    }
    const end = (error: ConnectError | undefined) =>
      endCall(span, duration, server, method, startedAt, error);
    return { ...response, message: traceClientStream(response.message, req.signal, end) };
  };
}

/** Ends a CLIENT span and records the call's duration: any failure is an error. */
function endCall(
  span: Span,
  duration: Histogram,
  server: Attributes,
  method: string,
  startedAt: number,
  error: ConnectError | undefined,
): void {
  const status = grpcCodeName(error?.code);
  if (error) {
    recordException(span, error);
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
    span.setAttribute(ATTR_ERROR_TYPE, status);
  }
  span.setAttribute(ATTR_RPC_STATUS_CODE, status);
  span.end();
  const labels: Attributes = {
    [ATTR_RPC_SYSTEM_NAME]: RPC_SYSTEM_NAME_VALUE_GRPC,
    [ATTR_RPC_METHOD]: method,
    [ATTR_RPC_STATUS_CODE]: status,
    ...server,
  };
  if (error) labels[ATTR_ERROR_TYPE] = status;
  duration.record((performance.now() - startedAt) / 1000, labels);
}

/** The access line's status for a call its client left, as the api's for a caller that left. */
const CLIENT_CLOSED = codeToHttpStatus(Code.Canceled);

/** CANCELLED because the client reset the call (see `abortOutcome`), not a handler's own. */
function clientLeft(code: Code | undefined, signal: AbortSignal): boolean {
  return code === Code.Canceled && signal.aborted && !isServerStop(signal.reason);
}

/**
 * The HTTP status the answer went out with: gRPC and gRPC-Web answer 200 and carry the code in
 * trailers, as Connect streams do in their last message; a unary Connect-protocol error is
 * sent with its code's HTTP status.
 */
function httpStatus(system: string, stream: boolean, code: Code | undefined): number {
  if (code === undefined || stream || system === RPC_SYSTEM_NAME_VALUE_GRPC) return 200;
  return codeToHttpStatus(code);
}

/** gRPC reports canonical upper-case names; the Connect protocol its lower-case strings. */
function statusName(system: string, code: Code | undefined): string {
  return system === RPC_SYSTEM_NAME_VALUE_GRPC ? grpcCodeName(code) : connectCodeName(code);
}
