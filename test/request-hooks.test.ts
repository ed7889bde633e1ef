import { Writable } from 'node:stream';
import { Code, ConnectError } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BackendClient, createBackendClient } from '../src/api/backend-client.js';
import { type Api, buildApi } from '../src/api/build-api.js';
import { parseConfig } from '../src/config.js';
import { createHealthStatus } from '../src/rpc/health.js';
import { setRequestAttributes } from '../src/telemetry/request-attributes.js';
import { startTelemetry } from '../src/telemetry/start-telemetry.js';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { type GrpcTestServer, startGrpcServer } from './fixtures/grpc/start-grpc-server.js';

describe('request hooks', () => {
  let receiver: OtlpReceiver;
  let grpcServer: GrpcTestServer;
  let backend: BackendClient;
  let api: Api;
  let url: string;
  const logLines: Record<string, unknown>[] = [];

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    grpcServer = await startGrpcServer(createHealthStatus({ '': 'SERVING' }));
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    process.env.OTEL_BSP_SCHEDULE_DELAY = '50';
    const config = parseConfig({
      SERVICE_ROLE: 'api',
      BACKEND_URL: grpcServer.url,
      LOG_LEVEL: 'info',
    });
    const telemetry = await startTelemetry(config, {
      logDestination: new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString('utf8').split('\n').filter(Boolean))
            logLines.push(JSON.parse(line));
          done();
        },
      }),
    });
    if (!config.backend) throw new Error('parseConfig gave the api no backend');
    backend = createBackendClient(config.backend, { telemetry });
    api = await buildApi(config, {
      telemetry,
      routeDeps: { backend },
      requestHooks: [
        () => {
          throw new Error('hook exploded');
        },
        (request) =>
          setRequestAttributes({ 'app.tenant': String(request.headers['x-tenant'] ?? 'none') }),
      ],
    });
    // A hook of a fork's own: Node emits the response's `finish` from the socket, outside the
    // request's context unless the server factory carries it there.
    api.app.addHook('onResponse', async (request) => {
      request.log.info({ probe: 'on-response' }, 'response sent');
    });
    // A route of a fork's own, with a path parameter (README, "Add a REST route").
    api.app.get<{ Params: { name: string } }>('/fork-route/:name', async (request) => ({
      reply: `Goodbye ${request.params.name}!`,
    }));
    // A route of a fork's own that puts a time limit of its own on a backend call.
    api.app.get('/fork-timeout', async () => ({
      reply: await backend.greet(
        { name: 'Ada', withError: false },
        AbortSignal.abort(new DOMException('the route gave up', 'TimeoutError')),
      ),
    }));
    // One that stops a backend call for a reason of its own, not a time limit.
    api.app.get('/fork-abort', async () => ({
      reply: await backend.greet(
        { name: 'Ada', withError: false },
        AbortSignal.abort(new Error('the route changed its mind')),
      ),
    }));
    // One that throws what a backend call failing with the gRPC code it names throws.
    api.app.get<{ Params: { code: keyof typeof Code } }>(
      '/fork-backend-fails/:code',
      async ({ params }) => {
        throw new ConnectError('the backend said no', Code[params.code]);
      },
    );
    // One that fails with an HTTP status of its own, as Fastify's errors carry one.
    api.app.get<{ Params: { status: string } }>('/fork-fails/:status', async ({ params }) => {
      throw Object.assign(new Error(`the fork's own ${params.status}`), {
        statusCode: Number(params.status),
      });
    });
    // An authentication hook of a fork's own, added after the api's.
    api.app.addHook('onRequest', (request, reply, done) => {
      if (request.headers['x-deny'] === undefined) return done();
      reply.code(401).send({ fork: 'not signed in' });
    });
    // A plugin of a fork's own that answers its own 404s.
    await api.app.register(
      async (plugin) => {
        plugin.setNotFoundHandler((_request, reply) => reply.code(404).send({ plugin: 'own 404' }));
        plugin.get('/thing', async () => ({ thing: true }));
      },
      { prefix: '/fork-plugin' },
    );
    url = await api.app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(async () => {
    await api?.app.close();
    backend?.close();
    await grpcServer?.close();
    await receiver?.close();
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    delete process.env.OTEL_BSP_SCHEDULE_DELAY;
  });

  /** The access line of the request for `requestUrl`, once written (within 2 s). */
  async function accessLine(requestUrl: string): Promise<Record<string, unknown> | undefined> {
    const find = () =>
      logLines.find(
        (entry) =>
          (entry.httpRequest as { requestUrl?: string } | undefined)?.requestUrl === requestUrl,
      );
    const deadline = Date.now() + 2_000;
    while (!find() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    return find();
  }

  it('logs a throwing hook, serves the request, and still runs the hooks after it', async () => {
    const response = await fetch(`${url}/greet`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant': 'acme' },
      body: '{"name":"Hooked"}',
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ reply: 'Hello Hooked!!' });
    const spans = await receiver.waitForSpans((all) =>
      all.some((span) => span.name === 'POST /greet'),
    );
    expect(spans.find((span) => span.name === 'POST /greet')?.attributes['app.tenant']).toBe(
      'acme',
    );
    // An ERROR line with the stack, for Error Reporting, in the request's trace; not an
    // OpenTelemetry diagnostic that OTEL_LOG_LEVEL could silence.
    const threw = logLines.find((line) => String(line.message).includes('hook threw'));
    expect(threw).toMatchObject({
      severity: 'ERROR',
      message: 'a request hook threw; the request goes on without it',
      error: { message: 'hook exploded' },
    });
    expect(threw?.stack_trace).toMatch(/^Error: hook exploded\n/);
    expect(threw?.component).toBeUndefined();
    const server = spans.find((span) => span.name === 'POST /greet');
    expect(threw?.['logging.googleapis.com/trace']).toContain(server?.traceId);
  });

  it('runs hooks after the response inside the request’s trace', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const earlier = logLines.length;
    const response = await fetch(`${url}/greet`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
      body: '{"name":"Later"}',
    });
    expect(response.status).toBe(200);
    const deadline = Date.now() + 2_000;
    const probe = () => logLines.slice(earlier).find((line) => line.probe === 'on-response');
    while (!probe() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(probe()?.['logging.googleapis.com/trace']).toMatch(new RegExp(`/traces/${traceId}$`));
  });

  it('refuses a path parameter over 200 characters, counted once decoded, with a 414 problem', async () => {
    const accepted = await fetch(`${url}/fork-route/${encodeURIComponent('é'.repeat(200))}`);
    expect(accepted.status).toBe(200);
    const refused = await fetch(`${url}/fork-route/${encodeURIComponent('é'.repeat(201))}`);
    expect(refused.status).toBe(414);
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await refused.json()).toMatchObject({
      title: 'URI Too Long',
      status: 414,
      detail: 'A path parameter is longer than 200 characters: send long values in a body.',
    });
  });

  it("leaves a fork plugin's own not-found handler its 404s; the api's answer others before their body", async () => {
    const text = { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' };
    const own = await fetch(`${url}/fork-plugin/nope`, text);
    expect(own.status).toBe(404);
    expect(await own.json()).toEqual({ plugin: 'own 404' });
    const ours = await fetch(`${url}/nope`, text);
    expect(ours.status).toBe(404);
    expect(ours.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    // A fork's onRequest hooks run first, unrouted requests included: no route list for them.
    for (const [path, method] of [
      ['/nope', 'GET'],
      ['/greet', 'PUT'],
    ] as const) {
      const denied = await fetch(`${url}${path}`, { method, headers: { 'x-deny': '1' } });
      expect(denied.status, `${method} ${path}`).toBe(401);
      expect(denied.headers.get('allow')).toBeNull();
    }
  });

  it("a route's own abort of a backend call is the api's failure (500), not a caller that left (499)", async () => {
    const answer = await fetch(`${url}/fork-abort`);
    expect(answer.status).toBe(500);
    const body = (await answer.json()) as { detail: string; traceId: string };
    expect(body.detail).toBe(
      'The server failed to answer. The failure was logged with this trace id.',
    );
    const line = await accessLine('/fork-abort');
    expect(line).toMatchObject({ severity: 'ERROR', httpRequest: { status: 500 } });
    expect(JSON.stringify(line)).toContain('the route changed its mind');
  });

  it("a route's own time limit on a backend call is 504, not the backend's fault (502)", async () => {
    const answer = await fetch(`${url}/fork-timeout`);
    expect(answer.status).toBe(504);
    expect(await answer.json()).toMatchObject({ code: 'deadline_exceeded' });
  });

  it.each([
    ['ResourceExhausted', 429, 'Too Many Requests', 'resource_exhausted'],
    ['Unimplemented', 501, 'Not Implemented', 'unimplemented'],
    ['Unavailable', 503, 'Service Unavailable', 'unavailable'],
    ['DeadlineExceeded', 504, 'Gateway Timeout', 'deadline_exceeded'],
  ])(
    'a ConnectError with %s, as a failed backend call throws: %i, titled %s',
    async (code, status, title, name) => {
      const answer = await fetch(`${url}/fork-backend-fails/${code}`);
      expect(answer.status).toBe(status);
      expect(await answer.json()).toMatchObject({ type: 'about:blank', status, title, code: name });
    },
  );

  it("a route's own HTTP status: a 4xx with its message, titled generically if it has no title here; a 5xx is the api's 500, its message kept in the logs", async () => {
    const refused = await fetch(`${url}/fork-fails/422`);
    expect(refused.status).toBe(422);
    expect(await refused.json()).toMatchObject({
      title: 'Client Error',
      status: 422,
      detail: "the fork's own 422",
    });
    const failed = await fetch(`${url}/fork-fails/507`);
    expect(failed.status).toBe(500);
    expect(await failed.json()).toMatchObject({
      title: 'Internal Server Error',
      status: 500,
      detail: 'The server failed to answer. The failure was logged with this trace id.',
    });
    const line = await accessLine('/fork-fails/507');
    expect(line).toMatchObject({ severity: 'ERROR', httpRequest: { status: 500 } });
    expect(JSON.stringify(line)).toContain("the fork's own 507");
  });
});
