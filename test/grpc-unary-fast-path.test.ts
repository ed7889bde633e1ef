import {
  connect,
  constants,
  createServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf';
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createClient,
  type HandlerContext,
  type Interceptor,
} from '@connectrpc/connect';
import {
  compressionBrotli,
  compressionGzip,
  connectNodeAdapter,
  createGrpcTransport,
  Http2SessionManager,
} from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcUnaryFastPath } from '../src/backend/grpc-unary-fast-path.js';
import {
  BackendService,
  GreetRequestSchema,
  GreetResponseSchema,
} from '../src/gen/backend_service/v1/backend_service_pb.js';
import {
  Health,
  HealthCheckRequestSchema,
  type HealthCheckResponse_ServingStatus,
} from '../src/gen/grpc/health/v1/health_pb.js';
import { registerBackendService } from '../src/rpc/backend-service.js';
import { generateGreeterStubs, grpcioGreet } from './helpers/grpcio.js';

const GREET_PATH = '/backend_service.v1.BackendService/Greet';
/** Per call: every answer here takes milliseconds. */
const CALL_DEADLINE_MS = 3_000;
const READ_MAX_BYTES = 1024;

const echoInterceptor: Interceptor = (next) => async (request) => {
  const response = await next(request);
  const echo = request.header.get('x-echo');
  if (echo !== null && !response.stream) {
    response.header.set('x-echo-header', echo);
    response.trailer.set('x-echo-trailer', echo);
  }
  return response;
};

/**
 * A fork's interceptor that refuses a request of its own accord. Connect never hands it a call
 * whose request could not be read, so neither may the fast path (with an empty message).
 */
const refuseEmptyName: Interceptor = (next) => async (request) => {
  if (!request.stream && (request.message as { name?: unknown }).name === '') {
    throw new ConnectError('an interceptor refused an empty name', Code.InvalidArgument);
  }
  return next(request);
};

async function denyGate(context: HandlerContext): Promise<void> {
  if (context.requestHeader.has('x-deny')) throw new ConnectError('denied', Code.Unauthenticated);
}

const options = {
  acceptCompression: [compressionGzip, compressionBrotli],
  readMaxBytes: READ_MAX_BYTES,
  maxTimeoutMs: 60_000,
  interceptors: [echoInterceptor, refuseEmptyName],
  requestGate: denyGate,
};

type Listener = (request: Http2ServerRequest, response: Http2ServerResponse) => void;
type Running = { port: number; url: string; close(): Promise<void> };

async function listen(listener: Listener): Promise<Running> {
  const server = createServer(listener);
  const sessions = new Set<Http2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const session of sessions) session.close();
      }),
  };
}

type RawRequest = {
  body: Uint8Array;
  contentType?: string;
  path?: string;
  headers?: Record<string, string>;
  /** End the request only once the answer's trailers arrived: the answer must not wait for it. */
  leaveOpen?: true;
};

/** Everything a client can observe of one answer; headers in wire order, `date` left out. */
type Answer = {
  status: string;
  headers: [string, string][];
  body: string;
  trailers: [string, string][];
  rstCode: number;
  streamError: string | null;
};

function entries(headers: IncomingHttpHeaders): [string, string][] {
  return Object.entries(headers)
    .filter(([name]) => name !== 'date')
    .map(([name, value]) => [name, String(value)]);
}

/** One request on its own HTTP/2 session, the body written exactly as given. */
function rawCall(port: number, request: RawRequest): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const answer: Answer = {
      status: '',
      headers: [],
      body: '',
      trailers: [],
      rstCode: -1,
      streamError: null,
    };
    const chunks: Buffer[] = [];
    const session = connect(`http://127.0.0.1:${port}`);
    const timer = setTimeout(() => {
      session.destroy();
      answer.body = Buffer.concat(chunks).toString('hex');
      reject(
        new Error(
          `the stream to 127.0.0.1:${port} did not close within ${CALL_DEADLINE_MS} ms; received ${JSON.stringify(answer)}`,
        ),
      );
    }, CALL_DEADLINE_MS);
    session.on('error', (error) => {
      clearTimeout(timer);
      session.destroy();
      reject(error);
    });
    const stream = session.request({
      ':method': 'POST',
      ':path': request.path ?? GREET_PATH,
      'content-type': request.contentType ?? 'application/grpc',
      te: 'trailers',
      ...request.headers,
    });
    stream.on('response', (received) => {
      answer.status = String(received[':status']);
      answer.headers = entries(received);
    });
    stream.on('trailers', (received) => {
      answer.trailers = entries(received);
      if (request.leaveOpen && !stream.writableEnded) stream.end();
    });
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', (error: NodeJS.ErrnoException) => {
      answer.streamError = error.code ?? error.message;
    });
    stream.on('close', () => {
      clearTimeout(timer);
      answer.body = Buffer.concat(chunks).toString('hex');
      answer.rstCode = stream.rstCode ?? -1;
      session.close(() => resolve(answer));
    });
    if (request.leaveOpen) stream.write(Buffer.from(request.body));
    else stream.end(Buffer.from(request.body));
  });
}

/** The gRPC status, from the trailers or from a trailers-only answer. */
function grpcStatus(answer: Answer): string | undefined {
  const find = (list: [string, string][]) => list.find(([name]) => name === 'grpc-status')?.[1];
  return find(answer.trailers) ?? find(answer.headers);
}

function grpcMessage(answer: Answer): string | undefined {
  const message = header(answer.trailers, 'grpc-message') ?? header(answer.headers, 'grpc-message');
  return message === undefined ? undefined : decodeURIComponent(message);
}

function header(list: [string, string][], name: string): string | undefined {
  return list.find(([key]) => key === name)?.[1];
}

type GreetInit = MessageInitShape<typeof GreetRequestSchema>;

function greet(init: GreetInit): Uint8Array {
  return toBinary(GreetRequestSchema, create(GreetRequestSchema, init));
}

/** One gRPC envelope: a flag byte, the declared length (big-endian), then the bytes given. */
function envelope(message: Uint8Array, flags = 0, declared = message.byteLength): Buffer {
  const framed = Buffer.alloc(5 + message.byteLength);
  framed.writeUInt8(flags, 0);
  framed.writeUInt32BE(declared, 1);
  framed.set(message, 5);
  return framed;
}

/** The reply in a successful answer's single, uncompressed envelope. */
function replyOf(answer: Answer): string {
  const body = Buffer.from(answer.body, 'hex');
  expect(body[0]).toBe(0);
  expect(body.readUInt32BE(1)).toBe(body.length - 5);
  return fromBinary(GreetResponseSchema, body.subarray(5)).reply;
}

/**
 * A valid name (at most 256 code points) whose reply message is `replyBytes` long:
 * "Hello " + name + "!!" in field 2 takes 3 bytes of tag and length.
 */
function nameForReplyBytes(replyBytes: number): string {
  const nameBytes = replyBytes - 3 - 'Hello !!'.length;
  const fourByte = nameBytes - 3 * 256;
  const name = '😀'.repeat(fourByte) + '中'.repeat(256 - fourByte);
  expect(Buffer.byteLength(name)).toBe(nameBytes);
  return name;
}

const valid = envelope(greet({ name: 'David' }));

/** Connect's Code has no member for success. */
const OK = 0;

type Case = {
  name: string;
  request: RawRequest;
  /** The grpc-status both paths must answer with. */
  code: Code | typeof OK;
  check?: (answer: Answer) => void;
};

const cases: Case[] = [
  {
    name: 'a valid Greet as application/grpc',
    request: { body: valid },
    code: OK,
    check: (answer) => {
      expect(replyOf(answer)).toBe('Hello David!!');
      expect(header(answer.headers, 'content-type')).toBe('application/grpc+proto');
    },
  },
  {
    name: 'a valid Greet as application/grpc+proto',
    request: { body: valid, contentType: 'application/grpc+proto' },
    code: OK,
    check: (answer) => expect(replyOf(answer)).toBe('Hello David!!'),
  },
  {
    name: 'a valid Greet with a query string on the path',
    request: { body: valid, path: `${GREET_PATH}?trace=1` },
    code: OK,
  },
  {
    name: 'a valid Greet with grpc-timeout 5S',
    request: { body: valid, headers: { 'grpc-timeout': '5S' } },
    code: OK,
  },
  {
    name: 'with_error=true',
    request: { body: envelope(greet({ name: 'David', withError: true })) },
    code: Code.Internal,
    check: (answer) =>
      expect(grpcMessage(answer)).toBe('greeting failed on purpose (with_error=true)'),
  },
  {
    name: 'an empty name',
    request: { body: envelope(greet({ name: '' })) },
    code: Code.InvalidArgument,
  },
  {
    name: 'garbage message bytes in a valid envelope',
    request: { body: envelope(Uint8Array.of(0xff, 0xff, 0xff)) },
    code: Code.Internal,
  },
  { name: 'an empty body', request: { body: new Uint8Array() }, code: Code.Unimplemented },
  {
    name: 'a 3-byte body',
    request: { body: Uint8Array.of(0, 0, 0) },
    code: Code.InvalidArgument,
  },
  {
    name: 'an envelope declaring 10 bytes carrying 4',
    request: { body: envelope(Uint8Array.of(1, 2, 3, 4), 0, 10) },
    code: Code.InvalidArgument,
  },
  {
    name: 'two complete envelopes',
    request: { body: Buffer.concat([valid, valid]) },
    code: Code.Unimplemented,
  },
  {
    name: 'a valid envelope followed by 2 stray bytes',
    request: { body: Buffer.concat([valid, Buffer.of(0, 0)]) },
    code: Code.InvalidArgument,
  },
  {
    name: 'an envelope declaring 5000 bytes, only its header sent',
    request: { body: envelope(new Uint8Array(), 0, 5000) },
    code: Code.ResourceExhausted,
  },
  {
    name: 'an envelope declaring 5000 bytes, all of them sent',
    request: { body: envelope(new Uint8Array(5000)) },
    code: Code.ResourceExhausted,
  },
  {
    name: 'an envelope declaring 5000 bytes, the request left open (refused on its header)',
    request: { body: envelope(new Uint8Array(), 0, 5000), leaveOpen: true },
    code: Code.ResourceExhausted,
  },
  {
    name: 'a valid envelope, then a second one, the request left open (refused, not read to the end)',
    request: { body: Buffer.concat([valid, envelope(new Uint8Array())]), leaveOpen: true },
    code: Code.Unimplemented,
  },
  {
    name: 'a valid first envelope, then one over readMaxBytes',
    request: { body: Buffer.concat([valid, envelope(new Uint8Array(), 0, 5000)]) },
    code: Code.ResourceExhausted,
  },
  {
    name: 'the compressed flag without grpc-encoding',
    request: { body: envelope(greet({ name: 'David' }), 1) },
    code: Code.Internal,
  },
  {
    name: 'the compressed flag with grpc-encoding identity',
    request: {
      body: envelope(greet({ name: 'David' }), 1),
      headers: { 'grpc-encoding': 'identity' },
    },
    code: Code.Internal,
  },
  {
    name: 'grpc-encoding gzip with a gzip-compressed message',
    request: {
      body: envelope(gzipSync(greet({ name: 'David' })), 1),
      headers: { 'grpc-encoding': 'gzip' },
    },
    code: OK,
    check: (answer) => expect(replyOf(answer)).toBe('Hello David!!'),
  },
  {
    name: 'grpc-encoding gzip with an uncompressed message',
    request: { body: valid, headers: { 'grpc-encoding': 'gzip' } },
    code: OK,
  },
  {
    name: 'grpc-encoding gzip with bytes that are not gzip',
    request: { body: envelope(Uint8Array.of(1, 2, 3, 4), 1), headers: { 'grpc-encoding': 'gzip' } },
    code: Code.InvalidArgument,
  },
  {
    name: 'a gzip message that inflates past readMaxBytes',
    request: {
      body: envelope(gzipSync(greet({ name: 'x'.repeat(5000) })), 1),
      headers: { 'grpc-encoding': 'gzip' },
    },
    code: Code.ResourceExhausted,
  },
  {
    name: 'grpc-encoding snappy',
    request: { body: valid, headers: { 'grpc-encoding': 'snappy' } },
    code: Code.Unimplemented,
    check: (answer) =>
      expect(grpcMessage(answer)).toBe(
        'unknown compression "snappy": supported encodings are gzip,br',
      ),
  },
  {
    name: 'grpc-timeout abc',
    request: { body: valid, headers: { 'grpc-timeout': 'abc' } },
    code: Code.InvalidArgument,
  },
  {
    name: 'grpc-timeout over maxTimeoutMs',
    request: { body: valid, headers: { 'grpc-timeout': '2M' } },
    code: Code.InvalidArgument,
  },
  {
    name: 'grpc-encoding snappy and grpc-timeout abc (the encoding is reported first)',
    request: { body: valid, headers: { 'grpc-encoding': 'snappy', 'grpc-timeout': 'abc' } },
    code: Code.Unimplemented,
  },
  {
    name: 'x-deny (the gate refuses before the body is read)',
    request: { body: valid, headers: { 'x-deny': '1' } },
    code: Code.Unauthenticated,
    check: (answer) => expect(grpcMessage(answer)).toBe('denied'),
  },
  {
    name: 'x-deny, the request left open (refused before the body is read)',
    request: { body: valid, headers: { 'x-deny': '1' }, leaveOpen: true },
    code: Code.Unauthenticated,
  },
  {
    name: 'x-deny with a body that is not even an envelope',
    request: { body: Uint8Array.of(7), headers: { 'x-deny': '1' } },
    code: Code.Unauthenticated,
  },
  {
    name: 'x-deny with grpc-encoding snappy (the gate goes first)',
    request: { body: valid, headers: { 'x-deny': '1', 'grpc-encoding': 'snappy' } },
    code: Code.Unauthenticated,
  },
  {
    name: 'grpc-accept-encoding gzip on a small reply',
    request: { body: valid, headers: { 'grpc-accept-encoding': 'gzip' } },
    code: OK,
    check: (answer) => {
      expect(header(answer.headers, 'grpc-encoding')).toBe('gzip');
      expect(replyOf(answer)).toBe('Hello David!!');
    },
  },
  {
    name: 'x-echo (the interceptor adds a header and a trailer)',
    request: { body: valid, headers: { 'x-echo': 'hello' } },
    code: OK,
    check: (answer) => {
      expect(header(answer.headers, 'x-echo-header')).toBe('hello');
      expect(header(answer.trailers, 'x-echo-trailer')).toBe('hello');
    },
  },
  {
    name: 'x-echo on a failing call (no echo)',
    request: { body: envelope(greet({ name: '' })), headers: { 'x-echo': 'hello' } },
    code: Code.InvalidArgument,
    check: (answer) => expect(header(answer.headers, 'x-echo-header')).toBeUndefined(),
  },
  {
    name: 'a 1023-byte reply with grpc-accept-encoding gzip (not compressed)',
    request: {
      body: envelope(greet({ name: nameForReplyBytes(1023) })),
      headers: { 'grpc-accept-encoding': 'gzip' },
    },
    code: OK,
    check: (answer) => expect(Buffer.from(answer.body, 'hex')[0]).toBe(0),
  },
  {
    name: 'a 1024-byte reply with grpc-accept-encoding gzip (compressed)',
    request: {
      body: envelope(greet({ name: nameForReplyBytes(1024) })),
      headers: { 'grpc-accept-encoding': 'gzip' },
    },
    code: OK,
    check: (answer) => expect(Buffer.from(answer.body, 'hex')[0]).toBe(1),
  },
  {
    name: 'a 1024-byte reply with grpc-accept-encoding br',
    request: {
      body: envelope(greet({ name: nameForReplyBytes(1024) })),
      headers: { 'grpc-accept-encoding': 'br' },
    },
    code: OK,
    check: (answer) => {
      expect(header(answer.headers, 'grpc-encoding')).toBe('br');
      expect(Buffer.from(answer.body, 'hex')[0]).toBe(1);
    },
  },
  {
    name: 'a 1024-byte reply without grpc-accept-encoding',
    request: { body: envelope(greet({ name: nameForReplyBytes(1024) })) },
    code: OK,
    check: (answer) => expect(replyOf(answer)).toBe(`Hello ${nameForReplyBytes(1024)}!!`),
  },
];

describe('the unary gRPC fast path answers exactly as Connect does', () => {
  let reference: Running;
  let fast: Running;
  let servedFast = 0;
  let fellBack = 0;
  const sessionManagers: Http2SessionManager[] = [];

  beforeAll(async () => {
    reference = await listen(
      connectNodeAdapter({ ...options, routes: (router) => registerBackendService(router) }),
    );
    const fastPath = createGrpcUnaryFastPath(options);
    const adapter = connectNodeAdapter({
      ...options,
      routes: (router) => registerBackendService(fastPath.learn(router)),
    });
    fast = await listen((request, response) => {
      if (fastPath.serve(request, response)) servedFast++;
      else {
        fellBack++;
        adapter(request, response);
      }
    });
  });

  afterAll(async () => {
    for (const manager of sessionManagers) manager.abort();
    await Promise.all([reference?.close(), fast?.close()]);
  });

  /** Sends the same request to both servers; returns the reference answer after comparing. */
  async function differential(request: RawRequest, path: 'fast' | 'fallback'): Promise<Answer> {
    const before = { servedFast, fellBack };
    const expected = await rawCall(reference.port, request).catch((error: Error) => {
      throw new Error(`reference: ${error.message}`);
    });
    const actual = await rawCall(fast.port, request).catch((error: Error) => {
      throw new Error(`fast path: ${error.message}`);
    });
    expect(actual).toEqual(expected);
    expect({ servedFast, fellBack }).toEqual(
      path === 'fast'
        ? { servedFast: before.servedFast + 1, fellBack: before.fellBack }
        : { servedFast: before.servedFast, fellBack: before.fellBack + 1 },
    );
    return expected;
  }

  it.each(cases)('$name', async ({ request, code, check }) => {
    const answer = await differential(request, 'fast');
    expect(answer.status).toBe('200');
    expect(grpcStatus(answer)).toBe(String(code));
    check?.(answer);
  });

  it('leaves gRPC-Web to Connect, which still answers it', async () => {
    const answer = await differential(
      { body: valid, contentType: 'application/grpc-web+proto' },
      'fallback',
    );
    expect(answer.status).toBe('200');
    const body = Buffer.from(answer.body, 'hex');
    const messageEnd = 5 + body.readUInt32BE(1);
    expect(fromBinary(GreetResponseSchema, body.subarray(5, messageEnd)).reply).toBe(
      'Hello David!!',
    );
    expect(body[messageEnd]).toBe(0x80);
    expect(body.subarray(messageEnd + 5).toString()).toContain('grpc-status: 0');
  });

  it('leaves the Connect protocol to Connect, which still answers it', async () => {
    const answer = await differential(
      {
        body: greet({ name: 'David' }),
        contentType: 'application/proto',
        headers: { 'connect-protocol-version': '1' },
      },
      'fallback',
    );
    expect(answer.status).toBe('200');
    expect(fromBinary(GreetResponseSchema, Buffer.from(answer.body, 'hex')).reply).toBe(
      'Hello David!!',
    );
  });

  it('leaves application/grpc+json to Connect', async () => {
    const answer = await differential(
      { body: valid, contentType: 'application/grpc+json' },
      'fallback',
    );
    // Connect reads the binary envelope as JSON and fails to parse it.
    expect(grpcStatus(answer)).toBe(String(Code.InvalidArgument));
  });

  it('leaves a content type with parameters to Connect', async () => {
    const answer = await differential(
      { body: valid, contentType: 'application/grpc; charset=utf-8' },
      'fallback',
    );
    expect(answer.status).toBe('415');
  });

  it('leaves a deadline of zero to Connect, which still runs a handler that does not wait', async () => {
    for (const timeout of ['0m', '0n', '00S']) {
      const answer = await differential(
        { body: valid, headers: { 'grpc-timeout': timeout } },
        'fallback',
      );
      expect(grpcStatus(answer), timeout).toBe(String(OK));
    }
  });

  it('leaves unknown methods to Connect', async () => {
    const answer = await differential(
      { body: valid, path: '/backend_service.v1.BackendService/Nope' },
      'fallback',
    );
    expect(answer.status).toBe('404');
  });

  it('gives Connect’s own gRPC client the same results', async () => {
    const results = [];
    for (const server of [reference, fast]) {
      const sessionManager = new Http2SessionManager(server.url);
      sessionManagers.push(sessionManager);
      const client = createClient(
        BackendService,
        createGrpcTransport({
          baseUrl: server.url,
          // connect-node's gRPC transport always speaks HTTP/2.
          sessionManager,
          defaultTimeoutMs: CALL_DEADLINE_MS,
          sendCompression: compressionGzip,
          acceptCompression: [compressionGzip],
          compressMinBytes: 0,
        }),
      );
      const outcome = async (request: GreetInit) => {
        const seen: Record<string, string | null> = {};
        try {
          const response = await client.greet(request, {
            headers: { 'x-echo': 'client' },
            onHeader: (h) => {
              seen.header = h.get('x-echo-header');
              seen.encoding = h.get('grpc-encoding');
            },
            onTrailer: (t) => {
              seen.trailer = t.get('x-echo-trailer');
            },
          });
          return { reply: response.reply, seen };
        } catch (thrown) {
          const error = ConnectError.from(thrown);
          return { code: error.code, message: error.rawMessage, seen };
        }
      };
      const before = { servedFast, fellBack };
      results.push({
        ok: await outcome({ name: 'Connect' }),
        long: await outcome({ name: nameForReplyBytes(1024) }),
        failed: await outcome({ name: 'Connect', withError: true }),
        invalid: await outcome({ name: ' ' }),
        servedFast: servedFast - before.servedFast,
        fellBack: fellBack - before.fellBack,
      });
    }
    const [expected, actual] = results;
    expect(actual).toEqual({ ...expected, servedFast: 4 });
    expect(expected).toMatchObject({
      ok: {
        reply: 'Hello Connect!!',
        seen: { header: 'client', trailer: 'client', encoding: 'gzip' },
      },
      failed: { code: Code.Internal },
      invalid: { code: Code.InvalidArgument },
    });
  });

  it('gives a Python grpcio client the same results', async () => {
    const stubs = await generateGreeterStubs();
    try {
      const calls = (port: number) =>
        Promise.all([
          grpcioGreet(stubs, `127.0.0.1:${port}`, 'Guido', false, CALL_DEADLINE_MS),
          grpcioGreet(stubs, `127.0.0.1:${port}`, 'Guido', true, CALL_DEADLINE_MS),
          grpcioGreet(stubs, `127.0.0.1:${port}`, ' ', false, CALL_DEADLINE_MS),
        ]);
      const before = { servedFast, fellBack };
      const [expected, actual] = await Promise.all([calls(reference.port), calls(fast.port)]);
      expect(actual).toEqual(expected);
      expect({ servedFast, fellBack }).toEqual({
        servedFast: before.servedFast + 3,
        fellBack: before.fellBack,
      });
      expect(expected).toEqual([
        { reply: 'Hello Guido!!' },
        { code: 'INTERNAL', details: 'greeting failed on purpose (with_error=true)' },
        { code: 'INVALID_ARGUMENT', details: expect.any(String) },
      ]);
    } finally {
      await stubs.remove();
    }
  });
});

describe('a unary call whose answer Node refuses to send', () => {
  it('is reset with INTERNAL_ERROR and reported, and the server goes on serving', async () => {
    const failures: string[] = [];
    // HTTP/2 forbids connection-specific fields: Node throws when the answer is written.
    const badFields: Interceptor = (next) => async (request) => {
      const response = await next(request);
      if (request.header.has('x-bad-header')) response.header.set('upgrade', 'h2c');
      const trailer = request.header.get('x-bad-trailer');
      if (trailer) response.trailer.set(trailer, trailer === 'te' ? 'gzip' : 'x');
      return response;
    };
    const fastPath = createGrpcUnaryFastPath({
      ...options,
      interceptors: [badFields],
      onError: (error, method) => failures.push(`${method.name}: ${String(error)}`),
    });
    const adapter = connectNodeAdapter({
      ...options,
      routes: (router) => registerBackendService(fastPath.learn(router)),
    });
    const server = await listen((request, response) => {
      if (!fastPath.serve(request, response)) adapter(request, response);
    });
    try {
      const cases: [Record<string, string>, string][] = [
        [{ 'x-bad-header': '1' }, 'upgrade'],
        [{ 'x-bad-trailer': 'te' }, 'te'],
        [{ 'x-bad-trailer': 'http2-settings' }, 'http2-settings'],
        [{ 'x-bad-trailer': 'connection' }, 'connection'],
      ];
      for (const [headers, field] of cases) {
        const refused = await rawCall(server.port, { body: valid, headers });
        expect(refused.rstCode).toBe(2); // NGHTTP2_INTERNAL_ERROR
        expect(refused.status).toBe('');
        expect(failures.pop()).toMatch(new RegExp(`^Greet: .*${field}`, 'i'));
      }
      const next = await rawCall(server.port, { body: valid });
      expect(replyOf(next)).toBe('Hello David!!');
    } finally {
      await server.close();
    }
  });
});

describe('a unary reply that cannot be encoded', () => {
  it('is INTERNAL with Connect’s "serialize binary" message on both paths', async () => {
    // An int32 field given a fraction: what a forked handler with a bug could return.
    const register = (router: ConnectRouter) =>
      router.service(Health, {
        check: () => ({ status: 1.5 as HealthCheckResponse_ServingStatus }),
        async *watch() {},
      });
    const fastPath = createGrpcUnaryFastPath(options);
    const withFastPath = connectNodeAdapter({
      ...options,
      routes: (router) => register(fastPath.learn(router)),
    });
    const fast = await listen((request, response) => {
      if (!fastPath.serve(request, response)) withFastPath(request, response);
    });
    const reference = await listen(connectNodeAdapter({ ...options, routes: register }));
    const request = {
      path: '/grpc.health.v1.Health/Check',
      body: envelope(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema))),
    };
    try {
      const fromConnect = await rawCall(reference.port, request);
      const fromFast = await rawCall(fast.port, request);
      expect(fromFast).toEqual(fromConnect);
      expect(grpcStatus(fromFast)).toBe(String(Code.Internal));
      expect(grpcMessage(fromFast)).toMatch(/^serialize binary: .*invalid int32: 1\.5/);
    } finally {
      await Promise.all([fast.close(), reference.close()]);
    }
  });
});

describe('a unary call reset while the request gate is still deciding', () => {
  it('lets go of the request: no listener is left on it', async () => {
    const requests: Http2ServerRequest[] = [];
    let gateEntered: () => void = () => {};
    const entered = new Promise<void>((resolve) => {
      gateEntered = resolve;
    });
    const fastPath = createGrpcUnaryFastPath({
      ...options,
      requestGate: async () => {
        gateEntered();
        await new Promise((resolve) => setTimeout(resolve, 200));
      },
    });
    const adapter = connectNodeAdapter({
      ...options,
      routes: (router) => registerBackendService(fastPath.learn(router)),
    });
    const server = await listen((request, response) => {
      requests.push(request);
      if (!fastPath.serve(request, response)) adapter(request, response);
    });
    const session = connect(server.url);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': GREET_PATH,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.on('error', () => {});
      stream.end(valid);
      await entered;
      stream.close(constants.NGHTTP2_CANCEL);
      const deadline = Date.now() + 2_000;
      const request = requests[0];
      expect(request).toBeDefined();
      while (Date.now() < deadline && request?.listenerCount('data') !== 0) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      // The gate ends after 200 ms; the body is then never read, and nothing waits on it.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(request?.listenerCount('data')).toBe(0);
      expect(request?.listenerCount('end')).toBe(0);
    } finally {
      session.destroy();
      await server.close();
    }
  });
});

describe('a unary call the client resets while its handler runs', () => {
  it('aborts the handler’s signal with the reason Connect’s adapter gives each RST_STREAM code', async () => {
    /** Per call (`x-call`): called when its handler runs, then how its signal was aborted. */
    const entered = new Map<string, () => void>();
    const reasons = new Map<string, Record<string, unknown>>();
    const register = (router: ConnectRouter) =>
      router.service(BackendService, {
        async greet(_request, context) {
          const id = context.requestHeader.get('x-call') ?? '';
          entered.get(id)?.();
          await new Promise((resolve) => context.signal.addEventListener('abort', resolve));
          reasons.set(id, reasonOf(context.signal.reason));
          return { reply: 'too late' };
        },
      });
    const fastPath = createGrpcUnaryFastPath(options);
    const withFastPath = connectNodeAdapter({
      ...options,
      routes: (router) => register(fastPath.learn(router)),
    });
    const fast = await listen((request, response) => {
      if (!fastPath.serve(request, response)) withFastPath(request, response);
    });
    const reference = await listen(connectNodeAdapter({ ...options, routes: register }));

    /** Starts a Greet, resets it with `rstCode` once its handler runs; how it was aborted. */
    async function resetCall(server: Running, id: string, rstCode: number) {
      const running = new Promise<void>((resolve) => entered.set(id, resolve));
      const session = connect(server.url);
      session.on('error', () => {});
      try {
        const stream = session.request({
          ':method': 'POST',
          ':path': GREET_PATH,
          'content-type': 'application/grpc',
          te: 'trailers',
          'x-call': id,
        });
        stream.on('error', () => {});
        stream.end(valid);
        await running;
        stream.close(rstCode);
        const deadline = Date.now() + CALL_DEADLINE_MS;
        while (!reasons.has(id)) {
          if (Date.now() > deadline) throw new Error(`${id}: the handler's signal never aborted`);
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        return reasons.get(id);
      } finally {
        session.destroy();
      }
    }

    const codes = [
      constants.NGHTTP2_NO_ERROR,
      constants.NGHTTP2_PROTOCOL_ERROR,
      constants.NGHTTP2_INTERNAL_ERROR,
      constants.NGHTTP2_FLOW_CONTROL_ERROR,
      constants.NGHTTP2_SETTINGS_TIMEOUT,
      constants.NGHTTP2_STREAM_CLOSED,
      constants.NGHTTP2_FRAME_SIZE_ERROR,
      constants.NGHTTP2_REFUSED_STREAM,
      constants.NGHTTP2_CANCEL,
      constants.NGHTTP2_COMPRESSION_ERROR,
      constants.NGHTTP2_CONNECT_ERROR,
      constants.NGHTTP2_ENHANCE_YOUR_CALM,
      constants.NGHTTP2_INADEQUATE_SECURITY,
      constants.NGHTTP2_HTTP_1_1_REQUIRED,
      0x99, // a code HTTP/2 does not define
    ];
    try {
      const fromConnect: Record<number, unknown> = {};
      const fromFast: Record<number, unknown> = {};
      for (const code of codes) {
        fromConnect[code] = await resetCall(reference, `connect-${code}`, code);
        fromFast[code] = await resetCall(fast, `fast-${code}`, code);
      }
      expect(fromFast).toEqual(fromConnect);
      expect(fromConnect).toMatchObject({
        [constants.NGHTTP2_NO_ERROR]: { name: 'AbortError' },
        [constants.NGHTTP2_STREAM_CLOSED]: { name: 'AbortError' },
        [constants.NGHTTP2_INTERNAL_ERROR]: { code: Code.Internal },
        [constants.NGHTTP2_REFUSED_STREAM]: { code: Code.Unavailable },
        [constants.NGHTTP2_CANCEL]: { code: Code.Canceled },
        [constants.NGHTTP2_ENHANCE_YOUR_CALM]: { code: Code.ResourceExhausted },
        [constants.NGHTTP2_HTTP_1_1_REQUIRED]: { code: Code.PermissionDenied },
        153: { name: 'AbortError' },
      });
    } finally {
      await Promise.all([fast.close(), reference.close()]);
    }
  });
});

/** What a handler can tell of why its signal aborted. */
function reasonOf(reason: unknown): Record<string, unknown> {
  if (reason instanceof ConnectError) return { code: reason.code, message: reason.rawMessage };
  return { name: reason instanceof Error || reason instanceof DOMException ? reason.name : reason };
}
