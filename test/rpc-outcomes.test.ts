import type { MessageInitShape } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { createGrpcTestTransport } from './fixtures/grpc/create-grpc-test-transport.js';
import type { ScriptSchema } from './fixtures/streaming-test-service.js';
import { grpcCallTo, postGreet } from './helpers/http.js';
import { rolesExportingForSuite } from './helpers/roles.js';
import { type Protocol, startTracedBackend, type TracedBackend } from './helpers/traced-backend.js';
import { newTraceParent, waitForGreetTrace } from './helpers/traces.js';

vi.mock('../src/rpc/index.js', async (importOriginal) => {
  const { withStreamingTestService } = await import('./fixtures/streaming-test-service.js');
  return withStreamingTestService(await importOriginal());
});

/*
 * What a call ended with is said alike on the wire, on its SERVER span, in its duration point
 * and on its access line: a handler stopped by the deadline cap, a bug, a caller's error. The
 * access line carries the gRPC status, and exceptions are typed by their class's name, in the
 * production bundle too.
 */

const WAIT = 'streaming_test.v1.StreamingTestService/Wait';
const STREAM = 'streaming_test.v1.StreamingTestService/Stream';
/** GRPC_MAX_TIMEOUT_MS: every call here asks for a longer deadline. */
const CAP_MS = 600;
const PROTOCOLS: Protocol[] = ['grpc', 'grpcweb', 'connect'];

let stack: TracedBackend;
beforeAll(async () => {
  stack = await startTracedBackend(CAP_MS);
});
afterAll(async () => {
  await stack?.close();
});

const system = (protocol: Protocol) => (protocol === 'connect' ? 'connectrpc' : 'grpc');
const statusName = (protocol: Protocol, grpcName: string) =>
  protocol === 'connect' ? grpcName.toLowerCase().replace('cancelled', 'canceled') : grpcName;
/** The HTTP status of a unary answer: gRPC's is 200 whatever the outcome. */
const unaryHttpStatus = (protocol: Protocol, connectStatus: number) =>
  protocol === 'connect' ? connectStatus : 200;

async function waitFor(
  protocol: Protocol,
  script: MessageInitShape<typeof ScriptSchema>,
  options: { signal?: AbortSignal } = {},
): Promise<{ traceId: string; error: ConnectError | undefined; ms: number }> {
  const parent = newTraceParent();
  const started = performance.now();
  try {
    await stack.client(protocol).wait(script, {
      headers: { traceparent: parent.header },
      timeoutMs: 10_000,
      ...options,
    });
    return { traceId: parent.traceId, error: undefined, ms: performance.now() - started };
  } catch (error) {
    return {
      traceId: parent.traceId,
      error: ConnectError.from(error),
      ms: performance.now() - started,
    };
  }
}

async function serverSpanOf(traceId: string) {
  const spans = await stack.spansOf(traceId, (all) => all.some((span) => span.kind === 'SERVER'));
  const span = spans.find((candidate) => candidate.kind === 'SERVER');
  if (!span) throw new Error('unreachable');
  return span;
}

describe.each(PROTOCOLS)('over %s', (protocol) => {
  it('a unary handler that awaits with its signal, stopped by the deadline cap: DEADLINE_EXCEEDED everywhere', async () => {
    // `await setTimeout(5000, v, { signal })` rejects with an AbortError at the cap.
    const { traceId, error, ms } = await waitFor(protocol, { text: 'slow', intervalMs: 5_000 });
    expect(error?.code).toBe(Code.DeadlineExceeded);
    expect(ms).toBeGreaterThanOrEqual(CAP_MS - 20);
    expect(ms).toBeLessThan(3_000);
    const status = statusName(protocol, 'DEADLINE_EXCEEDED');
    const server = await serverSpanOf(traceId);
    expect(server).toMatchObject({
      name: WAIT,
      status: { code: 'ERROR' },
      attributes: { 'rpc.status_code': status, 'error.type': status },
    });
    expect(server.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
      'exception.type': 'ConnectError',
      'exception.message': '[deadline_exceeded] the operation timed out',
    });
    expect(await stack.accessLineOf(traceId)).toMatchObject({
      severity: 'ERROR',
      message: `POST /${WAIT} DEADLINE_EXCEEDED`,
      httpRequest: { status: unaryHttpStatus(protocol, 504) },
      rpc: {
        system: system(protocol),
        method: WAIT,
        grpcStatus: 'DEADLINE_EXCEEDED',
        grpcStatusCode: Code.DeadlineExceeded,
      },
    });
    await stack.durationPoint('rpc.server.call.duration', {
      'rpc.method': WAIT,
      'rpc.system.name': system(protocol),
      'rpc.status_code': status,
      'error.type': status,
    });
  });

  it('a stream whose handler awaits with its signal, stopped by the deadline cap: DEADLINE_EXCEEDED everywhere', async () => {
    const parent = newTraceParent();
    const received: number[] = [];
    let error: ConnectError | undefined;
    try {
      const messages = stack
        .client(protocol)
        .stream(
          { text: 'slow', count: 100, intervalMs: 250 },
          { headers: { traceparent: parent.header }, timeoutMs: 10_000 },
        );
      for await (const message of messages) received.push(message.index);
    } catch (thrown) {
      error = ConnectError.from(thrown);
    }
    expect(error?.code).toBe(Code.DeadlineExceeded);
    // Messages at 250 and 500 ms; the third would come after the cap.
    expect(received.length).toBeGreaterThan(0);
    expect(received.length).toBeLessThan(3);
    const status = statusName(protocol, 'DEADLINE_EXCEEDED');
    const server = await serverSpanOf(parent.traceId);
    expect(server.status.code).toBe('ERROR');
    expect(server.attributes['rpc.status_code']).toBe(status);
    expect(await stack.accessLineOf(parent.traceId)).toMatchObject({
      severity: 'ERROR',
      httpRequest: { status: 200 },
      rpc: { method: STREAM, grpcStatus: 'DEADLINE_EXCEEDED' },
    });
  });

  it('a unary handler’s bug is INTERNAL on the wire, in the span (which records the bug), the metric and the log', async () => {
    const { traceId, error } = await waitFor(protocol, { text: 'x is undefined', failPlain: true });
    expect(error?.code).toBe(Code.Internal);
    expect(error?.rawMessage).toBe('internal error');
    const status = statusName(protocol, 'INTERNAL');
    const server = await serverSpanOf(traceId);
    expect(server).toMatchObject({
      status: { code: 'ERROR', message: 'x is undefined' },
      attributes: { 'rpc.status_code': status, 'error.type': status },
    });
    expect(server.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
      'exception.type': 'TypeError',
      'exception.message': 'x is undefined',
    });
    const line = await stack.accessLineOf(traceId);
    expect(line).toMatchObject({
      severity: 'ERROR',
      httpRequest: { status: unaryHttpStatus(protocol, 500) },
      rpc: { grpcStatus: 'INTERNAL', grpcStatusCode: Code.Internal },
      error: { message: 'x is undefined' },
    });
    await stack.durationPoint('rpc.server.call.duration', {
      'rpc.method': WAIT,
      'rpc.system.name': system(protocol),
      'rpc.status_code': status,
    });
  });

  it('a client that cancels a unary call its handler is waiting in: CANCELLED, not a server fault', async () => {
    const controller = new AbortController();
    const call = waitFor(
      protocol,
      { text: 'slow', intervalMs: 5_000 },
      { signal: controller.signal },
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    controller.abort();
    const { traceId, error } = await call;
    expect(error?.code).toBe(Code.Canceled);
    const server = await serverSpanOf(traceId);
    expect(server.status.code).toBe('UNSET');
    expect(server.attributes['rpc.status_code']).toBe(statusName(protocol, 'CANCELLED'));
    expect(server.durationMs).toBeLessThan(3_000);
    // Nothing was sent, in any protocol: 499, as the api logs a caller that left.
    expect(await stack.accessLineOf(traceId)).toMatchObject({
      severity: 'INFO',
      httpRequest: { status: 499 },
      rpc: { grpcStatus: 'CANCELLED', grpcStatusCode: Code.Canceled },
    });
  });

  it.each([
    { outcome: 'OK', script: { text: 'fine' }, severity: 'INFO', connectStatus: 200 },
    {
      outcome: 'INVALID_ARGUMENT',
      script: { text: 'bad name', failCode: Code.InvalidArgument },
      severity: 'INFO',
      connectStatus: 400,
    },
    {
      outcome: 'NOT_FOUND',
      script: { text: 'no such thing', failCode: Code.NotFound },
      severity: 'INFO',
      connectStatus: 404,
    },
    {
      outcome: 'INTERNAL',
      script: { text: 'failed on purpose', failCode: Code.Internal },
      severity: 'ERROR',
      connectStatus: 500,
    },
    {
      outcome: 'UNAVAILABLE',
      script: { text: 'try later', failCode: Code.Unavailable },
      severity: 'ERROR',
      connectStatus: 503,
    },
  ])(
    'an access line says $outcome, at $severity',
    async ({ outcome, script, severity, connectStatus }) => {
      const { traceId, error } = await waitFor(protocol, script);
      const code = error?.code ?? 0;
      expect(await stack.accessLineOf(traceId)).toEqual(
        expect.objectContaining({
          severity,
          message: `POST /${WAIT} ${outcome}`,
          httpRequest: expect.objectContaining({
            requestMethod: 'POST',
            requestUrl: `/${WAIT}`,
            status: unaryHttpStatus(protocol, connectStatus),
            protocol: 'HTTP/2',
          }),
          rpc: {
            system: system(protocol),
            method: WAIT,
            grpcStatus: outcome,
            grpcStatusCode: code,
          },
        }),
      );
    },
  );
});

it('an access line for a method the backend does not have says UNIMPLEMENTED', async () => {
  const parent = newTraceParent();
  const path = '/streaming_test.v1.StreamingTestService/Nope';
  expect(await grpcCallTo(stack.url, path, { traceparent: parent.header })).toBe('12');
  expect(await stack.accessLineOf(parent.traceId)).toMatchObject({
    severity: 'ERROR',
    message: `POST ${path} UNIMPLEMENTED`,
    httpRequest: { requestUrl: path, status: 200 },
    rpc: { system: 'grpc', method: '_OTHER', grpcStatus: 'UNIMPLEMENTED', grpcStatusCode: 12 },
  });
});

describe('the production bundle', () => {
  const roles = rolesExportingForSuite({
    OTEL_BSP_SCHEDULE_DELAY: '100',
    GOOGLE_CLOUD_PROJECT: 'test-project',
  });

  const backendAccessLine = async (traceId: string) => {
    const trace = `projects/test-project/traces/${traceId}`;
    await expect
      .poll(() =>
        roles.backend.logs().some((line) => line['logging.googleapis.com/trace'] === trace),
      )
      .toBe(true);
    return roles.backend.logs().find((line) => line['logging.googleapis.com/trace'] === trace);
  };

  it('types every exception by its class, renamed in the bundle or not', async () => {
    const parent = newTraceParent();
    const response = await postGreet(
      roles.api.url,
      { name: 'David', withError: true },
      { traceparent: parent.header },
    );
    expect(response.status).toBe(500);
    const trace = await waitForGreetTrace(roles.receiver, parent.traceId);
    for (const span of [trace.server, trace.client, trace.backend]) {
      const exception = span.events.find((event) => event.name === 'exception');
      expect(exception?.attributes['exception.type']).toBe('ConnectError');
      expect(exception?.attributes['exception.message']).toContain('greeting failed on purpose');
    }
    expect(await backendAccessLine(parent.traceId)).toMatchObject({
      severity: 'ERROR',
      message: 'POST /backend_service.v1.BackendService/Greet INTERNAL',
      rpc: { grpcStatus: 'INTERNAL', grpcStatusCode: Code.Internal },
    });
  });

  it('tells an INVALID_ARGUMENT call from an OK one on the backend’s access line', async () => {
    const grpc = createGrpcTestTransport(roles.backend.url);
    const client = createClient(BackendService, grpc.transport);
    try {
      const ok = newTraceParent();
      await client.greet({ name: 'David' }, { headers: { traceparent: ok.header } });
      const blank = newTraceParent();
      await expect(
        client.greet({ name: ' ' }, { headers: { traceparent: blank.header } }),
      ).rejects.toMatchObject({ code: Code.InvalidArgument });
      const path = '/backend_service.v1.BackendService/Greet';
      expect(await backendAccessLine(ok.traceId)).toMatchObject({
        severity: 'INFO',
        message: `POST ${path} OK`,
        httpRequest: { status: 200 },
        rpc: { system: 'grpc', grpcStatus: 'OK', grpcStatusCode: 0 },
      });
      expect(await backendAccessLine(blank.traceId)).toMatchObject({
        severity: 'INFO',
        message: `POST ${path} INVALID_ARGUMENT`,
        httpRequest: { status: 200 },
        rpc: { system: 'grpc', grpcStatus: 'INVALID_ARGUMENT', grpcStatusCode: 3 },
      });
    } finally {
      grpc.close();
    }
  });
});
