import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  type OtlpReceiver,
  type OtlpReceiverBehaviour,
  startOtlpReceiver,
} from '../tools/otlp-receiver/index.ts';
import { freePort } from './helpers/free-port.js';
import { grpcCallTo, postGreet, UNKNOWN_METHOD } from './helpers/http.js';
import { eventually, type RoleProcess, startRole, startRoles } from './helpers/roles.js';
import { newTraceParent } from './helpers/traces.js';

async function greet(url: string, headers: Record<string, string> = {}): Promise<number> {
  const response = await postGreet(url, { name: 'Export' }, headers);
  await response.arrayBuffer();
  return response.status;
}

/**
 * The SDK's count of spans that left its queue, from the last metric export (the counter is
 * cumulative): `error.type` undefined for the delivered, `queue_full` for the dropped, the
 * error's name for a failed export.
 */
function spansProcessed(receiver: OtlpReceiver, errorType: (type: unknown) => boolean): number {
  const processed = receiver
    .metrics()
    .filter((metric) => metric.name === 'otel.sdk.processor.span.processed')
    .at(-1);
  return (processed?.points ?? [])
    .filter((point) => errorType(point.attributes['error.type']))
    .reduce((total, point) => total + (point.value ?? 0), 0);
}

type SplitExport = { api: RoleProcess; traces: OtlpReceiver; metrics: OtlpReceiver };

type Answering = { behaviour: OtlpReceiverBehaviour; delayMs?: number };

type SplitExportSetup = {
  env?: Record<string, string>;
  /** How each receiver answers (default: at once). */
  traces?: Answering;
  metrics?: Answering;
  /** Spans go here instead of the span receiver. */
  tracesUrl?: string;
};

/**
 * Runs `body` with the api (and its backend) sending spans to one receiver and metrics to
 * another, and stops them all after.
 */
async function withSplitExport(
  setup: SplitExportSetup,
  body: (roles: SplitExport) => Promise<void>,
): Promise<void> {
  const traces = await startOtlpReceiver();
  const metrics = await startOtlpReceiver();
  if (setup.traces) traces.setBehaviour(setup.traces.behaviour, setup.traces.delayMs);
  if (setup.metrics) metrics.setBehaviour(setup.metrics.behaviour, setup.metrics.delayMs);
  const backend = await startRole('backend');
  try {
    const api = await startRole('api', {
      env: {
        BACKEND_URL: backend.url,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${setup.tracesUrl ?? traces.url}/v1/traces`,
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${metrics.url}/v1/metrics`,
        ...setup.env,
      },
    });
    try {
      await body({ api, traces, metrics });
    } finally {
      await api.stop();
    }
  } finally {
    await backend.stop();
    await Promise.all([traces.close(), metrics.close()]);
  }
}

/** After the api has stopped: the SDK counted `spans` delivered and none lost. */
function expectAllDelivered(metrics: OtlpReceiver, spans: number): void {
  expect(spansProcessed(metrics, (type) => type !== undefined)).toBe(0);
  expect(spansProcessed(metrics, (type) => type === undefined)).toBe(spans);
}

/** An OTLP endpoint that takes requests and never answers them. */
async function startHangingEndpoint(): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(() => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * An OTLP endpoint that takes every export only in part: its answer (protobuf) carries a
 * partial_success of `rejected` items and a reason, the same field numbers for traces and metrics.
 */
async function startPartialEndpoint(rejected: number, reason: string) {
  const why = Buffer.from(reason);
  const partial = Buffer.concat([Buffer.from([0x08, rejected, 0x12, why.length]), why]);
  const answer = Buffer.concat([Buffer.from([0x0a, partial.length]), partial]);
  const server = createServer((request, response) => {
    request.resume().on('end', () => {
      response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('span export', () => {
  it('loses no span on SIGTERM: everything sent before the signal reaches the receiver', async () => {
    const receiver = await startOtlpReceiver();
    // A long batch delay: only the shutdown flush can deliver these spans.
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '60000' };
    const backend = await startRole('backend', { env });
    const api = await startRole('api', { env: { ...env, BACKEND_URL: backend.url } });
    try {
      const requests = 20;
      const statuses = await Promise.all(Array.from({ length: requests }, () => greet(api.url)));
      expect(statuses.every((status) => status === 200)).toBe(true);
      expect(receiver.spans()).toHaveLength(0);
      expect(await api.stop('SIGTERM')).toBe(0);
      expect(await backend.stop('SIGTERM')).toBe(0);
      const spans = receiver.spans();
      expect(
        spans.filter((s) => s.kind === 'SERVER' && s.resource['service.name'] === 'greeter-api'),
      ).toHaveLength(requests);
      expect(spans.filter((s) => s.kind === 'CLIENT')).toHaveLength(requests);
      expect(
        spans.filter(
          (s) => s.kind === 'SERVER' && s.resource['service.name'] === 'greeter-backend',
        ),
      ).toHaveLength(requests);
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });

  it('flushes at the end of each request in request mode (Cloud Run request-based billing)', async () => {
    const receiver = await startOtlpReceiver();
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '60000',
      TELEMETRY_EXPORT_MODE: 'request',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    };
    const backend = await startRole('backend', { env });
    const api = await startRole('api', { env: { ...env, BACKEND_URL: backend.url } });
    try {
      const parent = newTraceParent();
      expect(await greet(api.url, { traceparent: parent.header })).toBe(200);
      // Both roles flushed before answering, so all three spans are there already.
      expect(receiver.spans().filter((span) => span.traceId === parent.traceId)).toHaveLength(3);

      // So does a call to a method the backend does not have: with the endpoint taking 300 ms,
      // the span is in only if the answer waited for its export.
      receiver.setBehaviour('slow', 300);
      const unknown = newTraceParent();
      expect(
        await grpcCallTo(backend.url, `/${UNKNOWN_METHOD}`, {
          traceparent: unknown.header,
        }),
      ).toBe('12');
      expect(receiver.spans().filter((span) => span.traceId === unknown.traceId)).toHaveLength(1);
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });

  it.each(['down', 'forbidden'] as const)(
    'keeps serving while the endpoint is %s, logs one line, and recovers',
    async (behaviour) => {
      const receiver = await startOtlpReceiver();
      receiver.setBehaviour(behaviour);
      const env = {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_SCHEDULE_DELAY: '50',
        OTEL_EXPORTER_OTLP_TIMEOUT: '500',
        TELEMETRY_EXPORT_MODE: 'request',
      };
      const backend = await startRole('backend', { env });
      const api = await startRole('api', { env: { ...env, BACKEND_URL: backend.url } });
      try {
        for (let i = 0; i < 30; i++) expect(await greet(api.url)).toBe(200);
        await expect.poll(() => receiver.requests(), { timeout: 5_000 }).toBeGreaterThan(3);
        const failures = api.logs().filter((line) => String(line.message).includes('span export'));
        expect(failures).toHaveLength(1);
        expect(String(failures[0]?.message)).toContain('failed');

        receiver.setBehaviour('ok');
        const parent = newTraceParent();
        expect(await greet(api.url, { traceparent: parent.header })).toBe(200);
        await receiver.waitForSpans((spans) =>
          spans.some((span) => span.traceId === parent.traceId),
        );
      } finally {
        await Promise.all([api.stop(), backend.stop()]);
        await receiver.close();
      }
    },
  );

  it('counts the spans a full queue drops, and accounts for every span', async () => {
    // A slow endpoint and a queue of 4: most spans of a burst cannot wait for it.
    const setup = {
      traces: { behaviour: 'slow', delayMs: 400 },
      env: {
        OTEL_BSP_MAX_QUEUE_SIZE: '4',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2',
        OTEL_BSP_SCHEDULE_DELAY: '20',
      },
    } as const;
    await withSplitExport(setup, async ({ api, traces, metrics }) => {
      const requests = 20;
      for (let i = 0; i < requests; i++) expect(await greet(api.url)).toBe(200);
      // Once the queue has drained, the next span in says how many were dropped.
      await eventually(() => expect(traces.spans().length).toBeGreaterThanOrEqual(6), 5_000);
      expect(await greet(api.url)).toBe(200);
      expect(await api.stop('SIGTERM')).toBe(0);

      const made = 2 * (requests + 1);
      const dropped = spansProcessed(metrics, (type) => type === 'queue_full');
      expect(dropped).toBeGreaterThan(0);
      expect(spansProcessed(metrics, (type) => type === undefined)).toBe(traces.spans().length);
      expect(traces.spans().length + dropped).toBe(made);
      const warnings = api
        .logs()
        .filter((line) =>
          /^Dropped \d+ spans because maxQueueSize reached$/.test(String(line.message)),
        );
      expect(warnings.length).toBeGreaterThan(0);
      expect(warnings.every((line) => line.severity === 'WARNING')).toBe(true);
    });
  });

  const requestModeUnderLoad = {
    TELEMETRY_EXPORT_MODE: 'request',
    OTEL_TRACES_SAMPLER: 'always_on',
  };

  it('request mode under load: every span delivered, in fewer exports than requests', async () => {
    // 64 requests at once, each flushing its spans before it answers: one export each would pass
    // the exporter's limit of 30 at once, and the exports past it would drop their spans.
    const setup = {
      traces: { behaviour: 'slow', delayMs: 50 },
      env: requestModeUnderLoad,
    } as const;
    await withSplitExport(setup, async ({ api, traces, metrics }) => {
      const requests = 64;
      const statuses = await Promise.all(Array.from({ length: requests }, () => greet(api.url)));
      expect(statuses.every((status) => status === 200)).toBe(true);
      // Each answer waited for a flush that carried its spans.
      expect(traces.spans()).toHaveLength(2 * requests);
      expect(traces.requests()).toBeLessThan(requests / 2);
      expect(await api.stop('SIGTERM')).toBe(0);
      expectAllDelivered(metrics, 2 * requests);
    });
  });

  it('request mode, a slow endpoint under load: answers within the cap, and every span arrives later', async () => {
    const setup = {
      traces: { behaviour: 'slow', delayMs: 3_000 },
      env: requestModeUnderLoad,
    } as const;
    await withSplitExport(setup, async ({ api, traces, metrics }) => {
      const requests = 48;
      const timed = async () => {
        const startedAt = performance.now();
        const status = await greet(api.url);
        return { status, ms: performance.now() - startedAt };
      };
      const answers = await Promise.all(Array.from({ length: requests }, timed));
      expect(answers.every((answer) => answer.status === 200)).toBe(true);
      // The flush cap is 1 s; none waits for the 3 s exports.
      expect(Math.max(...answers.map((answer) => answer.ms))).toBeLessThan(2_000);
      await traces.waitForSpans((spans) => spans.length >= 2 * requests, { timeoutMs: 15_000 });
      expect(await api.stop('SIGTERM')).toBe(0);
      expectAllDelivered(metrics, 2 * requests);
    });
  });

  it('counts the spans of refused exports as failed', async () => {
    const setup = {
      traces: { behaviour: 'forbidden' },
      env: { OTEL_BSP_SCHEDULE_DELAY: '20' },
    } as const;
    await withSplitExport(setup, async ({ api, traces, metrics }) => {
      const requests = 5;
      for (let i = 0; i < requests; i++) expect(await greet(api.url)).toBe(200);
      expect(await api.stop('SIGTERM')).toBe(0);
      const failed = (type: unknown) => type !== undefined && type !== 'queue_full';
      expect(spansProcessed(metrics, failed)).toBe(2 * requests);
      expect(spansProcessed(metrics, (type) => type === undefined)).toBe(0);
      expect(traces.spans()).toHaveLength(0);
    });
  });

  it('still exports the metrics at shutdown when the span endpoint never answers', async () => {
    const hanging = await startHangingEndpoint();
    const setup = { tracesUrl: hanging.url, metrics: { behaviour: 'slow', delayMs: 50 } } as const;
    try {
      await withSplitExport(setup, async ({ api, metrics }) => {
        for (let i = 0; i < 3; i++) expect(await greet(api.url)).toBe(200);
        const stoppedAt = performance.now();
        expect(await api.stop('SIGTERM')).toBe(0);
        // Within the shutdown cap of 4 s, with time to spare for Cloud Run's 10 s.
        expect(performance.now() - stoppedAt).toBeLessThan(6_000);
        const durations = metrics
          .metrics()
          .find((metric) => metric.name === 'http.server.request.duration');
        expect(durations?.points.reduce((total, point) => total + (point.count ?? 0), 0)).toBe(3);
        expect(api.stderr()).toBe('');
      });
    } finally {
      await hanging.close();
    }
  });

  it('keeps serving when nothing listens at the endpoint at all', async () => {
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}`,
      OTEL_BSP_SCHEDULE_DELAY: '50',
    };
    const backend = await startRole('backend', { env });
    const api = await startRole('api', { env: { ...env, BACKEND_URL: backend.url } });
    try {
      for (let i = 0; i < 20; i++) expect(await greet(api.url)).toBe(200);
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
    }
  });
});

describe('metric export', () => {
  it('reports a refused metric export once, keeps serving, and reports the recovery with what was lost', async () => {
    const receiver = await startOtlpReceiver();
    receiver.setBehaviour('forbidden');
    const backend = await startRole('backend');
    const api = await startRole('api', {
      env: {
        BACKEND_URL: backend.url,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_TRACES_EXPORTER: 'none',
        OTEL_METRIC_EXPORT_INTERVAL: '200',
      },
    });
    const metricLines = () =>
      api.logs().filter((line) => String(line.message).startsWith('metric export'));
    try {
      // A recorded duration: from now on every interval has something to export.
      expect(await greet(api.url)).toBe(200);
      await eventually(() => expect(receiver.requests()).toBeGreaterThan(3), 5_000);
      expect(await greet(api.url)).toBe(200);
      expect(metricLines().map((line) => [line.severity, line.message])).toEqual([
        [
          'WARNING',
          // The endpoint's status and the reason its google.rpc.Status gives (protobuf here).
          `metric export to ${receiver.url} failed (HTTP 403: "otlp-receiver: behaviour is forbidden"); metrics are dropped until it recovers (check OTEL_EXPORTER_OTLP_ENDPOINT and the service account's telemetry roles)`,
        ],
      ]);

      receiver.setBehaviour('ok');
      await eventually(() => expect(receiver.metrics().length).toBeGreaterThan(0), 5_000);
      await eventually(() => expect(metricLines()).toHaveLength(2), 5_000);
      const recovered = metricLines()[1];
      expect(recovered?.message).toMatch(
        new RegExp(`^metric export to ${receiver.url} recovered; \\d+ exports were lost$`),
      );
      expect(recovered?.lost).toBeGreaterThanOrEqual(3);
      expect(api.stderr()).toBe('');
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });

  it('keeps the temporality the OTLP exporter was asked for (delta, as some backends require)', async () => {
    const receiver = await startOtlpReceiver();
    const api = await startRole('api', {
      env: {
        BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_TRACES_EXPORTER: 'none',
        OTEL_METRIC_EXPORT_INTERVAL: '200',
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta',
      },
    });
    try {
      // A recorded duration, without a backend.
      expect((await fetch(`${api.url}/nope`)).status).toBe(404);
      const durations = await eventually(() => {
        const found = receiver
          .metrics()
          .filter((metric) => metric.name === 'http.server.request.duration');
        expect(found.length).toBeGreaterThan(0);
        return found;
      }, 5_000);
      expect(new Set(durations.map((metric) => metric.temporality))).toEqual(new Set(['DELTA']));
    } finally {
      await api.stop();
      await receiver.close();
    }
  });
});

describe('export at shutdown', () => {
  const check = "(check OTEL_EXPORTER_OTLP_ENDPOINT and the service account's telemetry roles)";

  it('says what is lost when the endpoint is still unreachable as the process stops', async () => {
    // Nothing listens there: the exporters retry past the shutdown flush's cap.
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const { backend, api } = await startRoles({
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      SHUTDOWN_TIMEOUT_MS: '2000',
    });
    try {
      expect(await greet(api.url)).toBe(200);
      expect(await api.stop('SIGTERM')).toBe(0);
      const lines = api.logs().filter((line) => line.severity === 'WARNING');
      expect(lines.map((line) => [line.message, line.lost])).toEqual(
        expect.arrayContaining([
          [
            `span export to ${endpoint} had not finished when the shutdown flush ended; 2 spans are lost with the process ${check}`,
            2,
          ],
          [
            `metric export to ${endpoint} had not finished when the shutdown flush ended; 1 exports are lost with the process ${check}`,
            1,
          ],
        ]),
      );
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
    }
  });

  it('counts the spans a full queue dropped that no line reported yet: every span is accounted for', async () => {
    // An endpoint that never answers and a queue of 4: most spans are dropped, and the SDK says
    // how many only when a later span finds room, which never comes.
    const endpoint = await startHangingEndpoint();
    const backend = await startRole('backend', {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint.url,
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_BSP_MAX_QUEUE_SIZE: '4',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2',
        OTEL_BSP_SCHEDULE_DELAY: '20',
        SHUTDOWN_TIMEOUT_MS: '2000',
      },
    });
    try {
      const calls = 20;
      for (let call = 0; call < calls; call++) {
        const { header } = newTraceParent();
        await grpcCallTo(backend.url, `/${UNKNOWN_METHOD}`, { traceparent: header });
      }
      expect(await backend.stop('SIGTERM')).toBe(0);
      const lost = (fragment: string) =>
        backend
          .logs()
          .filter((line) => String(line.message).includes(fragment))
          .reduce((sum, line) => sum + Number(line.lost), 0);
      const inFlight = lost('had not finished when the shutdown flush ended');
      const neverSent = lost('spans never reached the span export');
      expect(neverSent).toBeGreaterThan(0);
      expect(inFlight + neverSent).toBe(calls);
    } finally {
      await backend.stop();
      await endpoint.close();
    }
  });

  it('counts the spans failed exports lost before with those still in flight', async () => {
    const receiver = await startOtlpReceiver();
    receiver.setBehaviour('forbidden');
    const backend = await startRole('backend', { env: { OTEL_SDK_DISABLED: 'true' } });
    const api = await startRole('api', {
      env: {
        BACKEND_URL: backend.url,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_BSP_SCHEDULE_DELAY: '50',
        SHUTDOWN_TIMEOUT_MS: '2000',
      },
    });
    const spanLines = () =>
      api.logs().filter((line) => String(line.message).startsWith('span export'));
    try {
      // The api's two spans (SERVER, CLIENT) refused: lost.
      expect(await greet(api.url)).toBe(200);
      await eventually(() => expect(spanLines()).toHaveLength(1), 5_000);
      // Two more, in an export still waiting for its answer when the shutdown flush ends.
      receiver.setBehaviour('slow', 10_000);
      const before = receiver.requests();
      expect(await greet(api.url)).toBe(200);
      await eventually(() => expect(receiver.requests()).toBeGreaterThan(before), 5_000);
      expect(await api.stop('SIGTERM')).toBe(0);
      expect(spanLines().map((line) => [line.message, line.lost])).toEqual([
        [
          expect.stringMatching(
            /^span export to .* failed \(HTTP 403: "otlp-receiver: behaviour is forbidden"\); /,
          ),
          undefined,
        ],
        [
          `span export to ${receiver.url} had not finished when the shutdown flush ended; 4 spans are lost with the process ${check}`,
          4,
        ],
      ]);
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });
});

describe('an endpoint that takes exports only in part (OTLP partial success)', () => {
  it('says so once, with its reason and outside any trace, and gives the count at shutdown', async () => {
    const endpoint = await startPartialEndpoint(1, 'attribute value too long');
    const backend = await startRole('backend', {
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint.url, TELEMETRY_EXPORT_MODE: 'request' },
    });
    try {
      for (let call = 0; call < 4; call++) {
        const { header } = newTraceParent();
        // An empty GreetRequest: INVALID_ARGUMENT, a sampled call like any other.
        await grpcCallTo(backend.url, '/backend_service.v1.BackendService/Greet', {
          traceparent: header,
        });
      }
      expect(await backend.stop('SIGTERM')).toBe(0);
      const lines = backend.logs().filter((line) => String(line.message).includes('only in part'));
      expect(lines.map((line) => line.message)).toEqual([
        'the telemetry endpoint took an export only in part: 1 spans rejected ("attribute value too long"); later partial answers are counted, and reported at shutdown',
        expect.stringMatching(
          /^the telemetry endpoint took \d+ exports only in part: \d+ spans and \d+ metric data points rejected in all$/,
        ),
      ]);
      for (const line of lines) expect(line).not.toHaveProperty('logging.googleapis.com/trace');
      expect(Number(lines[1]?.rejectedSpans)).toBeGreaterThanOrEqual(4);
      expect(
        backend.logs().filter((line) => line.message === 'Received Partial Success response:'),
      ).toEqual([]);
    } finally {
      await backend.stop();
      await endpoint.close();
    }
  });
});

describe('OTEL_* values it cannot use', () => {
  it('an exporter list with nothing usable falls back to the default, otlp, and says so', async () => {
    const receiver = await startOtlpReceiver();
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_TRACES_EXPORTER: 'zipkin',
      OTEL_METRICS_EXPORTER: 'prometheus',
      OTEL_BSP_SCHEDULE_DELAY: '50',
    };
    const { backend, api } = await startRoles(env);
    try {
      const parent = newTraceParent();
      expect(await greet(api.url, { traceparent: parent.header })).toBe(200);
      await receiver.waitForSpans(
        (spans) => spans.filter((span) => span.traceId === parent.traceId).length === 3,
      );
      expect(await api.stop('SIGTERM')).toBe(0);
      expect(receiver.metrics().map((metric) => metric.name)).toContain(
        'http.server.request.duration',
      );
      const use = '(use otlp, console or none)';
      expect(warningsOf(api)).toEqual([
        `OTEL_METRICS_EXPORTER=prometheus names no supported exporter ${use}; using the default, otlp.`,
        `OTEL_TRACES_EXPORTER=zipkin names no supported exporter ${use}; using the default, otlp.`,
      ]);
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });

  it('OTEL_LOG_LEVEL=debug writes the SDK’s debug lines; bad numbers and OTEL_PROPAGATORS get one WARNING each', async () => {
    const receiver = await startOtlpReceiver();
    const api = await startRole('api', {
      env: {
        BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_LOG_LEVEL: 'Debug',
        OTEL_PROPAGATORS: 'b3',
        OTEL_METRIC_EXPORT_INTERVAL: '-5',
        OTEL_BSP_MAX_QUEUE_SIZE: '0',
      },
    });
    try {
      // LOG_LEVEL is info: what OTEL_LOG_LEVEL asks for passes it.
      const debugLines = api
        .logs()
        .filter((line) => line.component === 'opentelemetry' && line.severity === 'DEBUG');
      expect(debugLines.map((line) => String(line.message))).toContainEqual(
        expect.stringMatching(/^@opentelemetry\/api: Registered a global for trace v/),
      );
      expect(warningsOf(api)).toEqual([
        expect.stringMatching(/^OTEL_PROPAGATORS=b3 is ignored: /),
        'OTEL_METRIC_EXPORT_INTERVAL=-5 is not a whole number of milliseconds from 1 to 2147483647; using the default, 60000.',
        'OTEL_BSP_MAX_QUEUE_SIZE=0 is not a whole number of spans from 1 to 2147483647; using the default, 2048.',
      ]);
      expect(api.stderr()).toBe('');
    } finally {
      await api.stop();
      await receiver.close();
    }
  });
});

/** The WARNING lines OpenTelemetry's side of a role wrote, in order. */
function warningsOf(role: RoleProcess): unknown[] {
  return role
    .logs()
    .filter((line) => line.component === 'opentelemetry' && line.severity === 'WARNING')
    .map((line) => line.message);
}
