import { constants, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import {
  create,
  type DescMessage,
  type DescMethod,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  createContextValues,
  createHandlerContext,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
} from '@connectrpc/connect';
import {
  type Compression,
  compressedFlag,
  compressionNegotiate,
  invokeUnaryImplementation,
} from '@connectrpc/connect/protocol';
import { parseTimeout, setTrailerStatus } from '@connectrpc/connect/protocol-grpc';
import {
  ENVELOPE_HEADER_BYTES,
  frame,
  joined,
  messageTooLarge,
  nodeHeaders,
  singleMessage,
  webHeaders,
} from '../grpc/envelope.js';
import { resetError } from './reset-error.js';

/** Connect's default: smaller messages are not worth compressing. */
const COMPRESS_MIN_BYTES = 1024;
const PROTO_CONTENT_TYPE = 'application/grpc+proto';
/** How long a call that ended without its message waits for a reset that may follow. */
const RESET_GRACE_MS = 100;

type UnarySpec = MethodImplSpec & { kind: 'unary' };

export type GrpcUnaryFastPathOptions = {
  interceptors: Interceptor[];
  /**
   * What a call whose request could not be read goes through instead (tracing): Connect never
   * hands such a call to its interceptors, so the others never see it here either.
   */
  unreadCallInterceptors?: Interceptor[];
  requestGate?: (context: HandlerContext) => Promise<void>;
  maxTimeoutMs: number;
  readMaxBytes: number;
  acceptCompression: Compression[];
  /** Aborts every handler's signal with its reason, as Connect's option of the same name. */
  shutdownSignal?: AbortSignal;
  /** Each call's context values, as Connect's adapter option of the same name. */
  contextValues?: (request: Http2ServerRequest) => ContextValues;
  /** A call that could not be answered (Connect's adapter writes these to the console). */
  onError?: (error: unknown, method: DescMethod) => void;
};

export type GrpcUnaryFastPath = {
  /** Wraps the router the services are registered on, to learn their unary methods. */
  learn(router: ConnectRouter): ConnectRouter;
  /**
   * Serves a unary call in the gRPC protocol with the binary codec; returns false for anything
   * else (gRPC-Web, Connect, JSON, streaming, unknown paths), which Connect's adapter serves.
   */
  serve(request: Http2ServerRequest, response: Http2ServerResponse): boolean;
};

/**
 * Connect-ES serves every protocol through one async-iterable pipeline per call, which costs
 * unary gRPC calls most of their CPU (docs/benchmarks.md). This serves those calls with the
 * same building blocks (handler context, interceptors, request gate, status trailers) in a
 * straight line; what the client sees is the same, and test/grpc-unary-fast-path.test.ts
 * compares both paths byte for byte.
 */
export function createGrpcUnaryFastPath(options: GrpcUnaryFastPathOptions): GrpcUnaryFastPath {
  const methods = new Map<string, UnarySpec>();
  const shutdown = options.shutdownSignal ? { shutdownSignal: options.shutdownSignal } : {};
  const contextValues = options.contextValues ?? createContextValues;

  async function serveUnary(
    spec: UnarySpec,
    request: Http2ServerRequest,
    response: Http2ServerResponse,
  ): Promise<void> {
    const headers = request.headers;
    const timeout = parseTimeout(headerValue(headers['grpc-timeout']), options.maxTimeoutMs);
    const context = createHandlerContext({
      service: spec.method.parent,
      method: spec.method,
      protocolName: 'grpc',
      requestMethod: 'POST',
      url: `http://${request.authority}${request.url}`,
      requestHeader: webHeaders(headers),
      responseHeader: { 'content-type': PROTO_CONTENT_TYPE },
      responseTrailer: { 'grpc-status': '0' },
      contextValues: contextValues(request),
      ...(timeout.timeoutMs === undefined ? {} : { timeoutMs: timeout.timeoutMs }),
      ...shutdown,
    });
    const compression = compressionNegotiate(
      options.acceptCompression,
      headerValue(headers['grpc-encoding']),
      headerValue(headers['grpc-accept-encoding']),
      'grpc-accept-encoding',
    );
    if (compression.response)
      context.responseHeader.set('grpc-encoding', compression.response.name);
    let body: Uint8Array | undefined;
    let settled = false;
    request.once('close', () => {
      // As Connect's adapter: the reset's code says why; without one, a plain AbortError.
      if (!settled) context.abort(resetError(request.stream.rstCode));
    });
    try {
      // Its refusals end before any interceptor, as at Cloud Run's front end; it logs them.
      if (options.requestGate) await options.requestGate(context);
      let call = spec;
      let interceptors = options.interceptors;
      let input: MessageShape<DescMessage>;
      try {
        if (compression.error) throw compression.error;
        if (timeout.error) throw timeout.error;
        // The call's signal bounds the body too: its deadline, a drain's notice.
        const requestBody = await readBody(request, options.readMaxBytes, context.signal);
        const message = await singleMessage(spec.method.input, requestBody, {
          readMaxBytes: options.readMaxBytes,
          compression: compression.request,
          direction: 'input',
        });
        if (!message) {
          throw new ConnectError(
            'protocol error: missing input message for unary method',
            Code.Unimplemented,
          );
        }
        input = message;
      } catch (thrown) {
        // A request that cannot be read (its framing, encoding or deadline header, its
        // message; the caller gone, the deadline, a drain) ends as a handler failing with that
        // error would, through the tracing alone: traced, measured and logged alike.
        call = endedBy(spec, thrown);
        interceptors = options.unreadCallInterceptors ?? [];
        input = create(spec.method.input);
      }
      const output = await invokeUnaryImplementation(call, context, input, interceptors);
      body = await envelope(serialize(spec.method.output, output), compression.response);
    } catch (thrown) {
      setTrailerStatus(
        context.responseTrailer,
        thrown instanceof ConnectError
          ? thrown
          : new ConnectError('internal error', Code.Internal, undefined, undefined, thrown),
      );
    } finally {
      settled = true;
      // Connect aborts without a reason here, which builds a new DOMException for each call.
      context.abort(CALL_COMPLETED);
    }
    if (response.stream.destroyed) return;
    const trailers = checkedTrailers(context.responseTrailer);
    response.writeHead(200, nodeHeaders(context.responseHeader));
    response.addTrailers(trailers);
    if (body) response.end(body);
    else response.end();
  }

  return {
    learn(router) {
      const learning: ConnectRouter = {
        get handlers() {
          return router.handlers;
        },
        service(service, implementation, serviceOptions) {
          // Per-service options (interceptors, limits) stay with Connect's handlers.
          if (!serviceOptions) {
            const spec = createServiceImplSpec(service, implementation);
            for (const method of Object.values(spec.methods)) {
              if (method.kind === 'unary') {
                methods.set(`/${service.typeName}/${method.method.name}`, method);
              }
            }
          }
          router.service(service, implementation, serviceOptions);
          return learning;
        },
        rpc(method, implementation, rpcOptions) {
          router.rpc(method, implementation, rpcOptions);
          return learning;
        },
      };
      return learning;
    },
    serve(request, response) {
      if (request.method !== 'POST') return false;
      const contentType = request.headers['content-type'];
      if (contentType !== 'application/grpc' && contentType !== PROTO_CONTENT_TYPE) return false;
      const spec = methods.get(request.url.split('?', 1)[0] ?? '');
      if (!spec) return false;
      // Past before the body is read, so this path would fail the call where Connect's answers
      // a handler that does not wait: that one answers it, as any other call it serves.
      if (ZERO_TIMEOUT.test(headerValue(request.headers['grpc-timeout']) ?? '')) return false;
      serveUnary(spec, request, response).catch((error: unknown) => {
        // Headers Node refuses to send (an interceptor's `connection`, say): the call fails
        // on the wire instead of the process failing with an unhandled rejection.
        if (!response.stream.destroyed) response.stream.close(constants.NGHTTP2_INTERNAL_ERROR);
        options.onError?.(error, spec.method);
      });
      return true;
    },
  };
}

/** A `grpc-timeout` of zero in any unit. */
const ZERO_TIMEOUT = /^0+[HMSmun]$/;

/** The handler context's signal is aborted once the call is answered, as Connect does. */
const CALL_COMPLETED = new DOMException('The call has completed.', 'AbortError');

/**
 * The call with an implementation that fails with `error`. The tracing sees an empty request
 * message, as none was read; the SERVER span starts here, when the reading failed.
 */
function endedBy(spec: UnarySpec, error: unknown): UnarySpec {
  return {
    ...spec,
    impl() {
      throw error;
    },
  };
}

/** The stream closed before the request was read: nothing can be answered. */
function closedEarly(rstCode: number | undefined): ConnectError {
  return (
    resetError(rstCode) ??
    new ConnectError('the client closed the stream before its request was read', Code.Canceled)
  );
}

/**
 * Reads the request body, which for a unary call is one message. As in Connect's pipeline, a
 * message declared over the limit is refused as soon as its envelope header arrives, and
 * reading stops once a second message is complete (`singleMessage` then refuses it), so a
 * caller cannot make the server hold more than two messages' worth of bytes. The call's signal
 * (its deadline, a drain's notice) ends the read with its reason.
 */
function readBody(
  request: Http2ServerRequest,
  readMaxBytes: number,
  signal: AbortSignal,
): Promise<Buffer> {
  if (signal.aborted) return Promise.reject(signal.reason);
  // The stream can be gone already, e.g. reset while the request gate was checking a token.
  if (request.stream.destroyed || request.readableEnded) {
    return Promise.reject(closedEarly(request.stream.rstCode));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    /** Where the next envelope starts, once the current one's header has been read. */
    let nextEnvelope = 0;
    let envelopes = 0;
    let finished = false;
    const done = (error?: ConnectError) => {
      if (finished) return;
      finished = true;
      clearTimeout(waitingForReset);
      request.off('data', onData);
      request.off('end', onEnd);
      request.off('close', onClose);
      signal.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve(joined(chunks, received));
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      while (envelopes < 2 && received >= nextEnvelope + ENVELOPE_HEADER_BYTES) {
        const body = joined(chunks, received);
        const declared = body.readUInt32BE(nextEnvelope + 1);
        if (declared > readMaxBytes) return done(messageTooLarge(declared, readMaxBytes));
        nextEnvelope += ENVELOPE_HEADER_BYTES + declared;
        envelopes++;
      }
      if (envelopes === 2 && received >= nextEnvelope) done();
    };
    let waitingForReset: NodeJS.Timeout | undefined;
    const onEnd = () => {
      if (envelopes > 0 && received >= nextEnvelope) return done();
      // Node's clients end a stream before they reset it (the end of its writable side first),
      // so a call cancelled before its message was sent whole arrives as one that ended without
      // it: the reset that follows, if one does, makes it CANCELLED (onClose), not a refusal.
      waitingForReset = setTimeout(done, RESET_GRACE_MS);
    };
    const onClose = () => done(closedEarly(request.stream.rstCode));
    request.on('data', onData);
    request.once('end', onEnd);
    request.once('close', onClose);
    const onAbort = () => done(signal.reason);
    signal.addEventListener('abort', onAbort);
  });
}

async function envelope(message: Uint8Array, compression: Compression | null): Promise<Buffer> {
  if (compression && message.byteLength >= COMPRESS_MIN_BYTES) {
    return frame(await compression.compress(message), compressedFlag);
  }
  return frame(message);
}

function headerValue(value: string | string[] | undefined): string | null {
  return value === undefined ? null : Array.isArray(value) ? value.join(', ') : value;
}

/**
 * Fields HTTP/2 forbids (RFC 9113, 8.2.2), as Node checks them. Node throws on a trailer among
 * them from an event handler, where it would crash the process: they are refused first.
 */
const CONNECTION_SPECIFIC = [
  'connection',
  'http2-settings',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
];

function checkedTrailers(headers: Headers): Record<string, string> {
  for (const name of CONNECTION_SPECIFIC) {
    if (headers.has(name)) throw new Error(`HTTP/2 forbids the trailer "${name}"`);
  }
  const te = headers.get('te');
  if (te !== null && te !== 'trailers') throw new Error(`HTTP/2 forbids the trailer "te: ${te}"`);
  return nodeHeaders(headers);
}

/** `toBinary` with Connect's error for a message that cannot be encoded. */
function serialize<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
): Uint8Array {
  try {
    return toBinary(schema, message);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConnectError(`serialize binary: ${reason}`, Code.Internal);
  }
}
