import { type ClientHttp2Stream, constants, type IncomingHttpHeaders } from 'node:http2';
import {
  create,
  type DescMessage,
  isMessage,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import {
  Code,
  ConnectError,
  createContextValues,
  type Interceptor,
  type Transport,
  type UnaryRequest,
  type UnaryResponse,
} from '@connectrpc/connect';
import { validateResponse, validateTrailer } from '@connectrpc/connect/protocol-grpc';
import { createGrpcTransport, type GrpcTransportOptions } from '@connectrpc/connect-node';
import {
  ENVELOPE_HEADER_BYTES,
  frame,
  joined,
  MAX_MESSAGE_BYTES,
  messageTooLarge,
  nodeHeaders,
  singleMessage,
  webHeaders,
} from '../grpc/envelope.js';
import { grpcTimeout } from '../grpc/timeout.js';
import { markCallerRefusal } from '../identity/caller-refusal.js';
import { resetUnendedStreams } from './reset-unended-streams.js';

const USER_AGENT = 'cloud-run-observable-services';

type SessionManager = NonNullable<GrpcTransportOptions['sessionManager']>;

export type GrpcUnaryTransportOptions = {
  baseUrl: string;
  /** The one HTTP/2 session to the server, shared with other transports. */
  sessionManager: SessionManager;
  interceptors?: Interceptor[];
};

/**
 * A Connect `Transport` that makes unary calls in the gRPC protocol (binary codec) straight on
 * an HTTP/2 stream: Connect's own transport takes every call through its streaming pipeline,
 * which costs most of a call's CPU (docs/benchmarks.md). Interceptors, deadlines, cancellation
 * and the status in trailers behave as in Connect's transport; streaming calls go to it.
 *
 * Failures of the connection under a call (reset, refused stream, closed without an answer)
 * are UNAVAILABLE, as gRPC names them: the one code callers retry.
 */
export function createGrpcUnaryTransport(options: GrpcUnaryTransportOptions): Transport {
  const { sessionManager } = options;
  const readMaxBytes = MAX_MESSAGE_BYTES;
  const { origin, pathname } = new URL(options.baseUrl);
  const base = `${origin}${pathname.replace(/\/$/, '')}`;
  let streaming: Transport | undefined;

  function send(req: UnaryRequest): Promise<UnaryResponse> {
    if (!req.url.startsWith(`${origin}/`)) {
      const message = `cannot call ${req.url}: the HTTP/2 session is connected to ${origin}`;
      return Promise.reject(new ConnectError(message, Code.Internal));
    }
    const path = req.url.slice(origin.length);
    const body = frame(toBinary(req.method.input, req.message));
    const headers = nodeHeaders(req.header);
    const { signal } = req;
    if (signal.aborted) return Promise.reject(cancelled(signal));
    return new Promise((resolve, reject) => {
      // The deadline and the caller also bound connecting (and the PING of an idle session).
      let abandoned = false;
      const onAbort = () => {
        abandoned = true;
        reject(cancelled(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      sessionManager.request('POST', path, headers, {}).then(
        (stream) => {
          signal.removeEventListener('abort', onAbort);
          if (!abandoned) {
            exchange(stream, req, body).then(resolve, reject);
            return;
          }
          stream.on('error', ignore);
          if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
        },
        (reason: unknown) => {
          signal.removeEventListener('abort', onAbort);
          if (!abandoned) reject(asTransportFailure(reason));
        },
      );
    });
  }

  function exchange(
    stream: ClientHttp2Stream,
    req: UnaryRequest,
    body: Uint8Array,
  ): Promise<UnaryResponse> {
    return new Promise((resolve, reject) => {
      // First: the stream may emit an error from now on, even once the call is settled.
      stream.on('error', (error: NodeJS.ErrnoException) => {
        // A reset is reported by 'close' with its code.
        if (error.code !== 'ERR_HTTP2_STREAM_ERROR') settle(asTransportFailure(error));
      });
      const onAbort = () => settle(cancelled(req.signal));
      const chunks: Buffer[] = [];
      let received = 0;
      let status = 0;
      let responseHeaders: IncomingHttpHeaders | undefined;
      let responseTrailers: IncomingHttpHeaders | undefined;
      let settled = false;
      const settle = (error: ConnectError | undefined) => {
        if (settled) return;
        settled = true;
        req.signal.removeEventListener('abort', onAbort);
        if (error) {
          if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
          reject(error);
          return;
        }
        unaryResponse(req, status, responseHeaders ?? {}, responseTrailers ?? {}, {
          chunks,
          readMaxBytes,
        }).then(resolve, reject);
      };
      // Not aborted yet: send() hands over the stream only to a call still waiting for it.
      req.signal.addEventListener('abort', onAbort, { once: true });
      stream.on('response', (headers) => {
        status = headers[':status'] ?? 0;
        responseHeaders = headers;
      });
      stream.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        sessionManager.notifyResponseByteRead(stream);
        if (received > ENVELOPE_HEADER_BYTES + readMaxBytes)
          settle(oversized(messageTooLarge(received, readMaxBytes)));
      });
      stream.on('trailers', (trailers) => {
        responseTrailers = trailers;
      });
      stream.on('close', () => {
        if (settled) return;
        const code = stream.rstCode;
        if (code !== undefined && code !== constants.NGHTTP2_NO_ERROR) {
          settle(resetByServer(code));
        } else if (!responseHeaders) {
          settle(closedWithoutAnswer());
        } else {
          settle(undefined);
        }
      });
      stream.end(body);
    });
  }

  const call = applyInterceptors(send, options.interceptors ?? []);

  return {
    async unary(method, signal, timeoutMs, header, input, contextValues) {
      const deadlineMs = timeoutMs !== undefined && timeoutMs > 0 ? timeoutMs : undefined;
      const callSignal = linkedSignal(signal, deadlineMs);
      const requestHeader = new Headers(header);
      requestHeader.set('content-type', 'application/grpc+proto');
      if (!requestHeader.has('user-agent')) requestHeader.set('user-agent', USER_AGENT);
      if (deadlineMs !== undefined) requestHeader.set('grpc-timeout', grpcTimeout(deadlineMs));
      requestHeader.set('te', 'trailers');
      let error: ConnectError | undefined;
      try {
        return (await call({
          stream: false,
          service: method.parent,
          method,
          requestMethod: 'POST',
          url: `${base}/${method.parent.typeName}/${method.name}`,
          header: requestHeader,
          contextValues: contextValues ?? createContextValues(),
          message: normalize(method.input, input),
          signal: callSignal.signal,
        })) as UnaryResponse<never, never>;
      } catch (thrown) {
        error = callSignal.signal.aborted
          ? cancelled(callSignal.signal)
          : ConnectError.from(thrown);
        throw error;
      } finally {
        callSignal.finish(error);
      }
    },
    async stream(method, signal, timeoutMs, header, input, contextValues) {
      streaming ??= createGrpcTransport({
        baseUrl: options.baseUrl,
        sessionManager: resetUnendedStreams(sessionManager),
        readMaxBytes,
        // Innermost: the interceptors see a front end's refusal marked, as on the unary path.
        interceptors: [...(options.interceptors ?? []), markFrontEndRefusals],
      });
      try {
        const response = await streaming.stream(
          method,
          signal,
          timeoutMs,
          header,
          input,
          contextValues,
        );
        return { ...response, message: markedFailures(response.message, signal) };
      } catch (error) {
        throw markStreamFailure(error, signal);
      }
    },
  };
}

type ResponseBody = { chunks: Buffer[]; readMaxBytes: number };

/** Checks a complete response in the order Connect's gRPC transport does. */
async function unaryResponse(
  req: UnaryRequest,
  status: number,
  nodeHeader: IncomingHttpHeaders,
  nodeTrailer: IncomingHttpHeaders,
  body: ResponseBody,
): Promise<UnaryResponse> {
  const header = webHeaders(nodeHeader);
  const trailer = webHeaders(nodeTrailer);
  const { headerError } = validateGrpcResponse(status, header);
  const encoding = header.get('grpc-encoding');
  if (encoding !== null && encoding.toLowerCase() !== 'identity') {
    throw new ConnectError(`unsupported response encoding "${encoding}"`, Code.Internal, header);
  }
  let message: MessageShape<DescMessage> | undefined;
  try {
    message = await singleMessage(req.method.output, joined(body.chunks), {
      readMaxBytes: body.readMaxBytes,
      compression: null,
      direction: 'output',
    });
  } catch (error) {
    // Without compression, its one RESOURCE_EXHAUSTED is an envelope declared over the limit.
    throw error instanceof ConnectError && error.code === Code.ResourceExhausted
      ? oversized(error)
      : error;
  }
  validateTrailer(trailer, header);
  if (message === undefined) {
    if (headerError) throw headerError;
    throw new ConnectError(
      'protocol error: missing output message for unary method',
      trailer.has('grpc-status') ? Code.Unimplemented : Code.Unknown,
    );
  }
  if (headerError) {
    throw new ConnectError(
      'protocol error: received output message for unary method with error status',
      Code.Unknown,
    );
  }
  return { stream: false, service: req.service, method: req.method, header, message, trailer };
}

/**
 * Connect's check of the status and headers. Cloud Run's front end refuses a caller without an
 * ID token, or without the invoker role, with an HTTP 401 or 403 of its own: marked as such.
 */
function validateGrpcResponse(status: number, header: Headers) {
  try {
    return validateResponse(status, header);
  } catch (error) {
    if (error instanceof ConnectError && (status === 401 || status === 403)) {
      markCallerRefusal(error, 'front-end');
    }
    throw error;
  }
}

/**
 * Connect's streaming transport fails as the unary path does for a reply over the limit and an
 * abort (whose reason it drops); its errors are marked alike, so the REST edge answers them
 * alike. A front end's refusal is marked inside the interceptors (`markFrontEndRefusals`).
 */
function markStreamFailure(error: unknown, signal: AbortSignal | undefined): unknown {
  if (!(error instanceof ConnectError)) return error;
  if (error.code === Code.Canceled && error.cause === undefined && signal?.aborted) {
    return cancelled(signal);
  }
  if (
    error.code === Code.ResourceExhausted &&
    /than configured readMaxBytes/.test(error.rawMessage)
  )
    return oversized(error);
  return error;
}

/**
 * Connect's streaming transport fails a front end's HTTP 401 or 403 with "HTTP 401"/"HTTP 403"
 * as it reads the response headers: marked there, as `validateGrpcResponse` marks the unary
 * path's, so that the credentials interceptor drops a refused token on streaming calls too.
 */
const markFrontEndRefusals: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (error) {
    if (error instanceof ConnectError && /^HTTP 40[13]$/.test(error.rawMessage)) {
      markCallerRefusal(error, 'front-end');
    }
    throw error;
  }
};

async function* markedFailures<T>(
  messages: AsyncIterable<T>,
  signal: AbortSignal | undefined,
): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (error) {
    throw markStreamFailure(error, signal);
  }
}

/** Replies this transport refused for their size; see isOversizedReply. */
const oversizedReplies = new WeakSet<ConnectError>();

function oversized(error: ConnectError): ConnectError {
  oversizedReplies.add(error);
  return error;
}

/**
 * Whether `error` is this transport refusing a reply over `readMaxBytes`. It is
 * RESOURCE_EXHAUSTED, as gRPC clients report it, but unlike a RESOURCE_EXHAUSTED the backend
 * sends (its quota) or an ENHANCE_YOUR_CALM reset (slow down), waiting and retrying cannot help.
 */
export function isOversizedReply(error: unknown): boolean {
  return error instanceof ConnectError && oversizedReplies.has(error);
}

function normalize<T extends DescMessage>(schema: T, input: unknown) {
  return isMessage(input, schema) ? input : create(schema, input as never);
}

function applyInterceptors(
  send: (req: UnaryRequest) => Promise<UnaryResponse>,
  interceptors: Interceptor[],
): (req: UnaryRequest) => Promise<UnaryResponse> {
  let next = send as Parameters<Interceptor>[0];
  for (const interceptor of [...interceptors].reverse()) next = interceptor(next);
  return next as (req: UnaryRequest) => Promise<UnaryResponse>;
}

/**
 * The call's signal: aborted by the caller's signal and by the deadline, and, as in Connect's
 * transports, when the call ends: with its error, or with a shared reason on success (Connect
 * builds a new DOMException for each call there).
 */
function linkedSignal(
  signal: AbortSignal | undefined,
  deadlineMs: number | undefined,
): { signal: AbortSignal; finish(error: ConnectError | undefined): void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  const timer =
    deadlineMs === undefined
      ? undefined
      : setTimeout(
          () =>
            controller.abort(new ConnectError('the operation timed out', Code.DeadlineExceeded)),
          deadlineMs,
        );
  return {
    signal: controller.signal,
    finish(error) {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      controller.abort(error ?? CALL_COMPLETED);
    },
  };
}

const CALL_COMPLETED = new DOMException('The call has completed.', 'AbortError');

/** CANCELLED, keeping why (Connect's `ConnectError.from` drops an abort's or timeout's reason). */
function cancelled(signal: AbortSignal): ConnectError {
  const { reason } = signal;
  if (reason instanceof ConnectError || !(reason instanceof Error)) {
    return ConnectError.from(reason, Code.Canceled);
  }
  return new ConnectError(reason.message, Code.Canceled, undefined, undefined, reason);
}

function ignore(): void {}

/** Node error codes that mean the connection to the server broke under a call. */
const CONNECTION_LOST = new Set(['ECONNRESET', 'EPIPE', 'ERR_HTTP2_INVALID_STREAM']);

function asTransportFailure(reason: unknown): ConnectError {
  const error = ConnectError.from(reason);
  if (error.code === Code.Unavailable) return error;
  let cause: unknown = reason;
  for (let depth = 0; depth < 8 && cause instanceof Error; depth++) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ERR_HTTP2_ERROR') {
      // nghttp2 gave up on the session: most often the far side does not speak HTTP/2 at all.
      return new ConnectError(
        `connection to the backend failed: it did not answer in HTTP/2 (${cause.message}). Check that BACKEND_URL names the backend's own port, and that a Cloud Run backend is deployed with --use-http2`,
        Code.Unavailable,
        undefined,
        undefined,
        reason,
      );
    }
    if (code !== undefined && CONNECTION_LOST.has(code)) {
      return new ConnectError(
        `connection to the backend failed: ${code}`,
        Code.Unavailable,
        undefined,
        undefined,
        reason,
      );
    }
    cause = cause.cause;
  }
  return error;
}

function closedWithoutAnswer(): ConnectError {
  return new ConnectError(
    'connection to the backend failed: the backend closed the connection before answering',
    Code.Unavailable,
  );
}

/** RST_STREAM from the server. A refused or cancelled stream was not answered: UNAVAILABLE. */
function resetByServer(rstCode: number): ConnectError {
  const name = RESET_NAMES[rstCode] ?? `0x${rstCode.toString(16)}`;
  const code =
    rstCode === constants.NGHTTP2_REFUSED_STREAM || rstCode === constants.NGHTTP2_CANCEL
      ? Code.Unavailable
      : rstCode === constants.NGHTTP2_ENHANCE_YOUR_CALM
        ? Code.ResourceExhausted
        : Code.Internal;
  return new ConnectError(`connection to the backend failed: stream reset (${name})`, code);
}

const RESET_NAMES: Readonly<Record<number, string>> = {
  [constants.NGHTTP2_PROTOCOL_ERROR]: 'PROTOCOL_ERROR',
  [constants.NGHTTP2_INTERNAL_ERROR]: 'INTERNAL_ERROR',
  [constants.NGHTTP2_FLOW_CONTROL_ERROR]: 'FLOW_CONTROL_ERROR',
  [constants.NGHTTP2_REFUSED_STREAM]: 'REFUSED_STREAM',
  [constants.NGHTTP2_CANCEL]: 'CANCEL',
  [constants.NGHTTP2_ENHANCE_YOUR_CALM]: 'ENHANCE_YOUR_CALM',
};
