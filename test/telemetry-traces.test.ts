import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { postGreet } from './helpers/http.js';
import { type RoleProcess, startRole } from './helpers/roles.js';
import { newTraceParent, waitForGreetTrace } from './helpers/traces.js';

describe('one trace per request, end to end over h2c, exported over OTLP', () => {
  let receiver: OtlpReceiver;
  let backend: RoleProcess;
  let api: RoleProcess;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_METRIC_EXPORT_INTERVAL: '500',
      GOOGLE_CLOUD_PROJECT: 'test-project',
    };
    backend = await startRole('backend', { env });
    api = await startRole('api', { env: { ...env, BACKEND_URL: backend.url } });
  });
  afterAll(async () => {
    await Promise.all([api?.stop(), backend?.stop()]);
    await receiver?.close();
  });

  const greet = (body: unknown, headers: Record<string, string> = {}) =>
    postGreet(api.url, body, headers);

  it('links api SERVER → api CLIENT → backend SERVER under the caller’s traceparent', async () => {
    const parent = newTraceParent();
    const response = await greet(
      { name: 'David' },
      { traceparent: parent.header, 'user-agent': 'trace-test/1' },
    );
    expect(response.status).toBe(200);
    const { server, client, backend: rpc } = await waitForGreetTrace(receiver, parent.traceId);

    expect(server.parentSpanId).toBe(parent.spanId);
    expect(client.parentSpanId).toBe(server.spanId);
    expect(rpc.parentSpanId).toBe(client.spanId);

    expect(server.name).toBe('POST /greet');
    expect(server.status.code).toBe('UNSET');
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/greet',
      'http.response.status_code': 200,
      'url.scheme': 'http',
      'url.path': '/greet',
      'server.address': '127.0.0.1',
      'server.port': api.port,
      'user_agent.original': 'trace-test/1',
      'client.address': '127.0.0.1',
      'network.protocol.version': '1.1',
    });
    for (const span of [client, rpc]) {
      expect(span.name).toBe('backend_service.v1.BackendService/Greet');
      expect(span.attributes).toMatchObject({
        'rpc.system.name': 'grpc',
        'rpc.method': 'backend_service.v1.BackendService/Greet',
        'rpc.status_code': 'OK',
        'server.address': '127.0.0.1',
        'server.port': backend.port,
      });
    }
    expect(client.attributes['rpc.attempt']).toBe(1);
  });

  it('keeps the request’s trace when its body arrives after the headers', async () => {
    // Node emits a late body from the socket, outside the request's context; the handler must
    // still run inside the SERVER span.
    const parent = newTraceParent();
    const body = JSON.stringify({ name: 'Slow body' });
    const request = httpRequest(`${api.url}/greet`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        traceparent: parent.header,
      },
    });
    const answered = new Promise<number>((resolve, reject) => {
      request.on('response', (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('error', reject);
    });
    request.flushHeaders();
    await sleep(50);
    request.end(body);
    expect(await answered).toBe(200);
    const { server, client } = await waitForGreetTrace(receiver, parent.traceId);
    expect(client.parentSpanId).toBe(server.spanId);
  });

  it('gives every span of both roles the same service labels', async () => {
    const parent = newTraceParent();
    await greet({ name: 'Labels' }, { traceparent: parent.header });
    const { server, client, backend: rpc } = await waitForGreetTrace(receiver, parent.traceId);
    for (const span of [server, client, rpc]) {
      expect(span.resource).toMatchObject({
        'service.namespace': 'greeter',
        'service.version': '0.1.0',
        'deployment.environment.name': 'local',
      });
      expect(span.resource['service.instance.id']).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect(server.resource['service.name']).toBe('greeter-api');
    expect(rpc.resource['service.name']).toBe('greeter-backend');
  });

  it('continues a trace that arrives only as x-cloud-trace-context', async () => {
    const { traceId } = newTraceParent();
    const response = await greet(
      { name: 'Legacy' },
      { 'x-cloud-trace-context': `${traceId}/12345678901234567890;o=1` },
    );
    expect(response.status).toBe(200);
    const { server } = await waitForGreetTrace(receiver, traceId);
    expect(server.parentSpanId).toBe(BigInt('12345678901234567890').toString(16).padStart(16, '0'));
  });

  it('respects an upstream decision not to sample', async () => {
    const parent = newTraceParent(false);
    await greet({ name: 'Unsampled' }, { traceparent: parent.header });
    const marker = newTraceParent();
    await greet({ name: 'Marker' }, { traceparent: marker.header });
    await waitForGreetTrace(receiver, marker.traceId);
    expect(receiver.spans().filter((span) => span.traceId === parent.traceId)).toEqual([]);
  });

  it('starts a new root trace when no header comes, and ignores malformed ones', async () => {
    const junk = {
      traceparent: '00-ZZZ-not-a-trace',
      tracestate: '=,=,,,'.repeat(200),
      baggage: '%%%;;;==',
      'x-cloud-trace-context': 'nope/-1;o=banana',
    };
    const before = new Set(receiver.spans().map((span) => span.traceId));
    const response = await greet({ name: 'Junk' }, junk);
    expect(response.status).toBe(200);
    const spans = await receiver.waitForSpans((all) =>
      all.some(
        (span) =>
          !before.has(span.traceId) &&
          span.name === 'POST /greet' &&
          span.attributes['url.path'] === '/greet',
      ),
    );
    const root = spans.find((span) => !before.has(span.traceId) && span.name === 'POST /greet');
    expect(root?.parentSpanId).toBeUndefined();
  });

  it('marks all three spans ERROR on the withError path, with the exception recorded', async () => {
    const parent = newTraceParent();
    const response = await greet(
      { name: 'David', withError: true },
      { traceparent: parent.header },
    );
    expect(response.status).toBe(500);
    const { server, client, backend: rpc } = await waitForGreetTrace(receiver, parent.traceId);
    for (const span of [server, client, rpc]) {
      expect(span.status.code).toBe('ERROR');
      const exception = span.events.find((event) => event.name === 'exception');
      expect(exception?.attributes['exception.message']).toContain('greeting failed on purpose');
      expect(exception?.attributes['exception.type']).toBeDefined();
    }
    expect(server.attributes['error.type']).toBe('500');
    expect(client.attributes['error.type']).toBe('INTERNAL');
    expect(rpc.attributes['error.type']).toBe('INTERNAL');
    expect(rpc.attributes['rpc.status_code']).toBe('INTERNAL');
  });

  it('does not mark a validation 400 as a server error, and calls no backend', async () => {
    const parent = newTraceParent();
    const response = await greet({ name: '' }, { traceparent: parent.header });
    expect(response.status).toBe(400);
    const spans = await receiver.waitForSpans((all) =>
      all.some((span) => span.traceId === parent.traceId),
    );
    const mine = spans.filter((span) => span.traceId === parent.traceId);
    expect(mine).toHaveLength(1);
    expect(mine[0]?.status.code).toBe('UNSET');
    expect(mine[0]?.attributes['http.response.status_code']).toBe(400);
    expect(mine[0]?.attributes['error.type']).toBeUndefined();
  });

  it('puts the user id on every span of the trace in both roles, and ignores it from public baggage', async () => {
    const parent = newTraceParent();
    await greet({ name: 'David' }, { traceparent: parent.header, 'x-user-id': 'user-42' });
    const trace = await waitForGreetTrace(receiver, parent.traceId);
    for (const span of trace.all) expect(span.attributes['enduser.id']).toBe('user-42');

    const forged = newTraceParent();
    await greet({ name: 'Mallory' }, { traceparent: forged.header, baggage: 'enduser.id=admin' });
    const forgedTrace = await waitForGreetTrace(receiver, forged.traceId);
    for (const span of forgedTrace.all) expect(span.attributes['enduser.id']).toBeUndefined();
  });

  it('writes log lines that carry the same trace and span ids as the spans', async () => {
    const parent = newTraceParent();
    await greet({ name: 'Logs' }, { traceparent: parent.header });
    const { server, backend: rpc } = await waitForGreetTrace(receiver, parent.traceId);
    const accessLine = (role: RoleProcess) =>
      role
        .logs()
        .find(
          (line) =>
            line['logging.googleapis.com/trace'] ===
              `projects/test-project/traces/${parent.traceId}` && line.httpRequest !== undefined,
        );
    const apiLine = accessLine(api);
    expect(apiLine).toMatchObject({
      severity: 'INFO',
      'logging.googleapis.com/spanId': server.spanId,
      'logging.googleapis.com/trace_sampled': true,
      httpRequest: { requestMethod: 'POST', requestUrl: '/greet', status: 200 },
      'logging.googleapis.com/labels': { 'service.name': 'greeter-api' },
    });
    expect(typeof apiLine?.message).toBe('string');
    expect(typeof apiLine?.time).toBe('string');
    expect(accessLine(backend)).toMatchObject({ 'logging.googleapis.com/spanId': rpc.spanId });
  });

  it('exports request-duration histograms for HTTP server, RPC server and RPC client', async () => {
    await greet({ name: 'Metrics' });
    for (const [role, name] of [
      ['greeter-api', 'http.server.request.duration'],
      ['greeter-api', 'rpc.client.call.duration'],
      ['greeter-backend', 'rpc.server.call.duration'],
    ] as const) {
      await expect
        .poll(
          () =>
            receiver.metrics().find((m) => m.name === name && m.resource['service.name'] === role),
          {
            timeout: 10_000,
          },
        )
        .toMatchObject({ unit: 's', resource: { 'service.namespace': 'greeter' } });
    }
  });
});

describe('retries', () => {
  it('shows each attempt on an unavailable backend as its own CLIENT span', async () => {
    const receiver = await startOtlpReceiver();
    const { freePort } = await import('./helpers/free-port.js');
    const api = await startRole('api', {
      env: {
        BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
        BACKEND_TIMEOUT_MS: '3000',
        // Backoff draws from 0-100 ms, then 0-200 ms: all three attempts fit in the deadline.
        BACKEND_MAX_ATTEMPTS: '3',
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_SCHEDULE_DELAY: '100',
      },
    });
    try {
      const parent = newTraceParent();
      const response = await postGreet(api.url, { name: 'Retry' }, { traceparent: parent.header });
      expect(response.status).toBe(503);
      const spans = await receiver.waitForSpans((all) =>
        all.some((span) => span.traceId === parent.traceId && span.kind === 'SERVER'),
      );
      const server = spans.find(
        (span) => span.traceId === parent.traceId && span.kind === 'SERVER',
      );
      const attempts = spans.filter(
        (span) => span.traceId === parent.traceId && span.kind === 'CLIENT',
      );
      expect(attempts.map((span) => span.attributes['rpc.attempt'])).toEqual([1, 2, 3]);
      for (const attempt of attempts) {
        expect(attempt.parentSpanId).toBe(server?.spanId);
        expect(attempt.attributes['rpc.status_code']).toBe('UNAVAILABLE');
        expect(attempt.status.code).toBe('ERROR');
      }
      expect(server?.status.code).toBe('ERROR');
    } finally {
      await api.stop();
      await receiver.close();
    }
  });
});
