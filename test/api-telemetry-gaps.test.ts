import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { createRouteTemplates } from '../src/api/route-templates.js';
import { type ReceivedSpan, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { freePort } from './helpers/free-port.js';
import { postGreet, sendRaw } from './helpers/http.js';
import { eventually, rolesExportingForSuite, startRole } from './helpers/roles.js';
import { newTraceParent } from './helpers/traces.js';

/*
 * What the api's SERVER spans, duration points and log lines say in the corners the HTTP
 * conventions and Cloud Logging care about: a 405 on a known path is named by its route, the
 * port of a Host header without one is the scheme's, and a failure's cause reads once.
 */

describe('the api SERVER span and its duration point', () => {
  const roles = rolesExportingForSuite({
    OTEL_BSP_SCHEDULE_DELAY: '50',
    OTEL_METRIC_EXPORT_INTERVAL: '200',
  });

  const serverSpan = async (traceId: string): Promise<ReceivedSpan> => {
    const spans = await roles.receiver.waitForSpans((all) =>
      all.some((span) => span.traceId === traceId && span.kind === 'SERVER'),
    );
    const found = spans.find((span) => span.traceId === traceId && span.kind === 'SERVER');
    if (!found) throw new Error(`no SERVER span in trace ${traceId}`);
    return found;
  };
  const durationPoint = (method: string, status: number) =>
    eventually(() => {
      const point = roles.receiver
        .metrics()
        .filter(
          (metric) =>
            metric.name === 'http.server.request.duration' &&
            metric.resource['service.name'] === 'greeter-api',
        )
        .flatMap((metric) => metric.points)
        .find(
          (p) =>
            p.attributes['http.request.method'] === method &&
            p.attributes['http.response.status_code'] === status,
        );
      if (!point) throw new Error(`no duration point for ${method} ${status}`);
      return point;
    });

  it('a 405 on a known path is named by its route, with http.route on the span and the point; a 404 has none', async () => {
    const wrongMethod = newTraceParent();
    const unknownPath = newTraceParent();
    const url = roles.api.url;
    expect((await sendRaw(url, 'PUT', '/greet', { traceparent: wrongMethod.header })).status).toBe(
      405,
    );
    expect((await sendRaw(url, 'PUT', '/nope', { traceparent: unknownPath.header })).status).toBe(
      404,
    );

    const refused = await serverSpan(wrongMethod.traceId);
    expect(refused.name).toBe('PUT /greet');
    expect(refused.attributes).toMatchObject({
      'http.route': '/greet',
      'http.request.method': 'PUT',
      'http.response.status_code': 405,
    });
    const unrouted = await serverSpan(unknownPath.traceId);
    expect(unrouted.name).toBe('PUT');
    expect(unrouted.attributes['http.route']).toBeUndefined();

    expect((await durationPoint('PUT', 405)).attributes['http.route']).toBe('/greet');
    expect((await durationPoint('PUT', 404)).attributes['http.route']).toBeUndefined();
  });

  it.each([
    ['Cloud Run: https by the front end, no port in Host', 'greeter-api.a.run.app', 'https', 443],
    ['plain http, no port in Host', 'greeter.example', 'http', 80],
    ['a port in Host wins', 'greeter.example:8443', 'https', 8443],
    ['the last port, 65535', 'greeter.example:65535', 'https', 65535],
    ['no port past 65535', 'greeter.example:99999', 'https', undefined],
  ])('server.port: %s', async (_, host, scheme, port) => {
    const parent = newTraceParent();
    const headers: Record<string, string> = { host, traceparent: parent.header };
    if (scheme === 'https') headers['x-forwarded-proto'] = 'https';
    expect((await sendRaw(roles.api.url, 'GET', '/openapi.json', headers)).status).toBe(200);
    const span = await serverSpan(parent.traceId);
    expect(span.attributes).toMatchObject({
      'server.address': host.split(':')[0],
      'url.scheme': scheme,
    });
    expect(span.attributes['server.port']).toBe(port);
  });
});

describe('without a proxy in front (TRUSTED_PROXY_HOPS=0)', () => {
  it("X-Forwarded-Proto is the caller's own word: url.scheme http, server.port 80", async () => {
    const receiver = await startOtlpReceiver();
    const api = await startRole('api', {
      env: {
        BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
        TRUSTED_PROXY_HOPS: '0',
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_SCHEDULE_DELAY: '50',
        OTEL_METRICS_EXPORTER: 'none',
      },
    });
    try {
      const parent = newTraceParent();
      const headers = {
        host: 'greeter.example',
        'x-forwarded-proto': 'https',
        traceparent: parent.header,
      };
      expect((await sendRaw(api.url, 'GET', '/openapi.json', headers)).status).toBe(200);
      const spans = await receiver.waitForSpans((all) =>
        all.some((span) => span.traceId === parent.traceId),
      );
      expect(spans.find((span) => span.traceId === parent.traceId)?.attributes).toMatchObject({
        'server.address': 'greeter.example',
        'server.port': 80,
        'url.scheme': 'http',
      });
    } finally {
      await api.stop();
      await receiver.close();
    }
  });
});

describe('the api CLIENT span of a backend at an IPv6 address', () => {
  it('names the address without the brackets the URL needs, as SERVER spans do', async () => {
    const receiver = await startOtlpReceiver();
    const backend = await startRole('backend', { env: { HOST: '::1', OTEL_SDK_DISABLED: 'true' } });
    const api = await startRole('api', {
      env: {
        BACKEND_URL: `http://[::1]:${backend.port}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_SCHEDULE_DELAY: '50',
        OTEL_METRICS_EXPORTER: 'none',
      },
    });
    try {
      const parent = newTraceParent();
      const response = await postGreet(api.url, { name: 'Six' }, { traceparent: parent.header });
      expect(response.status).toBe(200);
      const spans = await receiver.waitForSpans((all) =>
        all.some((span) => span.traceId === parent.traceId && span.kind === 'CLIENT'),
      );
      const client = spans.find(
        (span) => span.traceId === parent.traceId && span.kind === 'CLIENT',
      );
      expect(client?.attributes).toMatchObject({
        'server.address': '::1',
        'server.port': backend.port,
      });
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });
});

describe('route templates for requests Fastify did not route', () => {
  it("finds the template Fastify's router would, for each kind of path", async () => {
    const templates = createRouteTemplates({ maxParamLength: 200 });
    const app = Fastify();
    app.addHook('onRoute', (route) => templates.add(route));
    const ok = async () => ({});
    app.get('/greet', ok);
    app.post('/users/:id', ok);
    app.get('/users/:id/orders/:order(^\\d+)', ok);
    app.get('/files/*', ok);
    // One route for two methods; two routes for one method and template, told apart by Host.
    app.route({ method: ['PATCH', 'DELETE'], url: '/orders/:order', handler: ok });
    app.get('/sites', { constraints: { host: 'a.example' } }, ok);
    app.get('/sites', { constraints: { host: 'b.example' } }, ok);
    await app.register(
      async (plugin) => {
        plugin.put('/items/:item', ok);
        plugin.get('/', ok);
      },
      { prefix: '/v2' },
    );
    await app.ready();
    try {
      expect(templates.find('GET', '/greet')).toBe('/greet');
      expect(templates.find('HEAD', '/greet')).toBe('/greet');
      expect(templates.find('POST', '/users/42')).toBe('/users/:id');
      expect(templates.find('GET', '/users/42/orders/7')).toBe('/users/:id/orders/:order(^\\d+)');
      expect(templates.find('GET', '/users/42/orders/x')).toBeUndefined();
      expect(templates.find('GET', '/files/a/b.txt')).toBe('/files/*');
      expect(templates.find('PATCH', '/orders/7')).toBe('/orders/:order');
      expect(templates.find('DELETE', '/orders/7')).toBe('/orders/:order');
      expect(templates.find('GET', '/sites')).toBe('/sites');
      expect(templates.find('PUT', '/v2/items/%E2%9C%93')).toBe('/v2/items/:item');
      // Past Fastify's parameter limit (its 414): still the route's.
      expect(templates.find('PUT', `/v2/items/${'a'.repeat(250)}`)).toBe('/v2/items/:item');
      // A plugin's '/' under a prefix, which Fastify serves with and without the slash.
      expect(await app.inject({ method: 'GET', url: '/v2/' }).then((r) => r.statusCode)).toBe(200);
      expect(templates.find('GET', '/v2')).toBe('/v2');
      expect(templates.find('GET', '/v2/')).toBe('/v2');
      expect(templates.find('GET', '/users/42')).toBeUndefined();
      expect(templates.find('GET', '/nope')).toBeUndefined();
    } finally {
      await app.close();
    }
  });
});

describe("a backend failure's log line", () => {
  it("reads the failure once in error.message, with the connection's error as error.cause", async () => {
    const deadPort = await freePort();
    const api = await startRole('api', { env: { BACKEND_URL: `http://127.0.0.1:${deadPort}` } });
    try {
      const parent = newTraceParent();
      const response = await postGreet(api.url, { name: 'Nobody' }, { traceparent: parent.header });
      expect(response.status).toBe(503);
      const line = await eventually(() => {
        const found = api
          .logs()
          .find(
            (entry) =>
              String(entry['logging.googleapis.com/trace'] ?? '').endsWith(parent.traceId) &&
              entry.httpRequest !== undefined,
          );
        if (!found) throw new Error('no access line yet');
        return found;
      });
      const refused = `connect ECONNREFUSED 127.0.0.1:${deadPort}`;
      expect(line.error).toMatchObject({
        type: 'ConnectError',
        message: `[unavailable] ${refused}`,
        cause: { type: 'Error', message: refused, code: 'ECONNREFUSED' },
      });
      const error = line.error as { stack: string; cause: { stack: string } };
      expect(error.stack).not.toContain('caused by');
      expect(error.cause.stack).toMatch(/^Error: connect ECONNREFUSED/);
    } finally {
      await api.stop();
    }
  });
});
