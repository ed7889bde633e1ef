import { connect, constants, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTracedBackend, type TracedBackend } from './helpers/traced-backend.js';
import { newTraceParent } from './helpers/traces.js';

vi.mock('../src/rpc/index.js', async (importOriginal) => {
  const { withStreamingTestService } = await import('./fixtures/streaming-test-service.js');
  return withStreamingTestService(await importOriginal());
});

/*
 * Connect's adapter hands a unary call to its interceptors (where the tracing starts) only once
 * it has read the request, and refuses some calls before that. Such calls are recorded all the
 * same: one SERVER span, one duration point, one access line, saying what the client was told.
 * Each call here is made with a raw HTTP/2 client, which sends its body when the test says.
 */

const GREET = 'backend_service.v1.BackendService/Greet';
const STREAM = 'streaming_test.v1.StreamingTestService/Stream';
const DEADLINE_MS = 200;
const LATE_MS = 600;
const json = Buffer.from('{"name":"Ada"}');
const proto = Buffer.from([0x0a, 0x03, 0x41, 0x64, 0x61]);
const framed = (message: Buffer) =>
  Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);

let stack: TracedBackend;
beforeAll(async () => {
  stack = await startTracedBackend(10_000);
});
afterAll(async () => {
  await stack?.close();
});

type Answer = {
  status?: number;
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: string;
  rstCode: number | undefined;
};

/**
 * One call: the headers, the first bytes of `body`, then (after `delayMs`) the rest, or a reset:
 * `close` ends the request, then resets with CANCEL (Node's `close(code)`); `destroy` resets it
 * unended with INTERNAL_ERROR, as grpcio's cancel does; `destroy quietly`, with NO_ERROR.
 */
function rawCall(
  headers: OutgoingHttpHeaders,
  body: Buffer,
  options: {
    delayMs?: number;
    reset?: 'close' | 'destroy' | 'destroy quietly';
    path?: string;
  } = {},
): Promise<Answer> {
  const session = connect(stack.url);
  const stream = session.request({
    ':method': 'POST',
    ':path': `/${options.path ?? GREET}`,
    te: 'trailers',
    ...headers,
  });
  const answer: Answer = { headers: {}, trailers: {}, body: '', rstCode: undefined };
  stream.on('response', (received) => {
    answer.status = Number(received[':status']);
    answer.headers = received;
  });
  stream.on('trailers', (received) => {
    answer.trailers = received;
  });
  stream.on('data', (chunk: Buffer) => {
    answer.body += chunk.toString('latin1');
  });
  stream.on('error', () => {});
  const { delayMs = 0, reset } = options;
  stream.write(body.subarray(0, 3));
  const rest = setTimeout(() => {
    if (stream.closed) return;
    if (reset === 'close') stream.close(constants.NGHTTP2_CANCEL);
    else if (reset === 'destroy') stream.destroy(new Error('the client gives up'));
    // Without an error, Node resets with NO_ERROR.
    else if (reset === 'destroy quietly') stream.destroy();
    else stream.end(body.subarray(3));
  }, delayMs);
  return new Promise((resolve) => {
    stream.on('close', () => {
      clearTimeout(rest);
      answer.rstCode = stream.rstCode;
      session.close();
      resolve(answer);
    });
  });
}

/** The trace's SERVER spans and access lines, once its one SERVER span has been exported. */
async function recordsOf(traceId: string) {
  const accessLine = await stack.accessLineOf(traceId);
  // In request export mode, a span that ends after its answer waits for the next flush.
  await stack.flushSpans();
  const spans = await stack.spansOf(traceId, (all) => all.some((span) => span.kind === 'SERVER'));
  // Whatever else may still come (a second record would come with the first).
  await new Promise((resolve) => setTimeout(resolve, 100));
  await stack.flushSpans();
  const servers = stack.receiver
    .spans()
    .filter((span) => span.traceId === traceId && span.kind === 'SERVER');
  const lines = stack.logs.filter(
    (line) =>
      line['logging.googleapis.com/trace'] === `projects/test-project/traces/${traceId}` &&
      line.httpRequest !== undefined,
  );
  expect(servers).toHaveLength(1);
  expect(lines).toHaveLength(1);
  return { span: spans.find((span) => span.kind === 'SERVER'), accessLine };
}

describe('a deadline that passes before the request body has arrived', () => {
  it.each([
    {
      protocol: 'Connect',
      system: 'connectrpc',
      status: 'deadline_exceeded',
      httpStatus: 504,
      headers: { 'content-type': 'application/json', 'connect-timeout-ms': `${DEADLINE_MS}` },
      body: json,
    },
    {
      protocol: 'gRPC with JSON',
      system: 'grpc',
      status: 'DEADLINE_EXCEEDED',
      httpStatus: 200,
      headers: { 'content-type': 'application/grpc+json', 'grpc-timeout': `${DEADLINE_MS}m` },
      body: framed(json),
    },
    {
      protocol: 'gRPC-Web',
      system: 'grpc',
      status: 'DEADLINE_EXCEEDED',
      httpStatus: 200,
      headers: { 'content-type': 'application/grpc-web+proto', 'grpc-timeout': `${DEADLINE_MS}m` },
      body: framed(proto),
    },
    {
      protocol: 'gRPC (the fast path)',
      system: 'grpc',
      status: 'DEADLINE_EXCEEDED',
      httpStatus: 200,
      headers: { 'content-type': 'application/grpc', 'grpc-timeout': `${DEADLINE_MS}m` },
      body: framed(proto),
    },
  ])(
    'over $protocol: a server fault, recorded from the call’s arrival to its answer',
    async ({ system, status, httpStatus, headers, body }) => {
      const parent = newTraceParent();
      const answer = await rawCall({ ...headers, traceparent: parent.header }, body, {
        delayMs: LATE_MS,
      });
      expect(answer.status).toBe(httpStatus);
      const { span, accessLine } = await recordsOf(parent.traceId);
      expect(span).toMatchObject({
        name: GREET,
        status: { code: 'ERROR' },
        attributes: {
          'rpc.system.name': system,
          'rpc.method': GREET,
          'rpc.status_code': status,
          'error.type': status,
          'network.peer.address': '127.0.0.1',
          'server.address': '127.0.0.1',
        },
      });
      expect(span?.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
        'exception.type': 'ConnectError',
      });
      // From the headers' arrival, not from when the deadline struck.
      expect(span?.durationMs).toBeGreaterThanOrEqual(DEADLINE_MS - 20);
      expect(accessLine).toMatchObject({
        severity: 'ERROR',
        message: `POST /${GREET} DEADLINE_EXCEEDED`,
        httpRequest: { status: httpStatus, protocol: 'HTTP/2' },
        rpc: { system, method: GREET, grpcStatusCode: Code.DeadlineExceeded },
      });
      expect(
        Number.parseFloat(String((accessLine.httpRequest as { latency: string }).latency)),
      ).toBeGreaterThanOrEqual((DEADLINE_MS - 20) / 1000);
      await stack.durationPoint('rpc.server.call.duration', {
        'rpc.method': GREET,
        'rpc.system.name': system,
        'rpc.status_code': status,
        'error.type': status,
      });
    },
  );
});

describe('a client that resets its stream before its request body has arrived', () => {
  it.each([
    { protocol: 'Connect', system: 'connectrpc', reset: 'close' },
    { protocol: 'Connect', system: 'connectrpc', reset: 'destroy' },
    { protocol: 'gRPC-Web', system: 'grpc', reset: 'close' },
    { protocol: 'gRPC-Web', system: 'grpc', reset: 'destroy' },
    { protocol: 'Connect', system: 'connectrpc', reset: 'destroy quietly' },
  ] as const)(
    'over $protocol, by $reset: CANCELLED with 499, the client’s doing',
    async ({ protocol, system, reset }) => {
      const parent = newTraceParent();
      const [contentType, body] =
        protocol === 'Connect'
          ? ['application/json', json]
          : ['application/grpc-web+proto', framed(proto)];
      const answer = await rawCall(
        { 'content-type': contentType, traceparent: parent.header },
        body,
        {
          delayMs: 100,
          reset,
        },
      );
      expect(answer.status).toBeUndefined();
      const { span, accessLine } = await recordsOf(parent.traceId);
      const status = system === 'grpc' ? 'CANCELLED' : 'canceled';
      expect(span).toMatchObject({
        name: GREET,
        status: { code: 'UNSET' },
        attributes: { 'rpc.system.name': system, 'rpc.status_code': status },
      });
      expect(span?.attributes['error.type']).toBeUndefined();
      expect(accessLine).toMatchObject({
        severity: 'INFO',
        message: `POST /${GREET} CANCELLED`,
        httpRequest: { status: 499 },
      });
    },
  );
});

describe('a request Connect refuses as it reads it', () => {
  it('a Connect body that is not JSON: INVALID_ARGUMENT, the caller’s error', async () => {
    const parent = newTraceParent();
    const answer = await rawCall(
      { 'content-type': 'application/json', traceparent: parent.header },
      Buffer.from('{"name":'),
    );
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'invalid_argument' });
    const { span, accessLine } = await recordsOf(parent.traceId);
    expect(span).toMatchObject({
      name: GREET,
      status: { code: 'UNSET' },
      attributes: { 'rpc.system.name': 'connectrpc', 'rpc.status_code': 'invalid_argument' },
    });
    expect(accessLine).toMatchObject({
      severity: 'INFO',
      message: `POST /${GREET} INVALID_ARGUMENT`,
      httpRequest: { status: 400 },
      rpc: { grpcStatusCode: Code.InvalidArgument },
    });
  });

  it.each([
    {
      what: 'a GET of a method that has side effects',
      headers: { ':method': 'GET' },
      path: `${GREET}?encoding=json&message=%7B%7D`,
      method: GREET,
      status: 405,
    },
    {
      what: 'a plain JSON POST to a streaming method',
      headers: { 'content-type': 'application/json' },
      path: STREAM,
      method: STREAM,
      status: 415,
    },
  ])(
    '$what: its HTTP status, and no RPC status, as it never became a call',
    async ({ headers, path, method, status }) => {
      const parent = newTraceParent();
      const verb = headers[':method'] ?? 'POST';
      const answer = await rawCall({ ...headers, traceparent: parent.header }, Buffer.alloc(0), {
        path,
      });
      expect(answer.status).toBe(status);
      const { span, accessLine } = await recordsOf(parent.traceId);
      expect(span).toMatchObject({
        name: method,
        status: { code: 'UNSET' },
        attributes: { 'rpc.method': method },
      });
      expect(span?.attributes['rpc.status_code']).toBeUndefined();
      expect(accessLine).toMatchObject({
        severity: 'INFO',
        message: `${verb} /${method} ${status}`,
        httpRequest: { status },
      });
      expect(accessLine.rpc).toBeUndefined();
    },
  );
});

it.each([
  ['gRPC-Web', 'application/grpc-web+proto'],
  ['gRPC with JSON', 'application/grpc+json'],
])(
  'a message over the limit over %s, its caller still sending: recorded once answered',
  async (_, contentType) => {
    const parent = newTraceParent();
    const session = connect(stack.url);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': `/${GREET}`,
        'content-type': contentType,
        te: 'trailers',
        traceparent: parent.header,
      });
      stream.on('error', () => {});
      // An envelope declaring 5 MiB, part of it sent, the request left open.
      const header = Buffer.alloc(5);
      header.writeUInt32BE(5 * 1024 * 1024, 1);
      stream.write(Buffer.concat([header, Buffer.alloc(64 * 1024, 0x61)]));
      let answer = '';
      stream.on('data', (chunk: Buffer) => {
        answer += chunk.toString('latin1');
      });
      stream.on('trailers', (trailers) => {
        answer += `grpc-status: ${trailers['grpc-status']}`;
      });
      await new Promise((resolve) => stream.once('end', resolve));
      expect(answer).toMatch(/grpc-status: ?8/);
      const { span, accessLine } = await recordsOf(parent.traceId);
      expect(span).toMatchObject({
        name: GREET,
        attributes: { 'rpc.status_code': 'RESOURCE_EXHAUSTED' },
      });
      expect(accessLine).toMatchObject({
        severity: 'INFO',
        message: `POST /${GREET} RESOURCE_EXHAUSTED`,
      });
    } finally {
      session.destroy();
    }
  },
);

it('an answered call is recorded once, by its interceptor, from its arrival', async () => {
  const parent = newTraceParent();
  const answer = await rawCall(
    { 'content-type': 'application/json', traceparent: parent.header },
    json,
    { delayMs: 150 },
  );
  expect(answer.status).toBe(200);
  const { span, accessLine } = await recordsOf(parent.traceId);
  expect(span).toMatchObject({ name: GREET, attributes: { 'rpc.status_code': 'ok' } });
  // The interceptor runs once the body has been read: the span starts before, at arrival.
  expect(span?.durationMs).toBeGreaterThanOrEqual(130);
  expect(accessLine).toMatchObject({ severity: 'INFO', message: `POST /${GREET} OK` });
});
