import {
  type ClientHttp2Stream,
  constants,
  createServer,
  type Http2Server,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import {
  type AddressInfo,
  createServer as createTcpServer,
  type Socket,
  connect as tcpConnect,
} from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  type CallOptions,
  type Client,
  Code,
  ConnectError,
  createClient,
  type Interceptor,
} from '@connectrpc/connect';
import {
  connectNodeAdapter,
  createGrpcTransport,
  type GrpcTransportOptions,
  Http2SessionManager,
} from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGrpcUnaryTransport, isOversizedReply } from '../src/api/grpc-unary-transport.js';
import {
  BackendService,
  GreetResponseSchema,
} from '../src/gen/backend_service/v1/backend_service_pb.js';
import { isCallerRefusal } from '../src/identity/caller-refusal.js';
import { StreamingTestService } from './fixtures/streaming-test-service.js';
import { freePort } from './helpers/free-port.js';

type Kind = 'connect' | 'fast';
type Greeter = Client<typeof BackendService>;
type Outcome = { reply: string } | { code: string; message: string };
type SessionManager = NonNullable<GrpcTransportOptions['sessionManager']>;
type TestServer = {
  baseUrl: string;
  /** Sessions accepted so far. */
  sessions(): number;
  openSessions(): number;
  close(): Promise<void>;
};

const KINDS: readonly Kind[] = ['connect', 'fast'];
/** The transport's default limit on a reply, gRPC's. */
const READ_MAX_BYTES = 4 * 1024 * 1024;
const GREET_PATH = '/backend_service.v1.BackendService/Greet';
/** A reply whose message is readMaxBytes long: a 1-byte tag, a 4-byte length, the text. */
const EXACTLY_MAX_REPLY = 'x'.repeat(READ_MAX_BYTES - 5);

async function listen(server: Http2Server): Promise<TestServer> {
  const open = new Set<ServerHttp2Session>();
  let sessions = 0;
  server.on('session', (session) => {
    sessions++;
    open.add(session);
    session.on('close', () => open.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    sessions: () => sessions,
    openSessions: () => open.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of open) session.destroy();
        server.close(() => resolve());
      }),
  };
}

type ClientOptions = {
  interceptors?: Interceptor[];
  /** Http2SessionManager's PING options: a call after pingIntervalMs idle verifies the session. */
  ping?: { pingIntervalMs: number; pingTimeoutMs: number };
};

type TestClient = {
  client: Greeter;
  manager: Http2SessionManager;
  /** Streams the transport opened that have not closed yet. */
  openStreams(): number;
};

/** A client on Connect's gRPC transport or on ours, on a session manager of its own. */
function openClient(kind: Kind, baseUrl: string, options: ClientOptions = {}): TestClient {
  const manager = new Http2SessionManager(baseUrl, options.ping ?? {});
  const streams = new Set<ClientHttp2Stream>();
  const sessionManager: SessionManager = {
    get authority() {
      return manager.authority;
    },
    async request(method, path, headers, streamOptions) {
      const stream = await manager.request(method, path, headers, streamOptions);
      streams.add(stream);
      stream.once('close', () => streams.delete(stream));
      return stream;
    },
    notifyResponseByteRead: (stream) => manager.notifyResponseByteRead(stream),
  };
  const transportOptions = { baseUrl, sessionManager, interceptors: options.interceptors ?? [] };
  const transport =
    kind === 'connect'
      ? createGrpcTransport(transportOptions)
      : createGrpcUnaryTransport(transportOptions);
  return {
    client: createClient(BackendService, transport),
    manager,
    openStreams: () => streams.size,
  };
}

/** Runs `call`, lets the streams it opened close (1 s at most), then closes the session. */
async function withClient<T>(
  kind: Kind,
  baseUrl: string,
  call: (client: Greeter) => Promise<T>,
  options: ClientOptions = {},
): Promise<T> {
  const { client, manager, openStreams } = openClient(kind, baseUrl, options);
  try {
    return await call(client);
  } finally {
    const deadline = Date.now() + 1_000;
    while (openStreams() > 0 && Date.now() < deadline) await sleep(10);
    manager.abort();
  }
}

/** The same call through both transports, one after the other. */
async function both<T>(
  baseUrl: string,
  call: (client: Greeter, kind: Kind) => Promise<T>,
  interceptors: () => Interceptor[] = () => [],
): Promise<Record<Kind, T>> {
  const connect = await withClient('connect', baseUrl, (c) => call(c, 'connect'), {
    interceptors: interceptors(),
  });
  const fast = await withClient('fast', baseUrl, (c) => call(c, 'fast'), {
    interceptors: interceptors(),
  });
  return { connect, fast };
}

/** A TCP proxy that can go silent: it keeps its connections open but stops passing bytes. */
async function startSilenceableProxy(target: string) {
  const port = Number(new URL(target).port);
  const sockets = new Set<Socket>();
  let silent = false;
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  };
  const proxy = createTcpServer((downstream) => {
    const upstream = tcpConnect(port, '127.0.0.1');
    track(downstream);
    track(upstream);
    downstream.on('data', (chunk) => !silent && upstream.write(chunk));
    upstream.on('data', (chunk) => !silent && downstream.write(chunk));
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    baseUrl: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    silence() {
      silent = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        proxy.close(() => resolve());
      }),
  };
}

async function outcome(client: Greeter, name: string, options: CallOptions = {}) {
  try {
    const { reply } = await client.greet({ name }, options);
    return { reply } satisfies Outcome;
  } catch (thrown) {
    const error = ConnectError.from(thrown);
    return { code: Code[error.code], message: error.rawMessage } satisfies Outcome;
  }
}

async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (thrown) {
    return ConnectError.from(thrown);
  }
  throw new Error('expected the call to fail, it succeeded');
}

async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

function envelope(reply: string): Buffer {
  const message = toBinary(GreetResponseSchema, create(GreetResponseSchema, { reply }));
  const framed = Buffer.alloc(5 + message.byteLength);
  framed.writeUInt32BE(message.byteLength, 1);
  framed.set(message, 5);
  return framed;
}

describe('createGrpcUnaryTransport against a Connect server', () => {
  /** Request headers seen by the server, by request name. */
  const requestHeaders = new Map<string, Headers>();
  /** Names of calls whose context.signal the server saw aborted. */
  const cancelled = new Set<string>();
  let server: TestServer;
  /** Applies no grpc-timeout of its own, so only the client can cancel a call. */
  let deadlineBlind: TestServer;

  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(BackendService, {
        async greet(request, context) {
          requestHeaders.set(request.name, new Headers(context.requestHeader));
          if (request.name === 'fail') {
            throw new ConnectError('nope', Code.FailedPrecondition, { 'x-why': 'because' }, [
              { desc: GreetResponseSchema, value: { reply: 'detail' } },
            ]);
          }
          if (request.name.startsWith('slow')) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, 5_000);
              context.signal.addEventListener(
                'abort',
                () => {
                  clearTimeout(timer);
                  cancelled.add(request.name);
                  resolve();
                },
                { once: true },
              );
            });
            return { reply: 'too late' };
          }
          const echo = context.requestHeader.get('x-echo');
          if (echo !== null) {
            context.responseHeader.set('x-echo', echo);
            context.responseTrailer.set('x-echo-trailer', echo);
          }
          return { reply: `Hello ${request.name}!!` };
        },
      }),
  });

  beforeAll(async () => {
    server = await listen(createServer(handler));
    deadlineBlind = await listen(
      createServer((req, res) => {
        delete req.headers['grpc-timeout'];
        handler(req, res);
      }),
    );
  });

  afterAll(async () => {
    await Promise.all([server.close(), deadlineBlind.close()]);
  });

  it('returns the reply, response headers and trailers as Connect does', async () => {
    const results = await both(server.baseUrl, async (client) => {
      const seen: { header?: string | null; trailer?: string | null } = {};
      const result = await outcome(client, 'Ada', {
        headers: { 'x-echo': 'echoed' },
        onHeader: (header) => {
          seen.header = header.get('x-echo');
        },
        onTrailer: (trailer) => {
          seen.trailer = trailer.get('x-echo-trailer');
        },
      });
      return { result, seen };
    });
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({
      result: { reply: 'Hello Ada!!' },
      seen: { header: 'echoed', trailer: 'echoed' },
    });
  });

  it('reports an error with its code, message, metadata and details as Connect does', async () => {
    const results = await both(server.baseUrl, async (client) => {
      const error = await failure(client.greet({ name: 'fail' }));
      return {
        code: Code[error.code],
        message: error.rawMessage,
        why: error.metadata.get('x-why'),
        details: error.findDetails(GreetResponseSchema).map((detail) => detail.reply),
      };
    });
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({
      code: 'FailedPrecondition',
      message: 'nope',
      why: 'because',
      details: ['detail'],
    });
  });

  it('sends call headers, interceptor headers and the gRPC request headers', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const setTrace: Interceptor = (next) => (req) => {
      req.header.set('traceparent', traceparent);
      return next(req);
    };
    const results = await both(
      server.baseUrl,
      async (client, kind) => {
        const name = `headers-${kind}`;
        await client.greet({ name }, { headers: { authorization: 'Bearer x' }, timeoutMs: 5_000 });
        const header = requestHeaders.get(name);
        const names = ['authorization', 'traceparent', 'content-type', 'te'] as const;
        const timeout = Number.parseInt(header?.get('grpc-timeout') ?? '', 10);
        return {
          ...Object.fromEntries(names.map((key) => [key, header?.get(key)])),
          grpcTimeoutUnit: header?.get('grpc-timeout')?.slice(-1),
          grpcTimeoutWithinBudget: timeout > 4_000 && timeout <= 5_000,
        };
      },
      () => [setTrace],
    );
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({
      authorization: 'Bearer x',
      traceparent,
      'content-type': 'application/grpc+proto',
      te: 'trailers',
      grpcTimeoutUnit: 'm',
      grpcTimeoutWithinBudget: true,
    });
  });

  it('fails with DEADLINE_EXCEEDED at the deadline and cancels the call on the server', async () => {
    const results = await both(deadlineBlind.baseUrl, async (client, kind) => {
      const name = `slow-deadline-${kind}`;
      const started = Date.now();
      const result = await outcome(client, name, { timeoutMs: 100 });
      const elapsedMs = Date.now() - started;
      await until(() => cancelled.has(name), 1_000);
      return { code: 'code' in result ? result.code : 'OK', inTime: elapsedMs < 1_000 };
    });
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({ code: 'DeadlineExceeded', inTime: true });
  });

  it('fails with CANCELED when the caller aborts, and cancels the call on the server', async () => {
    const results = await both(deadlineBlind.baseUrl, async (client, kind) => {
      const name = `slow-abort-${kind}`;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 50);
      const result = await outcome(client, name, { signal: controller.signal });
      clearTimeout(timer);
      await until(() => cancelled.has(name), 1_000);
      return 'code' in result ? result.code : 'OK';
    });
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toBe('Canceled');
  });

  it('fails a call whose signal is already aborted, leaving nothing to throw later', async () => {
    const uncaught: unknown[] = [];
    const record = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', record);
    try {
      const results: Partial<Record<Kind, unknown>> = {};
      for (const kind of KINDS) {
        const { client, manager } = openClient(kind, server.baseUrl);
        const result = await outcome(client, 'Ada', { signal: AbortSignal.abort() });
        // Closing the session at once is what a process does when it shuts down.
        manager.abort();
        await until(() => server.openSessions() === 0, 1_000);
        // Destroyed streams emit their errors on a later tick.
        await new Promise((resolve) => setImmediate(resolve));
        results[kind] = {
          result: 'code' in result ? result.code : 'OK',
          uncaught: uncaught.map(String),
        };
      }
      expect(results.fast).toEqual(results.connect);
      expect(results.fast).toEqual({ result: 'Canceled', uncaught: [] });
    } finally {
      process.off('uncaughtException', record);
    }
  });

  it('applies the deadline while the session manager verifies a silent connection', async () => {
    const results: Partial<Record<Kind, unknown>> = {};
    for (const kind of KINDS) {
      const proxy = await startSilenceableProxy(server.baseUrl);
      try {
        results[kind] = await withClient(
          kind,
          proxy.baseUrl,
          async (client) => {
            const warm = await outcome(client, 'Ada');
            proxy.silence();
            // Idle for longer than pingIntervalMs: the next request first PINGs the session.
            await sleep(150);
            const started = Date.now();
            const result = await outcome(client, 'Ada', { timeoutMs: 200 });
            return {
              warm,
              result: 'code' in result ? result.code : 'OK',
              inTime: Date.now() - started < 1_000,
            };
          },
          { ping: { pingIntervalMs: 100, pingTimeoutMs: 1_500 } },
        );
      } finally {
        await proxy.close();
      }
    }
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({
      warm: { reply: 'Hello Ada!!' },
      result: 'DeadlineExceeded',
      inTime: true,
    });
  });

  it('runs interceptors in order with the request Connect gives them', async () => {
    const record: Record<Kind, { order: string[]; requests: unknown[] }> = {
      connect: { order: [], requests: [] },
      fast: { order: [], requests: [] },
    };
    const tag =
      (kind: Kind, label: string): Interceptor =>
      (next) =>
      async (req) => {
        const { order, requests } = record[kind];
        order.push(`${label} before`);
        requests.push({
          url: req.url,
          method: req.method.name,
          service: req.service.typeName,
          stream: req.stream,
          signal: req.signal instanceof AbortSignal && !req.signal.aborted,
        });
        const res = await next(req);
        order.push(`${label} after`);
        return res;
      };
    for (const kind of KINDS) {
      const reply = await withClient(
        kind,
        server.baseUrl,
        async (client) => (await client.greet({ name: 'Ada' })).reply,
        { interceptors: [tag(kind, 'outer'), tag(kind, 'inner')] },
      );
      expect(reply).toBe('Hello Ada!!');
    }
    expect(record.fast).toEqual(record.connect);
    const request = {
      url: `${server.baseUrl}${GREET_PATH}`,
      method: 'Greet',
      service: 'backend_service.v1.BackendService',
      stream: false,
      signal: true,
    };
    expect(record.fast).toEqual({
      order: ['outer before', 'inner before', 'inner after', 'outer after'],
      requests: [request, request],
    });
  });

  it('aborts req.signal once the call is done, as Connect does', async () => {
    const afterCall: Partial<Record<Kind, unknown>> = {};
    for (const kind of KINDS) {
      let signal: AbortSignal | undefined;
      const keepSignal: Interceptor = (next) => (req) => {
        signal = req.signal;
        return next(req);
      };
      afterCall[kind] = await withClient(
        kind,
        server.baseUrl,
        async (client) => {
          await client.greet({ name: 'Ada' });
          const afterSuccess = signal?.aborted;
          await failure(client.greet({ name: 'fail' }));
          return {
            afterSuccess,
            afterError: signal?.aborted && Code[ConnectError.from(signal.reason).code],
          };
        },
        { interceptors: [keepSignal] },
      );
    }
    expect(afterCall.fast).toEqual(afterCall.connect);
    expect(afterCall.fast).toEqual({ afterSuccess: true, afterError: 'FailedPrecondition' });
  });

  it('makes 20 concurrent calls on one HTTP/2 session', async () => {
    const results = await both(server.baseUrl, async (client) => {
      const before = server.sessions();
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) => client.greet({ name: `n${i}` })),
      );
      return {
        sessions: server.sessions() - before,
        allAnswered: replies.every(({ reply }, i) => reply === `Hello n${i}!!`),
      };
    });
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({ sessions: 1, allAnswered: true });
  });
});

describe('createGrpcUnaryTransport against misbehaving servers', () => {
  const behaviours: Record<string, (stream: ServerHttp2Stream) => void> = {
    refuse: (stream) => stream.close(constants.NGHTTP2_REFUSED_STREAM),
    cancel: (stream) => stream.close(constants.NGHTTP2_CANCEL),
    'http-503': (stream) => stream.respond({ ':status': 503 }, { endStream: true }),
    'http-403': (stream) => stream.respond({ ':status': 403 }, { endStream: true }),
    'no-status': (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.end(envelope('no status'));
    },
    'trailers-only': (stream) =>
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(Code.NotFound),
          'grpc-message': 'gone',
        },
        { endStream: true },
      ),
    'two-messages': (stream) => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.concat([envelope('one'), envelope('two')]));
    },
    'no-message': (stream) => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end();
    },
    'exactly-max': (stream) => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(envelope(EXACTLY_MAX_REPLY));
    },
    oversized: (stream) => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(envelope('x'.repeat(READ_MAX_BYTES + 1)));
    },
    'oversized-declared': (stream) => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const declared = Buffer.alloc(5);
      declared.writeUInt32BE(READ_MAX_BYTES + 1, 1);
      stream.end(declared);
    },
    quota: (stream) =>
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(Code.ResourceExhausted),
          'grpc-message': 'quota',
        },
        { endStream: true },
      ),
    calm: (stream) => stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM),
    'drop-session': (stream) => stream.session?.destroy(),
    'reset-connection': (stream) =>
      (stream.session?.socket as Socket | undefined)?.resetAndDestroy(),
  };
  let server: TestServer;

  beforeAll(async () => {
    const http2 = createServer();
    http2.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      const behaviour = behaviours[String(headers['x-behaviour'])];
      if (behaviour) behaviour(stream);
      else stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    });
    server = await listen(http2);
  });

  afterAll(async () => {
    await server.close();
  });

  const call = (client: Greeter, behaviour: string) =>
    outcome(client, 'Ada', { headers: { 'x-behaviour': behaviour }, timeoutMs: 2_000 });
  const codeOf = (result: Outcome) => ('code' in result ? result.code : 'OK');

  it('reports a port nobody listens on as UNAVAILABLE, as Connect does', async () => {
    const baseUrl = `http://127.0.0.1:${await freePort()}`;
    const results = await both(baseUrl, async (client) => codeOf(await call(client, 'none')));
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toBe('Unavailable');
  });

  it.each([
    ['http-503', { code: 'Unavailable', message: 'HTTP 503' }],
    ['no-status', { code: 'Internal', message: 'protocol error: missing status' }],
    ['trailers-only', { code: 'NotFound', message: 'gone' }],
    [
      'two-messages',
      {
        code: 'Unimplemented',
        message: 'protocol error: received extra output message for unary method',
      },
    ],
    // OK trailers and no message: the REST edge answers UNIMPLEMENTED 501, UNKNOWN would be 500.
    [
      'no-message',
      {
        code: 'Unimplemented',
        message: 'protocol error: missing output message for unary method',
      },
    ],
  ])('answers a %s response as Connect does', async (behaviour, expected) => {
    const results = await both(server.baseUrl, (client) => call(client, behaviour));
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual(expected);
  });

  it('takes a reply of exactly readMaxBytes, the envelope header not counted, as Connect does', async () => {
    expect(envelope(EXACTLY_MAX_REPLY).byteLength).toBe(5 + READ_MAX_BYTES);
    const results = await both(server.baseUrl, async (client) => {
      const result = await call(client, 'exactly-max');
      return 'reply' in result ? { replyLength: result.reply.length } : result;
    });
    expect(results.fast).toEqual(results.connect);
    expect(results.fast).toEqual({ replyLength: EXACTLY_MAX_REPLY.length });
  });

  // The REST edge answers the first two 502 (a retry cannot help), the others 429.
  it.each([
    ['a reply over readMaxBytes', 'oversized', true],
    ['an envelope declaring more than readMaxBytes', 'oversized-declared', true],
    ["the server's own RESOURCE_EXHAUSTED", 'quota', false],
    ['an ENHANCE_YOUR_CALM reset', 'calm', false],
  ])(
    'reports %s (%s) as RESOURCE_EXHAUSTED; an oversized reply: %s',
    async (_, behaviour, oversized) => {
      const error = await withClient('fast', server.baseUrl, (client) =>
        failure(client.greet({ name: 'Ada' }, { headers: { 'x-behaviour': behaviour } })),
      );
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(isOversizedReply(error)).toBe(oversized);
    },
  );

  it.each([
    ['a message over readMaxBytes', 'oversized', (error: ConnectError) => isOversizedReply(error)],
    ["a front end's HTTP 403", 'http-403', (error: ConnectError) => isCallerRefusal(error)],
  ])('marks %s on a streaming call as on a unary one', async (_, behaviour, marked) => {
    const manager = new Http2SessionManager(server.baseUrl);
    try {
      const transport = createGrpcUnaryTransport({
        baseUrl: server.baseUrl,
        sessionManager: manager,
      });
      const client = createClient(StreamingTestService, transport);
      const error = await failure(
        (async () => {
          const messages = client.stream({}, { headers: { 'x-behaviour': behaviour } });
          for await (const _message of messages) {
            // Drained: the failure comes from the stream.
          }
        })(),
      );
      expect(marked(error)).toBe(true);
    } finally {
      manager.abort();
    }
  });

  // Connect's transport answers INTERNAL, CANCELED and ABORTED here: codes callers do not retry.
  it.each([
    ['a stream the server refuses', 'refuse'],
    ['a stream the server cancels', 'cancel'],
    ['a connection reset under the call', 'reset-connection'],
    ['a session the server drops after the request headers', 'drop-session'],
  ])('reports %s as UNAVAILABLE', async (_, behaviour) => {
    const started = Date.now();
    const result = await withClient('fast', server.baseUrl, (client) => call(client, behaviour));
    expect(codeOf(result)).toBe('Unavailable');
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
