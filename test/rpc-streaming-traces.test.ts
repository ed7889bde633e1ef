import { once } from 'node:events';
import { connect, constants } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { create, type MessageInitShape, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ReceivedSpan } from '../tools/otlp-receiver/index.ts';
import { ScriptSchema } from './fixtures/streaming-test-service.js';
import {
  inTrace,
  type Protocol,
  startTracedBackend,
  type TracedBackend,
} from './helpers/traced-backend.js';
import { newTraceParent } from './helpers/traces.js';

vi.mock('../src/rpc/index.js', async (importOriginal) => {
  const { withStreamingTestService } = await import('./fixtures/streaming-test-service.js');
  return withStreamingTestService(await importOriginal());
});

/*
 * Streaming RPCs end when their stream ends: the backend's SERVER span, duration point and
 * access line, and the api's CLIENT span and duration point, each with the status the client
 * really got; the handler runs inside its request's trace. Real server, real clients, the
 * telemetry a role starts, in request export mode.
 */

const STREAM = 'streaming_test.v1.StreamingTestService/Stream';
const COLLECT = 'streaming_test.v1.StreamingTestService/Collect';
const ECHO = 'streaming_test.v1.StreamingTestService/Echo';
const PROTOCOLS: Protocol[] = ['grpc', 'grpcweb', 'connect'];
/** gRPC-Web over Connect's transports streams only from the server. */
const BIDI_PROTOCOLS: Protocol[] = ['grpc', 'connect'];

let stack: TracedBackend;
beforeAll(async () => {
  stack = await startTracedBackend(60_000);
});
afterAll(async () => {
  await stack?.close();
});

type Read<T> = { messages: T[]; error: ConnectError | undefined };

async function readAll<T>(messages: AsyncIterable<T>): Promise<Read<T>> {
  const read: Read<T> = { messages: [], error: undefined };
  try {
    for await (const message of messages) read.messages.push(message);
  } catch (error) {
    read.error = ConnectError.from(error);
  }
  return read;
}

async function* scripts(list: MessageInitShape<typeof ScriptSchema>[]) {
  for (const script of list) yield script;
}

function serverSpan(spans: ReceivedSpan[]): ReceivedSpan {
  const found = spans.find((span) => span.kind === 'SERVER');
  if (!found) throw new Error(`no SERVER span in ${JSON.stringify(spans.map((s) => s.name))}`);
  return found;
}

const hasServerSpan = (spans: ReceivedSpan[]) => spans.some((span) => span.kind === 'SERVER');
const statusName = (protocol: Protocol, grpcName: string) =>
  protocol === 'connect' ? grpcName.toLowerCase().replace('cancelled', 'canceled') : grpcName;
const system = (protocol: Protocol) => (protocol === 'connect' ? 'connectrpc' : 'grpc');
const seconds = (line: Record<string, unknown>) =>
  Number.parseFloat((line.httpRequest as { latency: string }).latency);

describe.each(PROTOCOLS)('a server-streaming call over %s', (protocol) => {
  it('is one SERVER span, duration and access line, ended with the stream; the handler runs in its trace', async () => {
    const parent = newTraceParent();
    const headers = { traceparent: parent.header, baggage: 'enduser.id=u-1' };
    const read = await readAll(
      stack.client(protocol).stream({ text: 'hi', count: 3, intervalMs: 60 }, { headers }),
    );
    expect(read.error).toBeUndefined();
    expect(read.messages.map((message) => message.index)).toEqual([0, 1, 2]);

    // Request mode: the stream's end waited for its spans' export, children included.
    const spans = stack.receiver.spans().filter((span) => span.traceId === parent.traceId);
    const server = serverSpan(spans);
    expect(server).toMatchObject({
      name: STREAM,
      parentSpanId: parent.spanId,
      status: { code: 'UNSET' },
      attributes: {
        'rpc.system.name': system(protocol),
        'rpc.method': STREAM,
        'rpc.status_code': statusName(protocol, 'OK'),
        'enduser.id': 'u-1',
        'app.sent': 3,
      },
    });
    expect(server.durationMs).toBeGreaterThanOrEqual(170);
    const children = spans.filter((span) => span.kind === 'INTERNAL');
    expect(children.map((span) => span.name).sort()).toEqual(['sent 0', 'sent 1', 'sent 2']);
    for (const child of children) {
      expect(child.parentSpanId).toBe(server.spanId);
      expect(child.attributes['enduser.id']).toBe('u-1');
    }

    const line = await stack.accessLineOf(parent.traceId);
    expect(line).toMatchObject({
      severity: 'INFO',
      message: `POST /${STREAM} OK`,
      httpRequest: { requestMethod: 'POST', requestUrl: `/${STREAM}`, status: 200 },
      rpc: { system: system(protocol), method: STREAM, grpcStatus: 'OK', grpcStatusCode: 0 },
      'logging.googleapis.com/spanId': server.spanId,
    });
    expect(seconds(line)).toBeGreaterThanOrEqual(0.17);
    const point = await stack.durationPoint('rpc.server.call.duration', {
      'rpc.method': STREAM,
      'rpc.system.name': system(protocol),
      'rpc.status_code': statusName(protocol, 'OK'),
    });
    expect(point.max).toBeGreaterThanOrEqual(0.17);
  });

  it('fails mid-stream: ERROR with the code the client got, the exception, an ERROR access line', async () => {
    const parent = newTraceParent();
    const read = await readAll(
      stack.client(protocol).stream(
        {
          text: 'failed on purpose',
          count: 5,
          intervalMs: 30,
          failAt: 2,
          failCode: Code.Internal,
        },
        { headers: { traceparent: parent.header } },
      ),
    );
    expect(read.messages).toHaveLength(2);
    expect(read.error?.code).toBe(Code.Internal);
    expect(read.error?.rawMessage).toBe('failed on purpose');

    const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
    const status = statusName(protocol, 'INTERNAL');
    expect(server).toMatchObject({
      status: { code: 'ERROR' },
      attributes: { 'rpc.status_code': status, 'error.type': status },
    });
    expect(server.durationMs).toBeGreaterThanOrEqual(55);
    expect(server.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
      'exception.type': 'ConnectError',
      'exception.message': '[internal] failed on purpose',
    });
    expect(await stack.accessLineOf(parent.traceId)).toMatchObject({
      severity: 'ERROR',
      message: `POST /${STREAM} INTERNAL`,
      httpRequest: { status: 200 },
      rpc: { grpcStatus: 'INTERNAL', grpcStatusCode: Code.Internal },
    });
    await stack.durationPoint('rpc.server.call.duration', {
      'rpc.method': STREAM,
      'rpc.system.name': system(protocol),
      'rpc.status_code': status,
      'error.type': status,
    });
  });

  it('fails before its first message with a caller error: not a server fault, logged at INFO with its code', async () => {
    const parent = newTraceParent();
    const read = await readAll(
      stack
        .client(protocol)
        .stream(
          { text: 'no such name', count: 3, failAt: 0, failCode: Code.InvalidArgument },
          { headers: { traceparent: parent.header } },
        ),
    );
    expect(read.error?.code).toBe(Code.InvalidArgument);
    const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
    expect(server.status.code).toBe('UNSET');
    expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, 'INVALID_ARGUMENT'));
    expect(server.attributes['error.type']).toBeUndefined();
    expect(await stack.accessLineOf(parent.traceId)).toMatchObject({
      severity: 'INFO',
      message: `POST /${STREAM} INVALID_ARGUMENT`,
      rpc: { grpcStatus: 'INVALID_ARGUMENT', grpcStatusCode: Code.InvalidArgument },
    });
  });

  it('fails, unary or streaming, with a message that ends in half an emoji: answered at once, the half replaced', async () => {
    const started = performance.now();
    const read = await readAll(
      stack
        .client(protocol)
        .stream(
          { text: 'no 😀', failAt: 0, failCode: Code.InvalidArgument, cutMessage: true },
          { timeoutMs: 5_000 },
        ),
    );
    expect(read.error?.code).toBe(Code.InvalidArgument);
    expect(read.error?.rawMessage).toBe('no \uFFFD');
    const unary = await stack
      .client(protocol)
      .wait(
        { text: 'no 😀', failCode: Code.InvalidArgument, cutMessage: true },
        { timeoutMs: 5_000 },
      )
      .catch((error: unknown) => ConnectError.from(error));
    expect(unary).toMatchObject({ code: Code.InvalidArgument, rawMessage: 'no \uFFFD' });
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('a handler’s bug mid-stream is INTERNAL on the wire and in the span, which records the bug', async () => {
    const parent = newTraceParent();
    const read = await readAll(
      stack
        .client(protocol)
        .stream(
          { text: 'undefined is not a function', count: 3, failAt: 1, failPlain: true },
          { headers: { traceparent: parent.header } },
        ),
    );
    expect(read.messages).toHaveLength(1);
    expect(read.error?.code).toBe(Code.Internal);
    expect(read.error?.rawMessage).toBe('internal error');
    const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
    expect(server.status.code).toBe('ERROR');
    expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, 'INTERNAL'));
    expect(server.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
      'exception.type': 'TypeError',
      'exception.message': 'undefined is not a function',
    });
  });

  it.each([
    { handler: 'watches its signal', ignoreSignal: false },
    { handler: 'ignores its signal', ignoreSignal: true },
  ])(
    'ends CANCELLED when the client goes away mid-stream and the handler $handler',
    async ({ ignoreSignal }) => {
      const parent = newTraceParent();
      const controller = new AbortController();
      const messages = stack
        .client(protocol)
        .stream(
          { text: 'long', count: 100, intervalMs: 40, ignoreSignal },
          { headers: { traceparent: parent.header }, signal: controller.signal },
        );
      for await (const message of messages) {
        if (message.index === 1) break;
      }
      controller.abort();
      const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
      expect(server.status.code).toBe('UNSET');
      expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, 'CANCELLED'));
      expect(server.durationMs).toBeGreaterThanOrEqual(75);
      expect(server.durationMs).toBeLessThan(3_000);
      expect(await stack.accessLineOf(parent.traceId)).toMatchObject({
        severity: 'INFO',
        rpc: { grpcStatus: 'CANCELLED', grpcStatusCode: Code.Canceled },
      });
    },
  );
});

describe.each(BIDI_PROTOCOLS)('client-streaming and bidi calls over %s', (protocol) => {
  it('a bidi call is traced to its end, its handler in its trace', async () => {
    const parent = newTraceParent();
    const read = await readAll(
      stack.client(protocol).echo(
        scripts([
          { text: 'a', intervalMs: 50 },
          { text: 'b', intervalMs: 50 },
          { text: 'c', intervalMs: 50 },
        ]),
        { headers: { traceparent: parent.header, baggage: 'enduser.id=u-2' } },
      ),
    );
    expect(read.error).toBeUndefined();
    expect(read.messages.map((message) => message.text)).toEqual(['a', 'b', 'c']);
    const spans = stack.receiver.spans().filter((span) => span.traceId === parent.traceId);
    const server = serverSpan(spans);
    expect(server.name).toBe(ECHO);
    expect(server.status.code).toBe('UNSET');
    expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, 'OK'));
    expect(server.attributes['app.echoed']).toBe(3);
    expect(server.durationMs).toBeGreaterThanOrEqual(140);
    const children = spans.filter((span) => span.kind === 'INTERNAL');
    expect(children.map((child) => child.name).sort()).toEqual([
      'echoed 0',
      'echoed 1',
      'echoed 2',
      'ended 3',
    ]);
    for (const child of children) {
      expect(child.parentSpanId).toBe(server.spanId);
      expect(child.attributes['enduser.id']).toBe('u-2');
    }
  });

  it('a bidi call that fails mid-stream is ERROR with its code', async () => {
    const parent = newTraceParent();
    const read = await readAll(
      stack
        .client(protocol)
        .echo(
          scripts([
            { text: 'a' },
            { text: 'b' },
            { text: 'lost', failAt: 2, failCode: Code.DataLoss },
          ]),
          { headers: { traceparent: parent.header } },
        ),
    );
    expect(read.messages).toHaveLength(2);
    expect(read.error?.code).toBe(Code.DataLoss);
    const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
    expect(server.status.code).toBe('ERROR');
    expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, 'DATA_LOSS'));
    expect(await stack.accessLineOf(parent.traceId)).toMatchObject({
      severity: 'ERROR',
      rpc: { method: ECHO, grpcStatus: 'DATA_LOSS', grpcStatusCode: Code.DataLoss },
    });
  });

  it.each([
    { outcome: 'OK', last: { text: 'c' }, code: undefined },
    {
      outcome: 'INVALID_ARGUMENT',
      last: { text: 'bad', failAt: 2, failCode: Code.InvalidArgument },
      code: Code.InvalidArgument,
    },
  ])(
    'a client-streaming call ending $outcome is traced with its handler',
    async ({ outcome, last, code }) => {
      const parent = newTraceParent();
      let error: ConnectError | undefined;
      try {
        await stack
          .client(protocol)
          .collect(scripts([{ text: 'a', intervalMs: 40 }, { text: 'b', intervalMs: 40 }, last]), {
            headers: { traceparent: parent.header },
          });
      } catch (thrown) {
        error = ConnectError.from(thrown);
      }
      expect(error?.code).toBe(code);
      const spans = await stack.spansOf(parent.traceId, hasServerSpan);
      const server = serverSpan(spans);
      expect(server.name).toBe(COLLECT);
      expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, outcome));
      expect(server.durationMs).toBeGreaterThanOrEqual(75);
      const children = spans.filter((span) => span.kind === 'INTERNAL');
      expect(children.length).toBeGreaterThanOrEqual(2);
      for (const child of children) expect(child.parentSpanId).toBe(server.spanId);
    },
  );
});

describe('the api’s CLIENT spans of streaming calls', () => {
  /** The trace's CLIENT span, once exported (it ends after its call's SERVER span was flushed). */
  async function clientSpan(traceId: string): Promise<ReceivedSpan> {
    await stack.flushSpans();
    const spans = await stack.spansOf(traceId, (all) => all.some((s) => s.kind === 'CLIENT'));
    const client = spans.find((span) => span.kind === 'CLIENT');
    if (!client) throw new Error('unreachable');
    const server = spans.find((span) => span.kind === 'SERVER');
    if (server) expect(server.parentSpanId).toBe(client.spanId);
    return client;
  }

  it('ends with the stream, OK, its duration recorded', async () => {
    const parent = newTraceParent();
    const read = await inTrace(parent.header, () =>
      readAll(stack.api.stream({ text: 'hi', count: 3, intervalMs: 60 })),
    );
    expect(read.messages).toHaveLength(3);
    const client = await clientSpan(parent.traceId);
    expect(client).toMatchObject({
      name: STREAM,
      parentSpanId: parent.spanId,
      status: { code: 'UNSET' },
      attributes: { 'rpc.status_code': 'OK', 'rpc.method': STREAM },
    });
    expect(client.durationMs).toBeGreaterThanOrEqual(170);
    const point = await stack.durationPoint('rpc.client.call.duration', {
      'rpc.method': STREAM,
      'rpc.status_code': 'OK',
    });
    expect(point.max).toBeGreaterThanOrEqual(0.17);
  });

  it.each([
    {
      kind: 'server-streaming',
      method: STREAM,
      call: () =>
        readAll(
          stack.api.stream({
            text: 'boom',
            count: 5,
            intervalMs: 30,
            failAt: 2,
            failCode: Code.Internal,
          }),
        ),
      status: 'INTERNAL',
    },
    {
      kind: 'client-streaming',
      method: COLLECT,
      call: async () => {
        try {
          await stack.api.collect(
            scripts([{ text: 'a' }, { text: 'bad', failAt: 1, failCode: 3 }]),
          );
          return { error: undefined };
        } catch (error) {
          return { error: ConnectError.from(error) };
        }
      },
      status: 'INVALID_ARGUMENT',
    },
    {
      kind: 'bidi',
      method: ECHO,
      call: () =>
        readAll(stack.api.echo(scripts([{ text: 'a' }, { text: 'x', failAt: 1, failCode: 10 }]))),
      status: 'ABORTED',
    },
  ])('a $kind call that fails is ERROR with its code', async ({ method, call, status }) => {
    const parent = newTraceParent();
    const { error } = await inTrace(parent.header, call);
    expect(error).toBeInstanceOf(ConnectError);
    const client = await clientSpan(parent.traceId);
    expect(client).toMatchObject({
      name: method,
      status: { code: 'ERROR' },
      attributes: { 'rpc.status_code': status, 'error.type': status },
    });
    expect(client.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
      'exception.type': 'ConnectError',
    });
    await stack.durationPoint('rpc.client.call.duration', {
      'rpc.method': method,
      'rpc.status_code': status,
      'error.type': status,
    });
  });

  it('ends DEADLINE_EXCEEDED at the call’s deadline', async () => {
    const parent = newTraceParent();
    const read = await inTrace(parent.header, () =>
      readAll(stack.api.stream({ text: 'slow', count: 100, intervalMs: 50 }, { timeoutMs: 300 })),
    );
    expect(read.error?.code).toBe(Code.DeadlineExceeded);
    const client = await clientSpan(parent.traceId);
    expect(client.status.code).toBe('ERROR');
    expect(client.attributes['rpc.status_code']).toBe('DEADLINE_EXCEEDED');
    expect(client.durationMs).toBeGreaterThanOrEqual(290);
    expect(client.durationMs).toBeLessThan(3_000);
  });

  it.each([
    ['its caller gives up', () => ({ signal: AbortSignal.timeout(250) }), 'CANCELLED'],
    // The backend's own deadline, the same, may end the call first.
    ['its deadline passes', () => ({ timeoutMs: 250 }), /^(CANCELLED|DEADLINE_EXCEEDED)$/],
  ])(
    'an upload cut short because %s is no whole upload to the backend',
    async (_why, options, status) => {
      const parent = newTraceParent();
      async function* unfinished() {
        yield { text: 'a' };
        yield { text: 'b' };
        await sleep(1_000);
        yield { text: 'late' };
      }
      const call = inTrace(parent.header, () => stack.api.collect(unfinished(), options()));
      await expect(call).rejects.toBeInstanceOf(ConnectError);
      const spans = await stack.spansOf(parent.traceId, hasServerSpan);
      expect(serverSpan(spans).attributes['rpc.status_code']).toMatch(status);
      const names = spans.map((span) => span.name);
      expect(names).toContain('received 1');
      expect(names.filter((name) => name.startsWith('ended'))).toEqual([]);
    },
  );

  it('keeps the reason of a caller’s own time limit, as a unary call does (the api answers it 504)', async () => {
    async function* slowUpload() {
      yield { text: 'a' };
      await sleep(1_000);
    }
    const failures = [
      stack.api.collect(slowUpload(), { signal: AbortSignal.timeout(100) }),
      (async () => {
        const messages = stack.api.stream(
          { text: 'long', count: 100, intervalMs: 40 },
          { signal: AbortSignal.timeout(100) },
        );
        for await (const _ of messages);
      })(),
      stack.api.wait({ text: 'slow', intervalMs: 1_000 }, { signal: AbortSignal.timeout(100) }),
    ];
    for (const failure of failures) {
      const error = await failure.then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.Canceled);
      expect((error as ConnectError).cause).toMatchObject({ name: 'TimeoutError' });
    }
  });

  it('ends CANCELLED when the caller gives up, even without reading on', async () => {
    const parent = newTraceParent();
    const controller = new AbortController();
    const messages = inTrace(parent.header, () =>
      stack.api.stream({ text: 'long', count: 100, intervalMs: 40 }, { signal: controller.signal }),
    );
    for await (const message of messages) {
      if (message.index === 1) break;
    }
    controller.abort();
    const client = await clientSpan(parent.traceId);
    expect(client.status.code).toBe('ERROR');
    expect(client.attributes['rpc.status_code']).toBe('CANCELLED');
    expect(client.durationMs).toBeLessThan(3_000);
  });
});

describe('calls the client resets, sent with raw HTTP/2', () => {
  const WAIT = 'streaming_test.v1.StreamingTestService/Wait';

  function framed(script: MessageInitShape<typeof ScriptSchema>): Buffer {
    const message = toBinary(ScriptSchema, create(ScriptSchema, script));
    const frame = Buffer.alloc(5 + message.byteLength);
    frame.writeUInt32BE(message.byteLength, 1);
    frame.set(message, 5);
    return frame;
  }

  /**
   * Sends `scripts` without ending the request, then resets the stream with `code` once the
   * handler has made the span named `handled` (or, without it, once the backend has read the
   * frames sent: a PING is answered after them). Node's `close(code)` ends the request first;
   * `'unended'` resets it without (INTERNAL_ERROR), as grpcio's cancel and a proxy whose caller
   * left do (with CANCEL).
   */
  /** Waits for the span named `name`, flushing: request mode holds spans until the call ends. */
  async function handlerMade(traceId: string, name: string): Promise<void> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      await stack.flushSpans();
      const spans = stack.receiver.spans();
      if (spans.some((span) => span.traceId === traceId && span.name === name)) return;
      if (Date.now() > deadline) throw new Error(`the handler made no span "${name}" in 5 s`);
      await sleep(20);
    }
  }

  async function resetMidCall(
    path: string,
    list: MessageInitShape<typeof ScriptSchema>[],
    code: number | 'unended',
    parent: { header: string; traceId: string },
    handled?: string,
  ): Promise<void> {
    const session = connect(stack.url);
    session.on('error', () => {});
    const stream = session.request({
      ':method': 'POST',
      ':path': `/${path}`,
      'content-type': 'application/grpc',
      te: 'trailers',
      traceparent: parent.header,
    });
    stream.on('error', () => {});
    for (const script of list) stream.write(framed(script));
    if (handled === undefined) {
      if (session.connecting) await once(session, 'connect');
      await new Promise((resolve, reject) =>
        session.ping((error) => (error ? reject(error) : resolve(undefined))),
      );
    } else {
      await handlerMade(parent.traceId, handled);
    }
    const closed = new Promise((resolve) => stream.once('close', resolve));
    if (code === 'unended') stream.destroy(new Error('the client gives up'));
    else stream.close(code);
    await closed;
    session.close();
  }

  it.each([
    ['CANCEL', constants.NGHTTP2_CANCEL],
    // What Connect's clients send at their own deadline.
    ['INTERNAL_ERROR', constants.NGHTTP2_INTERNAL_ERROR],
    // Connect maps it to UNAVAILABLE, as the drain's notice is: still the client's doing.
    ['REFUSED_STREAM', constants.NGHTTP2_REFUSED_STREAM],
  ])('a unary call reset with %s is CANCELLED, not a server fault', async (_name, code) => {
    const parent = newTraceParent();
    await resetMidCall(WAIT, [{ text: 'slow', intervalMs: 5_000 }], code, parent);
    const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
    expect(server.attributes['rpc.status_code']).toBe('CANCELLED');
    expect(server.status.code).not.toBe('ERROR');
    expect(await stack.accessLineOf(parent.traceId)).toMatchObject({ severity: 'INFO' });
  });

  it('a unary call reset before its request ended never reaches its handler', async () => {
    const parent = newTraceParent();
    await resetMidCall(WAIT, [{ text: 'whole message, no end' }], 'unended', parent);
    const spans = await stack.spansOf(parent.traceId, hasServerSpan);
    expect(serverSpan(spans).attributes['rpc.status_code']).toBe('CANCELLED');
    expect(spans.map((span) => span.name).filter((name) => name.startsWith('waited'))).toEqual([]);
  });

  it.each([
    ['client-streaming', COLLECT, 'received 1'],
    ['bidi', ECHO, 'echoed 1'],
  ])(
    'a %s upload reset before its end fails in the handler as CANCELLED, the client’s doing',
    async (_kind, path, handled) => {
      const parent = newTraceParent();
      await resetMidCall(path, [{ text: 'a' }, { text: 'b' }], 'unended', parent, handled);
      const spans = await stack.spansOf(parent.traceId, hasServerSpan);
      expect(serverSpan(spans).attributes['rpc.status_code']).toBe('CANCELLED');
      const names = spans.map((span) => span.name);
      expect(names.filter((name) => name.endsWith(' 1'))).toHaveLength(1);
      expect(names.filter((name) => name.startsWith('ended'))).toEqual([]);
    },
  );

  it('a gRPC content type in upper case is traced as gRPC', async () => {
    const parent = newTraceParent();
    const session = connect(stack.url);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': `/${WAIT}`,
        'content-type': 'Application/GRPC',
        te: 'trailers',
        traceparent: parent.header,
      });
      stream.end(framed({ text: 'hi' }));
      stream.resume();
      await new Promise((resolve) => stream.once('close', resolve));
    } finally {
      session.close();
    }
    const server = serverSpan(await stack.spansOf(parent.traceId, hasServerSpan));
    expect(server.attributes['rpc.system.name']).toBe('grpc');
  });
});
