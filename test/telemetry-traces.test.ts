import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { grpcCallTo, postGreet, sendRaw, UNKNOWN_METHOD } from './helpers/http.js';
import { type RoleProcess, rolesExportingForSuite, startRole } from './helpers/roles.js';
import { newTraceParent, waitForGreetTrace } from './helpers/traces.js';

describe('one trace per request, end to end over h2c, exported over OTLP', () => {
  const roles = rolesExportingForSuite({
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_METRIC_EXPORT_INTERVAL: '500',
    GOOGLE_CLOUD_PROJECT: 'test-project',
  });

  const greet = (body: unknown, headers: Record<string, string> = {}) =>
    postGreet(roles.api.url, body, headers);
  const apiServerSpan = async (traceId: string) => {
    const spans = await roles.receiver.waitForSpans((all) =>
      all.some((span) => span.traceId === traceId && span.kind === 'SERVER'),
    );
    const found = spans.find((span) => span.traceId === traceId && span.kind === 'SERVER');
    if (!found) throw new Error(`no SERVER span in trace ${traceId}`);
    return found;
  };
  const durationPoints = () =>
    roles.receiver
      .metrics()
      .filter(
        (m) =>
          m.name === 'http.server.request.duration' && m.resource['service.name'] === 'greeter-api',
      )
      .flatMap((m) => m.points);
  const accessLine = (role: RoleProcess, traceId: string) =>
    role
      .logs()
      .find(
        (line) =>
          line['logging.googleapis.com/trace'] === `projects/test-project/traces/${traceId}` &&
          line.httpRequest !== undefined,
      );

  it('links api SERVER → api CLIENT → backend SERVER under the caller’s traceparent', async () => {
    const parent = newTraceParent();
    const response = await greet(
      { name: 'David' },
      { traceparent: parent.header, 'user-agent': 'trace-test/1' },
    );
    expect(response.status).toBe(200);
    const {
      server,
      client,
      backend: rpc,
    } = await waitForGreetTrace(roles.receiver, parent.traceId);

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
      'server.port': roles.api.port,
      'user_agent.original': 'trace-test/1',
      'client.address': '127.0.0.1',
      'network.protocol.version': '1.1',
    });
    expect(server.attributes['http.request.method_original']).toBeUndefined();
    expect(server.attributes['url.query']).toBeUndefined();
    for (const span of [client, rpc]) {
      expect(span.name).toBe('backend_service.v1.BackendService/Greet');
      expect(span.attributes).toMatchObject({
        'rpc.system.name': 'grpc',
        'rpc.method': 'backend_service.v1.BackendService/Greet',
        'rpc.status_code': 'OK',
        'server.address': '127.0.0.1',
        'server.port': roles.backend.port,
      });
    }
    expect(client.attributes['rpc.attempt']).toBe(1);
  });

  it('keeps the request’s trace when its body arrives after the headers', async () => {
    // Node emits a late body from the socket, outside the request's context; the handler must
    // still run inside the SERVER span.
    const parent = newTraceParent();
    const body = JSON.stringify({ name: 'Slow body' });
    const request = httpRequest(`${roles.api.url}/greet`, {
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
    const { server, client } = await waitForGreetTrace(roles.receiver, parent.traceId);
    expect(client.parentSpanId).toBe(server.spanId);
  });

  /** What the OpenTelemetry SDK says of itself, as the resource conventions require. */
  const SDK_LABELS = {
    'telemetry.sdk.language': 'nodejs',
    'telemetry.sdk.name': 'opentelemetry',
    'telemetry.sdk.version': expect.stringMatching(/^\d+\.\d+\.\d+/),
  };

  it('gives every span of both roles the same service labels', async () => {
    const parent = newTraceParent();
    await greet({ name: 'Labels' }, { traceparent: parent.header });
    const {
      server,
      client,
      backend: rpc,
    } = await waitForGreetTrace(roles.receiver, parent.traceId);
    for (const span of [server, client, rpc]) {
      expect(span.resource).toMatchObject({
        'service.namespace': 'greeter',
        'service.version': '0.1.0',
        'deployment.environment.name': 'local',
      });
      expect(span.resource['service.instance.id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(span.resource).toMatchObject(SDK_LABELS);
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
    const { server } = await waitForGreetTrace(roles.receiver, traceId);
    expect(server.parentSpanId).toBe(BigInt('12345678901234567890').toString(16).padStart(16, '0'));
  });

  it('respects an upstream decision not to sample', async () => {
    const parent = newTraceParent(false);
    await greet({ name: 'Unsampled' }, { traceparent: parent.header });
    const marker = newTraceParent();
    await greet({ name: 'Marker' }, { traceparent: marker.header });
    await waitForGreetTrace(roles.receiver, marker.traceId);
    expect(roles.receiver.spans().filter((span) => span.traceId === parent.traceId)).toEqual([]);
    // Its lines still name the trace, and say that it was not sampled (no trace to open).
    await expect
      .poll(() => accessLine(roles.api, parent.traceId))
      .toMatchObject({ 'logging.googleapis.com/trace_sampled': false });
  });

  it('starts a new root trace when no header comes, and ignores malformed ones', async () => {
    const junk = {
      traceparent: '00-ZZZ-not-a-trace',
      tracestate: '=,=,,,'.repeat(200),
      baggage: '%%%;;;==',
      'x-cloud-trace-context': 'nope/-1;o=banana',
    };
    const before = new Set(roles.receiver.spans().map((span) => span.traceId));
    const response = await greet({ name: 'Junk' }, junk);
    expect(response.status).toBe(200);
    const spans = await roles.receiver.waitForSpans((all) =>
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
    const {
      server,
      client,
      backend: rpc,
    } = await waitForGreetTrace(roles.receiver, parent.traceId);
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
    // The api's duration of the call carries the failure too, as its span does.
    await expect
      .poll(
        () =>
          roles.receiver
            .metrics()
            .filter((m) => m.name === 'rpc.client.call.duration')
            .flatMap((m) => m.points)
            .find((point) => point.attributes['rpc.status_code'] === 'INTERNAL')?.attributes,
        { timeout: 10_000 },
      )
      .toEqual({
        'rpc.system.name': 'grpc',
        'rpc.method': 'backend_service.v1.BackendService/Greet',
        'rpc.status_code': 'INTERNAL',
        'error.type': 'INTERNAL',
        'server.address': '127.0.0.1',
        'server.port': roles.backend.port,
      });
  });

  it('does not mark a validation 400 as a server error, and calls no backend', async () => {
    const parent = newTraceParent();
    const response = await greet({ name: '' }, { traceparent: parent.header });
    expect(response.status).toBe(400);
    const spans = await roles.receiver.waitForSpans((all) =>
      all.some((span) => span.traceId === parent.traceId),
    );
    const mine = spans.filter((span) => span.traceId === parent.traceId);
    expect(mine).toHaveLength(1);
    expect(mine[0]?.status.code).toBe('UNSET');
    expect(mine[0]?.attributes['http.response.status_code']).toBe(400);
    expect(mine[0]?.attributes['error.type']).toBeUndefined();
  });

  it.each([
    // The conventions' known methods (1.45) include QUERY; anything else is _OTHER. Both are
    // 405s on a known route, so the route names them.
    { sent: 'PROPFIND', name: 'HTTP /greet', method: '_OTHER', original: 'PROPFIND' },
    { sent: 'QUERY', name: 'QUERY /greet', method: 'QUERY', original: undefined },
  ])('names a $sent request $name, with http.request.method=$method', async (row) => {
    const parent = newTraceParent();
    const response = await fetch(`${roles.api.url}/greet`, {
      method: row.sent,
      headers: { traceparent: parent.header },
    });
    await response.body?.cancel();
    const server = await apiServerSpan(parent.traceId);
    expect(server.name).toBe(row.name);
    expect(server.attributes['http.request.method']).toBe(row.method);
    expect(server.attributes['http.request.method_original']).toBe(row.original);
    expect(server.attributes['http.response.status_code']).toBe(response.status);
    // Metrics keep the low-cardinality value only.
    await expect
      .poll(
        () =>
          durationPoints().find(
            (point) =>
              point.attributes['http.request.method'] === row.method &&
              point.attributes['http.response.status_code'] === response.status,
          )?.attributes,
        { timeout: 10_000 },
      )
      .toEqual({
        'http.request.method': row.method,
        'http.response.status_code': response.status,
        'http.route': '/greet',
        'url.scheme': 'http',
        'network.protocol.version': '1.1',
      });
  });

  it('records url.query with the values of signing keys REDACTED, and keeps it off the metric', async () => {
    const parent = newTraceParent();
    const query = [
      'q=OpenTelemetry',
      'AWSAccessKeyId=AKIA1',
      'Signature=s1',
      'sig=s2',
      'X-Goog-Signature=s3',
      'X-Amz-Signature=s4',
      'X-Amz-Credential=s5',
      'X-Amz-Security-Token=s6',
      'si%67=s7',
      'signature=lower-case-is-kept',
      'sig',
    ].join('&');
    const response = await fetch(`${roles.api.url}/greet?${query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: parent.header },
      body: JSON.stringify({ name: 'Query' }),
    });
    await response.body?.cancel();
    const server = await apiServerSpan(parent.traceId);
    expect(server.attributes['url.path']).toBe('/greet');
    expect(server.attributes['url.query']).toBe(
      [
        'q=OpenTelemetry',
        'AWSAccessKeyId=REDACTED',
        'Signature=REDACTED',
        'sig=REDACTED',
        'X-Goog-Signature=REDACTED',
        'X-Amz-Signature=REDACTED',
        'X-Amz-Credential=REDACTED',
        'X-Amz-Security-Token=REDACTED',
        'si%67=REDACTED',
        'signature=lower-case-is-kept',
        'sig',
      ].join('&'),
    );
    await expect.poll(() => durationPoints().length, { timeout: 10_000 }).toBeGreaterThan(0);
    for (const point of durationPoints()) expect(point.attributes['url.query']).toBeUndefined();
    // The access line shows the same URL, redacted alike.
    await expect
      .poll(
        () =>
          (accessLine(roles.api, parent.traceId)?.httpRequest as { requestUrl?: string })
            ?.requestUrl,
      )
      .toBe(`/greet?${server.attributes['url.query']}`);
  });

  it('leaves http.response.status_code off the span of a client that left before any answer; the log and metric say 499', async () => {
    const parent = newTraceParent();
    const socket = connect(roles.api.port, '127.0.0.1');
    await once(socket, 'connect');
    // Headers and half the promised body, then the client goes away.
    const head = [
      'POST /greet HTTP/1.1',
      `host: 127.0.0.1:${roles.api.port}`,
      'content-type: application/json',
      'content-length: 100',
      `traceparent: ${parent.header}`,
      '',
      '{"name"',
    ].join('\r\n');
    await new Promise<void>((resolve, reject) =>
      socket.write(head, (error) => (error ? reject(error) : resolve())),
    );
    socket.destroy();
    const server = await apiServerSpan(parent.traceId);
    expect(server.name).toBe('POST /greet');
    expect(server.status.code).toBe('UNSET');
    expect(server.attributes['http.route']).toBe('/greet');
    expect(server.attributes['http.response.status_code']).toBeUndefined();
    expect(server.attributes['error.type']).toBeUndefined();
    await expect
      .poll(() => accessLine(roles.api, parent.traceId), { timeout: 10_000 })
      .toMatchObject({
        severity: 'INFO',
        httpRequest: { requestMethod: 'POST', requestUrl: '/greet', status: 499 },
      });
    await expect
      .poll(
        () =>
          durationPoints().find((point) => point.attributes['http.response.status_code'] === 499)
            ?.attributes,
        { timeout: 10_000 },
      )
      .toEqual({
        'http.request.method': 'POST',
        'http.response.status_code': 499,
        'http.route': '/greet',
        'url.scheme': 'http',
        'network.protocol.version': '1.1',
      });
  });

  it('traces a call to a method the backend does not have: _OTHER, the path kept, UNIMPLEMENTED, an access line', async () => {
    const parent = newTraceParent();
    expect(
      await grpcCallTo(roles.backend.url, `/${UNKNOWN_METHOD}`, {
        traceparent: parent.header,
      }),
    ).toBe('12');
    const spans = await roles.receiver.waitForSpans((all) =>
      all.some((span) => span.traceId === parent.traceId),
    );
    const span = spans.find((candidate) => candidate.traceId === parent.traceId);
    expect(span).toMatchObject({
      name: 'grpc',
      kind: 'SERVER',
      parentSpanId: parent.spanId,
      status: { code: 'ERROR', message: `[unimplemented] unknown method /${UNKNOWN_METHOD}` },
      attributes: {
        'rpc.system.name': 'grpc',
        'rpc.method': '_OTHER',
        'rpc.method_original': UNKNOWN_METHOD,
        'rpc.status_code': 'UNIMPLEMENTED',
        'error.type': 'UNIMPLEMENTED',
      },
    });
    await expect
      .poll(() => accessLine(roles.backend, parent.traceId))
      .toMatchObject({
        severity: 'ERROR',
        httpRequest: { requestUrl: `/${UNKNOWN_METHOD}`, status: 200 },
        error: { message: `[unimplemented] unknown method /${UNKNOWN_METHOD}` },
      });
    expect(span?.events.find((event) => event.name === 'exception')?.attributes).toMatchObject({
      'exception.message': `[unimplemented] unknown method /${UNKNOWN_METHOD}`,
    });
  });

  it('puts the user id on every span of the trace in both roles, and ignores it from public baggage', async () => {
    const parent = newTraceParent();
    await greet({ name: 'David' }, { traceparent: parent.header, 'x-user-id': 'user-42' });
    const trace = await waitForGreetTrace(roles.receiver, parent.traceId);
    for (const span of trace.all) expect(span.attributes['enduser.id']).toBe('user-42');

    const forged = newTraceParent();
    await greet({ name: 'Mallory' }, { traceparent: forged.header, baggage: 'enduser.id=admin' });
    const forgedTrace = await waitForGreetTrace(roles.receiver, forged.traceId);
    for (const span of forgedTrace.all) expect(span.attributes['enduser.id']).toBeUndefined();
  });

  it('takes a user id of up to 128 letters, digits and . _ @ + -; puts no other on any span', async () => {
    const enduserIds = async (userId: string) => {
      const parent = newTraceParent();
      const response = await greet(
        { name: 'David' },
        { traceparent: parent.header, 'x-user-id': userId },
      );
      expect(response.status).toBe(200);
      const trace = await waitForGreetTrace(roles.receiver, parent.traceId);
      return [...new Set(trace.all.map((span) => span.attributes['enduser.id']))];
    };
    const longest = `a.b_c@d+e-${'x'.repeat(118)}`;
    expect(longest).toHaveLength(128);
    expect(await enduserIds(longest)).toEqual([longest]);
    // Header values anyone can send: too long, a list, a pair, spaces, non-ASCII.
    for (const refused of [`${longest}x`, 'alice,admin', 'a=b', 'alice bob', 'ü-user']) {
      expect(await enduserIds(refused), refused).toEqual([undefined]);
    }
  });

  it('traces no probe, with a query string too, nor /favicon.ico', async () => {
    const probes: [string, number][] = [
      ['/healthz', 200],
      ['/healthz?from=lb', 200],
      ['/readyz?verbose=1', 200],
      ['/favicon.ico', 404],
    ];
    const probeTraces = new Set<string>();
    for (const [path, status] of probes) {
      const parent = newTraceParent();
      probeTraces.add(parent.traceId);
      const response = await fetch(`${roles.api.url}${path}`, {
        headers: { traceparent: parent.header },
      });
      await response.body?.cancel();
      expect(response.status, path).toBe(status);
    }
    // A traced request after them: its spans are exported with theirs or after them.
    const marker = newTraceParent();
    await greet({ name: 'Marker' }, { traceparent: marker.header });
    await waitForGreetTrace(roles.receiver, marker.traceId);
    const traced = roles.receiver.spans().filter((span) => probeTraces.has(span.traceId));
    expect(traced.map((span) => span.attributes['url.path'])).toEqual([]);
  });

  it('reads server.address and server.port from an IPv6 Host header', async () => {
    const parent = newTraceParent();
    const answer = await sendRaw(
      roles.api.url,
      'POST',
      '/greet',
      { host: '[::1]:8443', 'content-type': 'application/json', traceparent: parent.header },
      JSON.stringify({ name: 'IPv6' }),
    );
    expect(answer.status).toBe(200);
    const { server } = await waitForGreetTrace(roles.receiver, parent.traceId);
    expect(server.attributes['server.port']).toBe(8443);
    // The address without the brackets the Host header needs around it.
    expect(server.attributes['server.address']).toBe('::1');
  });

  it.each([
    ['behind a front end that says https', { 'x-forwarded-proto': 'https' }, 443],
    ['called directly, in cleartext', {}, 80],
  ])(
    'gives the backend’s span the scheme’s server.port when :authority has none: %s',
    async (_, headers, port) => {
      const parent = newTraceParent();
      // What Cloud Run's front end sends: the service's host name, without a port.
      await grpcCallTo(roles.backend.url, '/backend_service.v1.BackendService/Greet', {
        ':authority': 'backend-x-abc.a.run.app',
        traceparent: parent.header,
        ...headers,
      });
      const spans = await roles.receiver.waitForSpans((all) =>
        all.some((span) => span.traceId === parent.traceId && span.kind === 'SERVER'),
      );
      const server = spans.find((span) => span.traceId === parent.traceId);
      expect(server?.attributes).toMatchObject({
        'server.address': 'backend-x-abc.a.run.app',
        'server.port': port,
      });
    },
  );

  it('writes log lines that carry the same trace and span ids as the spans', async () => {
    const parent = newTraceParent();
    await greet({ name: 'Logs' }, { traceparent: parent.header });
    const { server, backend: rpc } = await waitForGreetTrace(roles.receiver, parent.traceId);
    const apiLine = accessLine(roles.api, parent.traceId);
    expect(apiLine).toMatchObject({
      severity: 'INFO',
      'logging.googleapis.com/spanId': server.spanId,
      'logging.googleapis.com/trace_sampled': true,
      httpRequest: { requestMethod: 'POST', requestUrl: '/greet', status: 200 },
      'logging.googleapis.com/labels': {
        'service.name': 'greeter-api',
        'service.namespace': 'greeter',
        'service.version': '0.1.0',
        'service.instance.id': server.resource['service.instance.id'],
        'deployment.environment.name': 'local',
      },
    });
    expect(typeof apiLine?.message).toBe('string');
    expect(typeof apiLine?.time).toBe('string');
    expect(accessLine(roles.backend, parent.traceId)).toMatchObject({
      'logging.googleapis.com/spanId': rpc.spanId,
    });
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
            roles.receiver
              .metrics()
              .find((m) => m.name === name && m.resource['service.name'] === role),
          {
            timeout: 10_000,
          },
        )
        .toMatchObject({
          unit: 's',
          resource: { 'service.namespace': 'greeter', ...SDK_LABELS },
        });
    }
  });
});

describe('service labels from the standard OTEL_* variables', () => {
  const roles = rolesExportingForSuite({
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_SERVICE_NAME: 'shop-greeter',
    OTEL_RESOURCE_ATTRIBUTES: 'service.namespace=shop,team=payments',
  });

  it('OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override and add, on spans and on log lines', async () => {
    const parent = newTraceParent();
    expect(
      (await postGreet(roles.api.url, { name: 'Shop' }, { traceparent: parent.header })).status,
    ).toBe(200);
    const all = await roles.receiver.waitForSpans(
      (spans) => spans.filter((span) => span.traceId === parent.traceId).length >= 3,
    );
    const trace = all.filter((span) => span.traceId === parent.traceId);
    expect(trace).toHaveLength(3);
    for (const span of trace) {
      expect(span.resource).toMatchObject({
        'service.name': 'shop-greeter',
        'service.namespace': 'shop',
        team: 'payments',
      });
    }
    await expect
      .poll(() => roles.api.logs().find((line) => line.httpRequest !== undefined))
      .toMatchObject({
        serviceContext: { service: 'shop-greeter' },
        'logging.googleapis.com/labels': {
          'service.name': 'shop-greeter',
          'service.namespace': 'shop',
        },
      });
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
