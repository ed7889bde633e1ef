import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BatchSpanProcessor,
  type ReadableSpan,
  type SpanExporter,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { afterEach, describe, expect, it } from 'vitest';
import {
  deliveredOf,
  metricExportWithinLimits,
  spanExportWithinLimits,
} from '../src/telemetry/telemetry-api-limits.js';
import {
  type Attributes,
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from '../tools/otlp-receiver/index.ts';
import { postGreet } from './helpers/http.js';
import { startRoles } from './helpers/roles.js';

/** Google's limits (cloud.google.com/stackdriver/quotas), not the module's copy of them. */
const LIMIT = 8_192;
const POINTS_LIMIT = 200;
/** As many attributes as a role's resource has on Cloud Run, which each request counts too. */
const resource = resourceFromAttributes(
  Object.fromEntries([
    ['service.name', 'limits-test'],
    ...Array.from({ length: 11 }, (_, k) => [`resource.attribute.${k}`, 'x']),
  ]),
);

/** Attributes a request carries as the Telemetry API counts them, per resource. */
function attributesPerResource(spans: readonly ReceivedSpan[]): number[] {
  const byResource = new Map<string, { resource: Attributes; count: number }>();
  for (const span of spans) {
    const key = JSON.stringify(span.resource);
    const entry = byResource.get(key) ?? { resource: span.resource, count: 0 };
    entry.count += Object.keys(span.attributes).length;
    for (const event of span.events) entry.count += Object.keys(event.attributes).length;
    for (const link of span.links) entry.count += Object.keys(link.attributes).length;
    byResource.set(key, entry);
  }
  return [...byResource.values()].map((e) => e.count + Object.keys(e.resource).length);
}

let receiver: OtlpReceiver | undefined;
afterEach(async () => {
  await receiver?.close();
  receiver = undefined;
});

async function exportSpans(exporter: SpanExporter, count: number): Promise<void> {
  const provider = new TracerProvider({
    resource,
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        maxQueueSize: count,
        maxExportBatchSize: count,
        scheduledDelayMillis: 60_000,
      }),
    ],
  });
  const tracer = provider.getTracer('limits');
  for (let i = 0; i < count; i++) {
    const span = tracer.startSpan(`span ${i}`, {
      attributes: Object.fromEntries(Array.from({ length: 10 }, (_, k) => [`a${k}`, i])),
      links: [{ context: tracer.startSpan('linked').spanContext(), attributes: { why: 'test' } }],
    });
    span.addEvent('event', { one: 1, two: 2 });
    span.end();
  }
  await provider.shutdown();
}

describe("exports within the Telemetry API's limits", () => {
  it('splits a batch of spans whose attributes pass 8,192, and every span arrives', async () => {
    receiver = await startOtlpReceiver();
    const requests: number[][] = [];
    receiver.onSpans((spans) => requests.push(attributesPerResource(spans)));

    // 900 spans of 13 attributes (10 + a link's + an event's 2): 11,700, and the resource's 12
    // in each request (630 spans are 8,190 alone).
    const count = 900;
    const otlp = new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` });
    await exportSpans(spanExportWithinLimits(otlp), count);

    expect(receiver.spans().filter((s) => s.name.startsWith('span ')).length).toBe(count);
    expect(requests.length).toBeGreaterThan(1);
    for (const perResource of requests) {
      for (const attributes of perResource) expect(attributes).toBeLessThanOrEqual(LIMIT);
    }
  });

  it('sends a batch within the limit in one request, as it came', async () => {
    receiver = await startOtlpReceiver();
    let requests = 0;
    receiver.onSpans(() => requests++);
    const otlp = new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` });
    await exportSpans(spanExportWithinLimits(otlp), 100);
    expect(receiver.spans().filter((s) => s.name.startsWith('span ')).length).toBe(100);
    expect(requests).toBe(1);
  });

  it('splits metrics of more than 200 data points into requests of 200 at most', async () => {
    receiver = await startOtlpReceiver();
    const pointsPerRequest: number[] = [];
    receiver.onMetrics((metrics) =>
      pointsPerRequest.push(metrics.reduce((n, m) => n + m.points.length, 0)),
    );
    const otlp = new OTLPMetricExporter({
      url: `${receiver.url}/v1/metrics`,
      temporalityPreference: AggregationTemporality.DELTA,
    });
    const exporter = metricExportWithinLimits(otlp);
    // The wrapper keeps the exporter's choice of temporality.
    expect(exporter.selectAggregationTemporality).toBeDefined();
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 600_000 });
    const provider = new MeterProvider({ resource, readers: [reader] });
    const meter = provider.getMeter('limits');
    const durations = meter.createHistogram('test.duration', { unit: 's' });
    const requests = meter.createCounter('test.requests');
    for (let route = 0; route < 300; route++) {
      durations.record(0.01, { 'http.route': `/r${route}` });
      requests.add(1, { 'http.route': `/r${route}` });
    }
    await provider.shutdown();

    expect(pointsPerRequest.reduce((a, b) => a + b, 0)).toBe(600);
    expect(Math.max(...pointsPerRequest)).toBe(POINTS_LIMIT);
    expect(pointsPerRequest).toHaveLength(3);
    const received = receiver.metrics().filter((m) => m.name === 'test.duration');
    expect(received.every((m) => m.temporality === 'DELTA')).toBe(true);
    const routes = new Set(
      received.flatMap((m) => m.points.map((p) => p.attributes['http.route'])),
    );
    expect(routes.size).toBe(300);
  });

  /**
   * Exports 50 spans of 13 attributes in parts of at most 110 attributes (the resource's 12 and
   * 7 spans, 8 parts)
   * to an endpoint answering the nth request with `statusOf(n)`; what the export reported (and
   * how many spans it says went through), and how many requests the endpoint received.
   */
  async function exportPartsTo(statusOf: (n: number) => number) {
    let received = 0;
    const server = createServer((req, res) => {
      received++;
      const status = statusOf(received);
      req.resume();
      req.on('end', () => res.writeHead(status).end());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const otlp = new OTLPTraceExporter({ url: `http://127.0.0.1:${port}/v1/traces` });
      let result: number | undefined;
      let delivered: number | undefined;
      const exporter = spanExportWithinLimits(otlp, 110);
      const recording: SpanExporter = {
        export: (spans: ReadableSpan[], done) =>
          exporter.export(spans, (r) => {
            result = r.code;
            delivered = deliveredOf(r);
            done(r);
          }),
        shutdown: () => exporter.shutdown(),
      };
      await exportSpans(recording, 50);
      return { result, delivered, received };
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  it.each([400, 413])(
    'sends the other parts when one is refused for its content (%i), and reports the failure with what went through',
    async (status) => {
      const { result, delivered, received } = await exportPartsTo((n) => (n === 1 ? status : 200));
      expect(result).toBe(ExportResultCode.FAILED);
      expect(received).toBe(8);
      // The first part's 7 spans were refused; the other 43 arrived, and the lost count says so.
      expect(delivered).toBe(43);
    },
  );

  it('stops at a part refused for anything else (403) and reports the failure', async () => {
    const { result, delivered, received } = await exportPartsTo(() => 403);
    expect(result).toBe(ExportResultCode.FAILED);
    expect(received).toBe(1);
    expect(delivered).toBe(0);
  });

  it('is how the roles export: a shutdown flush of 1,000 spans arrives in requests within the limit', async () => {
    receiver = await startOtlpReceiver();
    const requests: number[][] = [];
    receiver.onSpans((spans) => requests.push(attributesPerResource(spans)));
    const { api, backend } = await startRoles({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '600000',
      OTEL_BSP_MAX_QUEUE_SIZE: '4096',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4096',
    });
    const greetings = 500;
    try {
      for (let sent = 0; sent < greetings; sent += 50) {
        await Promise.all(
          Array.from({ length: 50 }, async () => {
            const response = await postGreet(api.url, { name: 'Limits' });
            await response.arrayBuffer();
            expect(response.status).toBe(200);
          }),
        );
      }
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
    }
    const apiSpans = receiver.spans().filter((s) => s.resource['service.name'] === 'greeter-api');
    expect(apiSpans.filter((s) => s.kind === 'SERVER')).toHaveLength(greetings);
    expect(apiSpans.filter((s) => s.kind === 'CLIENT')).toHaveLength(greetings);
    const apiTotal = attributesPerResource(apiSpans)[0] ?? 0;
    expect(apiTotal).toBeGreaterThan(LIMIT);
    for (const perResource of requests) {
      for (const attributes of perResource) expect(attributes).toBeLessThanOrEqual(LIMIT);
    }
  }, 60_000);
});
