import { once } from 'node:events';
import { connect, constants, type IncomingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { create, createFileRegistry, fromBinary, toBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Code, createConnectRouter, type HandlerContext } from '@connectrpc/connect';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Backend, buildBackend } from '../src/backend/build-backend.js';
import { parseConfig } from '../src/config.js';
import {
  GreetRequestSchema,
  GreetResponseSchema,
} from '../src/gen/backend_service/v1/backend_service_pb.js';
import { applicationServices, createHealthStatus, registerRpcs } from '../src/rpc/index.js';
import { createServerSpans } from '../src/telemetry/server-span.js';
import type { Telemetry } from '../src/telemetry/start-telemetry.js';
import { recordingLogger } from './helpers/recording-logger.js';

/*
 * The backend as buildBackend assembles it (the unary gRPC fast path, Connect's adapter, the
 * answer to unknown methods), on a real port, with its telemetry kept in memory, and raw HTTP/2
 * clients: deadlines that pass while the request body is still arriving, a request compressed
 * with an encoding the server does not have, and unknown methods in each protocol.
 */

const GREET = '/backend_service.v1.BackendService/Greet';
const UNKNOWN = '/backend_service.v1.BackendService/NoSuchMethod';
const MAX_TIMEOUT_MS = 600;
/** The longest any answer here may take: deadlines are at most MAX_TIMEOUT_MS. */
const ANSWER_WITHIN_MS = 3_000;
/** How long the request gate takes when asked (`x-slow-gate`), ignoring the call's signal. */
const SLOW_GATE_MS = 400;

const greetBytes = toBinary(GreetRequestSchema, create(GreetRequestSchema, { name: 'Ada' }));

function envelope(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(5 + message.byteLength);
  framed.writeUInt32BE(message.byteLength, 1);
  framed.set(message, 5);
  return framed;
}

/** An envelope's header promising 10 bytes, and 2 of them. */
const PART_OF_AN_ENVELOPE = Buffer.from([0, 0, 0, 0, 10, 0x0a, 0x03]);

type Answer = {
  status: number;
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: Buffer;
  /** The code the stream closed with (0: NO_ERROR); -1 if it never closed. */
  rstCode: number;
  ms: number;
};

type Request = {
  path?: string;
  headers: Record<string, string>;
  body: Buffer;
  /** Send the body without END_STREAM and keep the request open until the stream closes. */
  leaveOpen?: true;
};

/** One request on its own session; resolves once the stream has closed. */
function call(port: number, request: Request): Promise<Answer> {
  const started = performance.now();
  const session = connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  const stream = session.request({
    ':method': 'POST',
    ':path': request.path ?? GREET,
    ...request.headers,
  });
  const answer: Answer = {
    status: 0,
    headers: {},
    trailers: {},
    body: Buffer.alloc(0),
    rstCode: -1,
    ms: 0,
  };
  const chunks: Buffer[] = [];
  stream.on('response', (headers) => {
    answer.status = Number(headers[':status']);
    answer.headers = headers;
  });
  stream.on('trailers', (trailers) => {
    answer.trailers = trailers;
  });
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('error', () => {});
  if (request.leaveOpen) stream.write(request.body);
  else stream.end(request.body);
  return new Promise<Answer>((resolve, reject) => {
    const timer = setTimeout(() => {
      session.destroy();
      reject(new Error(`the stream was still open after ${ANSWER_WITHIN_MS} ms`));
    }, ANSWER_WITHIN_MS);
    stream.on('close', () => {
      clearTimeout(timer);
      answer.body = Buffer.concat(chunks);
      answer.rstCode = stream.rstCode ?? -1;
      answer.ms = performance.now() - started;
      // close() never calls back on a session already closed (the server's GOAWAY closes it).
      if (session.closed) resolve(answer);
      else session.close(() => resolve(answer));
    });
  });
}

/** gRPC's status from the trailers, a trailers-only answer, or a gRPC-Web trailer frame. */
function grpcStatus(answer: Answer): string | undefined {
  const field = answer.trailers['grpc-status'] ?? answer.headers['grpc-status'];
  if (field !== undefined) return String(field);
  return /grpc-status: (\d+)/.exec(answer.body.toString('latin1'))?.[1];
}

function grpcMessage(answer: Answer): string | undefined {
  const field = answer.trailers['grpc-message'] ?? answer.headers['grpc-message'];
  const raw =
    field === undefined
      ? /grpc-message: (\S*)/.exec(answer.body.toString('latin1'))?.[1]
      : String(field);
  return raw === undefined ? undefined : decodeURIComponent(raw);
}

function telemetryInMemory() {
  const spans = new InMemorySpanExporter();
  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
  });
  const metrics = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter: metrics,
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const { logger, lines } = recordingLogger({}, 'test-project');
  const tracer = tracerProvider.getTracer('test');
  const telemetry: Telemetry = {
    tracer,
    meter: meterProvider.getMeter('test'),
    logger,
    serverSpans: createServerSpans({ tracer, logger }),
    shutdown: async () => {
      await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown()]);
    },
  };
  /** `rpc.status_code` of each duration point recorded for `method`. */
  const durationStatuses = async (method: string) => {
    await reader.forceFlush();
    const labels = metrics
      .getMetrics()
      .flatMap((resource) => resource.scopeMetrics)
      .flatMap((scope) => scope.metrics)
      .filter((metric) => metric.descriptor.name === 'rpc.server.call.duration')
      .flatMap((metric) => metric.dataPoints.map((point) => point.attributes));
    metrics.reset();
    return labels
      .filter((attributes) => attributes['rpc.method'] === method)
      .map((attributes) => attributes['rpc.status_code']);
  };
  return { telemetry, spans, lines, durationStatuses };
}

describe('the backend built by buildBackend', () => {
  const recorded = telemetryInMemory();
  let backend: Backend;
  let port: number;

  beforeAll(async () => {
    const config = parseConfig({
      SERVICE_ROLE: 'backend',
      GRPC_MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
    });
    const requestGate = async (context: HandlerContext) => {
      if (context.requestHeader.has('x-slow-gate')) await sleep(SLOW_GATE_MS);
    };
    backend = buildBackend(config, { telemetry: recorded.telemetry, requestGate });
    await new Promise<void>((resolve, reject) => {
      backend.server.once('error', reject);
      backend.server.listen(0, '127.0.0.1', resolve);
    });
    ({ port } = backend.server.address() as AddressInfo);
  });

  afterAll(async () => {
    backend?.destroy();
    await new Promise((resolve) => backend?.server.close(resolve));
    await recorded.telemetry.shutdown();
  });

  beforeEach(() => {
    recorded.spans.reset();
    recorded.lines.length = 0;
  });

  it('tells each connection it may hold at most 1,000 streams open at once, and 64 KiB of metadata per call', async () => {
    const session = connect(`http://127.0.0.1:${port}`);
    try {
      const [settings] = (await once(session, 'remoteSettings')) as [
        { maxConcurrentStreams?: number; maxHeaderListSize?: number },
      ];
      expect(settings.maxConcurrentStreams).toBe(1_000);
      expect(settings.maxHeaderListSize).toBe(64 * 1024);
    } finally {
      session.close();
    }
  });

  it('takes metadata by size, not by count; a call over the size is refused alone', async () => {
    // Node's client would refuse to send more than 64 KiB itself: this one sends it anyway.
    const session = connect(`http://127.0.0.1:${port}`, { maxSendHeaderBlockLength: 1 << 20 });
    session.on('error', () => {});
    const greet = (metadata: Record<string, string>) =>
      new Promise<{ status: string | undefined; rstCode: number | undefined }>((resolve) => {
        const stream = session.request({ ':method': 'POST', ':path': GREET, ...grpc, ...metadata });
        let status: string | undefined;
        stream.on('trailers', (trailers) => {
          status = String(trailers['grpc-status']);
        });
        stream.on('error', () => {});
        stream.resume();
        stream.on('close', () => resolve({ status, rstCode: stream.rstCode }));
        stream.end(envelope(greetBytes));
      });
    const entries = (count: number, bytes: number) =>
      Object.fromEntries(
        Array.from({ length: count }, (_, i) => [`x-entry-${i}`, 'v'.repeat(bytes)]),
      );
    try {
      // Node's default refused more than 128 fields, however small.
      expect(await greet(entries(500, 1))).toMatchObject({ status: '0' });
      // Over 64 KiB: that stream is reset (ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED to gRPC clients).
      expect(await greet(entries(70, 1_000))).toMatchObject({
        status: undefined,
        rstCode: constants.NGHTTP2_ENHANCE_YOUR_CALM,
      });
      // The connection, and the calls it carries, go on.
      expect(await greet({})).toMatchObject({ status: '0' });
    } finally {
      session.close();
    }
  });

  const grpc = { 'content-type': 'application/grpc', te: 'trailers' };
  const grpcWeb = { 'content-type': 'application/grpc-web+proto' };
  const connectProto = { 'content-type': 'application/proto', 'connect-protocol-version': '1' };

  describe('a deadline that passes while the request body is still arriving', () => {
    type Case = {
      name: string;
      request: Request;
      /** When the answer is due: the deadline, after the cap. */
      deadlineMs: number;
      check: (answer: Answer) => void;
    };

    const isGrpcDeadline = (answer: Answer) => {
      expect(answer.status).toBe(200);
      expect(grpcStatus(answer)).toBe(String(Code.DeadlineExceeded));
      expect(grpcMessage(answer)).toBe('the operation timed out');
    };
    const isConnectDeadline = (answer: Answer) => {
      expect(answer.status).toBe(504);
      expect(JSON.parse(answer.body.toString())).toEqual({
        code: 'deadline_exceeded',
        message: 'the operation timed out',
      });
    };

    const cases: Case[] = [
      {
        name: 'gRPC (the fast path), part of an envelope',
        request: {
          headers: { ...grpc, 'grpc-timeout': '200m' },
          body: PART_OF_AN_ENVELOPE,
          leaveOpen: true,
        },
        deadlineMs: 200,
        check: isGrpcDeadline,
      },
      {
        name: 'gRPC (the fast path), no body at all',
        request: {
          headers: { ...grpc, 'grpc-timeout': '200m' },
          body: Buffer.alloc(0),
          leaveOpen: true,
        },
        deadlineMs: 200,
        check: isGrpcDeadline,
      },
      {
        name: 'gRPC (the fast path), a 2-hour deadline: cut at GRPC_MAX_TIMEOUT_MS',
        request: {
          headers: { ...grpc, 'grpc-timeout': '2H' },
          body: PART_OF_AN_ENVELOPE,
          leaveOpen: true,
        },
        deadlineMs: MAX_TIMEOUT_MS,
        check: isGrpcDeadline,
      },
      {
        name: 'gRPC (the fast path), the whole message sent while a slow request gate decides',
        request: {
          headers: { ...grpc, 'grpc-timeout': '200m', 'x-slow-gate': '1' },
          body: envelope(greetBytes),
          leaveOpen: true,
        },
        deadlineMs: SLOW_GATE_MS,
        check: isGrpcDeadline,
      },
      {
        name: 'gRPC+JSON (Connect), part of an envelope',
        request: {
          headers: { ...grpc, 'content-type': 'application/grpc+json', 'grpc-timeout': '200m' },
          body: PART_OF_AN_ENVELOPE,
          leaveOpen: true,
        },
        deadlineMs: 200,
        check: (answer) => {
          isGrpcDeadline(answer);
          expect(answer.headers['content-type']).toBe('application/grpc+json');
        },
      },
      {
        name: 'gRPC-Web (Connect), part of an envelope',
        request: {
          headers: { ...grpcWeb, 'grpc-timeout': '200m' },
          body: PART_OF_AN_ENVELOPE,
          leaveOpen: true,
        },
        deadlineMs: 200,
        check: (answer) => {
          isGrpcDeadline(answer);
          // In the body's trailer frame, as gRPC-Web carries trailers.
          expect(answer.body[0]).toBe(0x80);
        },
      },
      {
        name: 'gRPC-Web (Connect), the whole message sent while a slow request gate decides',
        request: {
          headers: { ...grpcWeb, 'grpc-timeout': '200m', 'x-slow-gate': '1' },
          body: envelope(greetBytes),
          leaveOpen: true,
        },
        deadlineMs: SLOW_GATE_MS,
        check: isGrpcDeadline,
      },
      {
        name: 'gRPC bidi streaming (reflection, Connect), one message answered, the request left open',
        request: {
          path: '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
          headers: { ...grpc, 'grpc-timeout': '200m' },
          // ServerReflectionRequest { list_services: "" }
          body: envelope(Uint8Array.of(0x3a, 0x00)),
          leaveOpen: true,
        },
        deadlineMs: 200,
        check: (answer) => {
          isGrpcDeadline(answer);
          expect(answer.body.length).toBeGreaterThan(5);
        },
      },
      {
        name: 'the Connect protocol, part of a binary message',
        request: {
          headers: { ...connectProto, 'connect-timeout-ms': '200' },
          body: greetBytes.subarray(0, 2) as Buffer,
          leaveOpen: true,
        },
        deadlineMs: 200,
        check: isConnectDeadline,
      },
      {
        name: 'the Connect protocol, part of a JSON message, a 2-hour deadline',
        request: {
          headers: {
            ...connectProto,
            'content-type': 'application/json',
            'connect-timeout-ms': '7200000',
          },
          body: Buffer.from('{"name":'),
          leaveOpen: true,
        },
        deadlineMs: MAX_TIMEOUT_MS,
        check: isConnectDeadline,
      },
    ];

    it.each(cases)(
      '$name: answered DEADLINE_EXCEEDED at the deadline, the stream released',
      async ({ request, deadlineMs, check }) => {
        const answer = await call(port, request);
        check(answer);
        expect(answer.ms).toBeGreaterThanOrEqual(deadlineMs - 20);
        expect(answer.ms).toBeLessThan(deadlineMs + 1_500);
        // The server reset the caller's half once it had answered (release-unread-request.ts).
        expect(answer.rstCode).toBe(0);
        // Still serving.
        const next = await call(port, { headers: grpc, body: envelope(greetBytes) });
        expect(grpcStatus(next)).toBe('0');
      },
    );

    it('is traced on the fast path like any deadline: span, duration point and access line', async () => {
      const answer = await call(port, {
        headers: { ...grpc, 'grpc-timeout': '200m', 'user-agent': 'deadline-test' },
        body: PART_OF_AN_ENVELOPE,
        leaveOpen: true,
      });
      expect(grpcStatus(answer)).toBe(String(Code.DeadlineExceeded));
      const method = 'backend_service.v1.BackendService/Greet';
      const spans = recorded.spans.getFinishedSpans();
      expect(spans.map((span) => [span.name, span.attributes['rpc.status_code']])).toEqual([
        [method, 'DEADLINE_EXCEEDED'],
      ]);
      expect(spans[0]?.status.code).toBe(2); // ERROR: a server fault by the error rule
      expect(await recorded.durationStatuses(method)).toContain('DEADLINE_EXCEEDED');
      const access = recorded.lines.filter((line) => line.httpRequest !== undefined);
      expect(access).toMatchObject([
        {
          severity: 'ERROR',
          message: `POST ${GREET} DEADLINE_EXCEEDED`,
          httpRequest: { requestUrl: GREET, status: 200, userAgent: 'deadline-test' },
          error: { code: Code.DeadlineExceeded, rawMessage: 'the operation timed out' },
        },
      ]);
    });

    it('leaves alone a call whose body arrived in time, on either path', async () => {
      const fast = await call(port, {
        headers: { ...grpc, 'grpc-timeout': '200m' },
        body: envelope(greetBytes),
      });
      const web = await call(port, {
        headers: { ...grpcWeb, 'grpc-timeout': '200m' },
        body: envelope(greetBytes),
      });
      const connect = await call(port, {
        headers: { ...connectProto, 'connect-timeout-ms': '200' },
        body: Buffer.from(greetBytes),
      });
      expect([fast, web].map(grpcStatus)).toEqual(['0', '0']);
      expect(fromBinary(GreetResponseSchema, connect.body).reply).toBe('Hello Ada!!');
      // Past the deadlines: nothing fires late.
      await sleep(300);
      const next = await call(port, { headers: grpcWeb, body: envelope(greetBytes) });
      expect(grpcStatus(next)).toBe('0');
    });
  });

  describe('a request compressed with an encoding the server does not have', () => {
    it.each([
      ['gRPC (the fast path)', GREET, grpc],
      ['gRPC+JSON (Connect)', GREET, { ...grpc, 'content-type': 'application/grpc+json' }],
      ['gRPC-Web (Connect)', GREET, grpcWeb],
      ['gRPC, an unknown method', UNKNOWN, grpc],
      ['gRPC-Web, an unknown method', UNKNOWN, grpcWeb],
      // Media types are case-insensitive, and Connect takes this one.
      ['gRPC-Web, in upper case', GREET, { 'content-type': 'Application/GRPC-WEB+proto' }],
    ] as const)(
      '%s: the answer lists the encodings taken in grpc-accept-encoding',
      async (_name, path, headers) => {
        const answer = await call(port, {
          path,
          headers: { ...headers, 'grpc-encoding': 'snappy' },
          body: envelope(greetBytes),
        });
        expect(grpcStatus(answer)).toBe(String(Code.Unimplemented));
        expect(answer.headers['grpc-accept-encoding']).toBe('gzip,br');
      },
    );

    it('names the encodings in its message too (the fast path, as Connect words it)', async () => {
      const answer = await call(port, {
        headers: { ...grpc, 'grpc-encoding': 'snappy' },
        body: envelope(greetBytes),
      });
      expect(grpcMessage(answer)).toBe(
        'unknown compression "snappy": supported encodings are gzip,br',
      );
    });

    it.each([
      ['gzip', { 'grpc-encoding': 'gzip' }],
      ['identity', { 'grpc-encoding': 'identity' }],
      ['none', {}],
    ])('grpc-encoding %s: no grpc-accept-encoding in the answer', async (_name, encoding) => {
      const answer = await call(port, {
        headers: { ...grpc, ...encoding },
        body: envelope(greetBytes),
      });
      expect(grpcStatus(answer)).toBe('0');
      expect(answer.headers['grpc-accept-encoding']).toBeUndefined();
    });
  });

  describe('an unknown method', () => {
    it.each([
      ['application/grpc', 'application/grpc+proto'],
      ['application/grpc+proto', 'application/grpc+proto'],
      ['application/grpc+json', 'application/grpc+json'],
      ['application/grpc-web', 'application/grpc-web+proto'],
      ['application/grpc-web+proto', 'application/grpc-web+proto'],
      ['application/grpc-web+json', 'application/grpc-web+json'],
      ['application/grpc-web-text', 'application/grpc-web-text+proto'],
      ['application/grpc-web-text+proto', 'application/grpc-web-text+proto'],
      // Media types are case-insensitive, and Connect takes these for the methods it has.
      ['Application/GRPC', 'application/grpc+proto'],
      ['Application/GRPC-Web+JSON', 'application/grpc-web+json'],
    ])('%s: UNIMPLEMENTED as %s, the request’s protocol and codec', async (type, answered) => {
      const answer = await call(port, {
        path: UNKNOWN,
        headers: { 'content-type': type, te: 'trailers' },
        body: envelope(greetBytes),
      });
      expect(answer.status).toBe(200);
      expect(answer.headers['grpc-status']).toBe(String(Code.Unimplemented));
      expect(answer.headers['content-type']).toBe(answered);
      expect(answer.headers['grpc-accept-encoding']).toBeUndefined();
    });

    it('names at most 200 characters of a long path', async () => {
      const path = `/pkg.Service/${'M'.repeat(10_000)}`;
      const answer = await call(port, { path, headers: grpc, body: envelope(greetBytes) });
      expect(grpcMessage(answer)).toBe(`unknown method ${path.slice(0, 200)}...`);
    });

    it('is still 404 in the Connect protocol', async () => {
      const answer = await call(port, {
        path: UNKNOWN,
        headers: connectProto,
        body: Buffer.from(greetBytes),
      });
      expect(answer.status).toBe(404);
    });
  });
});

describe('health reports every service the backend registers', () => {
  it('lists application services, not health and reflection', () => {
    // A second service, as a fork adds one (README, "Add an RPC").
    const file = create(FileDescriptorProtoSchema, {
      name: 'admin/v1/admin.proto',
      package: 'admin.v1',
      syntax: 'proto3',
      messageType: [{ name: 'PingRequest' }, { name: 'PingResponse' }],
      service: [
        {
          name: 'AdminService',
          method: [
            {
              name: 'Ping',
              inputType: '.admin.v1.PingRequest',
              outputType: '.admin.v1.PingResponse',
            },
          ],
        },
      ],
    });
    const admin = createFileRegistry(file, () => undefined).getService('admin.v1.AdminService');
    if (!admin) throw new Error('the fixture descriptor has no AdminService');
    const router = createConnectRouter();
    registerRpcs(router, { health: createHealthStatus(), reflection: true });
    router.service(admin, {});
    expect(applicationServices(router).sort()).toEqual([
      'admin.v1.AdminService',
      'backend_service.v1.BackendService',
    ]);
  });

  it('has them NOT_SERVING until serving(), then SERVING', () => {
    const backend = buildBackend(parseConfig({ SERVICE_ROLE: 'backend' }), {
      telemetry: telemetryInMemory().telemetry,
    });
    expect(Object.fromEntries(backend.health.entries())).toEqual({
      '': 'NOT_SERVING',
      'backend_service.v1.BackendService': 'NOT_SERVING',
    });
    backend.serving();
    expect(Object.fromEntries(backend.health.entries())).toEqual({
      '': 'SERVING',
      'backend_service.v1.BackendService': 'SERVING',
    });
  });
});

describe('a drain with a stream still open', () => {
  it('ends the stream with UNAVAILABLE, which clients retry, and finishes before any cut', async () => {
    const recorded = telemetryInMemory();
    const config = parseConfig({ SERVICE_ROLE: 'backend', GRPC_REFLECTION: 'true' });
    const backend = buildBackend(config, { telemetry: recorded.telemetry });
    await new Promise<void>((resolve) => backend.server.listen(0, '127.0.0.1', resolve));
    const { port } = backend.server.address() as AddressInfo;
    try {
      // A reflection stream the client keeps open: ServerReflectionRequest { list_services: "" }.
      const open = call(port, {
        path: '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
        headers: { 'content-type': 'application/grpc', te: 'trailers' },
        body: envelope(Uint8Array.of(0x3a, 0x00)),
        leaveOpen: true,
      });
      const drained = backend.drain().then(() => 'drained');
      const answer = await open;
      expect(grpcStatus(answer)).toBe(String(Code.Unavailable));
      expect(grpcMessage(answer)).toBe('the server is shutting down; call again');
      expect(await Promise.race([drained, sleep(ANSWER_WITHIN_MS, 'still draining')])).toBe(
        'drained',
      );
    } finally {
      backend.destroy();
      await recorded.telemetry.shutdown();
    }
  });

  it('ends a fast-path call whose body never completes, without a deadline, with UNAVAILABLE', async () => {
    const recorded = telemetryInMemory();
    const backend = buildBackend(parseConfig({ SERVICE_ROLE: 'backend' }), {
      telemetry: recorded.telemetry,
    });
    await new Promise<void>((resolve) => backend.server.listen(0, '127.0.0.1', resolve));
    const { port } = backend.server.address() as AddressInfo;
    try {
      const open = call(port, {
        headers: { 'content-type': 'application/grpc', te: 'trailers' },
        body: PART_OF_AN_ENVELOPE,
        leaveOpen: true,
      });
      const drained = backend.drain().then(() => 'drained');
      const answer = await open;
      expect(grpcStatus(answer)).toBe(String(Code.Unavailable));
      expect(await Promise.race([drained, sleep(ANSWER_WITHIN_MS, 'still draining')])).toBe(
        'drained',
      );
      // Traced like any call the server ended: a SERVER span with the status.
      expect(
        recorded.spans.getFinishedSpans().map((span) => span.attributes['rpc.status_code']),
      ).toEqual(['UNAVAILABLE']);
    } finally {
      backend.destroy();
      await recorded.telemetry.shutdown();
    }
  });
});
