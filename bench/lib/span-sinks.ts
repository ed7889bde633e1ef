import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import {
  decodeMetricsRequest,
  type ReceivedMetric,
  startOtlpReceiver,
} from '../../tools/otlp-receiver/index.ts';
import { fields } from './protobuf-fields.ts';
import { sum } from './stats.ts';

/*
 * Where the "exported" configurations send OTLP/HTTP. Both kinds count spans by the resource
 * attributes `bench.config` and `service.name`:
 * - receiver: tools/otlp-receiver, which decodes every span (and so checks what is sent).
 * - counter: walks only the protobuf envelope (ResourceSpans > Resource, ScopeSpans > Span) and
 *   answers 200, costing the shared CPUs little more than a remote collector would.
 * Both also read the SDK's own count of the spans it did not deliver (a full queue, a failed
 * export), from the metric exports, which come once a minute and at shutdown.
 */

export type SpanSink = {
  readonly kind: 'receiver' | 'counter';
  readonly url: string;
  spansOf(config: string, service: string): number;
  /**
   * Spans the SDK reported it dropped or failed to export (otel.sdk.processor.span.processed);
   * undefined when no process of the service sent that metric at all.
   */
  undeliveredOf(config: string, service: string): number | undefined;
  /** OTLP HTTP requests received (traces and metrics). */
  requests(): number;
  close(): Promise<void>;
};

export async function startSpanSink(kind: SpanSink['kind']): Promise<SpanSink> {
  return kind === 'receiver' ? startDecodingSink() : startCountingSink();
}

function counter() {
  const counts = new Map<string, number>();
  return {
    add(config: string, service: string, spans: number) {
      const key = `${config}/${service}`;
      counts.set(key, (counts.get(key) ?? 0) + spans);
    },
    get: (config: string, service: string) => counts.get(`${config}/${service}`) ?? 0,
  };
}

const PROCESSED = 'otel.sdk.processor.span.processed';

/**
 * The SDK's undelivered-span counts. Its counters are cumulative per process, so each export
 * repeats the total so far: keep the latest per process and reason, add across them.
 */
function undeliveredCounter() {
  const latest = new Map<string, { config: string; service: string; value: number }>();
  const reported = new Set<string>();
  return {
    add(metrics: readonly ReceivedMetric[]) {
      for (const metric of metrics) {
        if (metric.name !== PROCESSED) continue;
        const config = String(metric.resource['bench.config']);
        const service = String(metric.resource['service.name']);
        const instance = String(metric.resource['service.instance.id']);
        reported.add(`${config}/${service}`);
        for (const point of metric.points) {
          const reason = point.attributes['error.type'];
          if (reason === undefined) continue;
          const key = `${config}/${service}/${instance}/${String(reason)}`;
          latest.set(key, { config, service, value: point.value ?? 0 });
        }
      }
    },
    get: (config: string, service: string) =>
      reported.has(`${config}/${service}`)
        ? sum(
            [...latest.values()]
              .filter((entry) => entry.config === config && entry.service === service)
              .map((entry) => entry.value),
          )
        : undefined,
  };
}

async function startDecodingSink(): Promise<SpanSink> {
  const receiver = await startOtlpReceiver({ retain: false });
  const counts = counter();
  const undelivered = undeliveredCounter();
  receiver.onSpans((spans) => {
    for (const span of spans)
      counts.add(String(span.resource['bench.config']), String(span.resource['service.name']), 1);
  });
  receiver.onMetrics(undelivered.add);
  return {
    kind: 'receiver',
    url: receiver.url,
    spansOf: counts.get,
    undeliveredOf: undelivered.get,
    requests: () => receiver.requests(),
    close: () => receiver.close(),
  };
}

/** The string attributes of an opentelemetry.proto.resource.v1.Resource. */
function resourceStrings(resource: Buffer): Map<string, string> {
  const strings = new Map<string, string>();
  for (const attribute of fields(resource)) {
    if (attribute.field !== 1 || !attribute.bytes) continue;
    let key = '';
    let value: string | undefined;
    for (const part of fields(attribute.bytes)) {
      if (part.field === 1 && part.bytes) key = part.bytes.toString('utf8');
      if (part.field === 2 && part.bytes) {
        for (const any of fields(part.bytes))
          if (any.field === 1 && any.bytes) value = any.bytes.toString('utf8');
      }
    }
    if (value !== undefined) strings.set(key, value);
  }
  return strings;
}

/** Adds the spans of one ExportTraceServiceRequest to `counts`. */
export function countTraceRequest(
  body: Buffer,
  add: (config: string, service: string, spans: number) => void,
): void {
  for (const resourceSpans of fields(body)) {
    if (resourceSpans.field !== 1 || !resourceSpans.bytes) continue;
    let attributes = new Map<string, string>();
    let spans = 0;
    for (const part of fields(resourceSpans.bytes)) {
      if (part.field === 1 && part.bytes) attributes = resourceStrings(part.bytes);
      if (part.field === 2 && part.bytes) {
        for (const scoped of fields(part.bytes)) if (scoped.field === 2) spans++;
      }
    }
    add(
      attributes.get('bench.config') ?? 'undefined',
      attributes.get('service.name') ?? 'undefined',
      spans,
    );
  }
}

async function startCountingSink(): Promise<SpanSink> {
  const counts = counter();
  const undelivered = undeliveredCounter();
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (String(req.headers['content-type']).includes('protobuf')) {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        try {
          if (req.url === '/v1/traces') countTraceRequest(body, counts.add);
          if (req.url === '/v1/metrics') undelivered.add(decodeMetricsRequest(body, 'protobuf'));
        } catch (error) {
          res.writeHead(400).end(String(error));
          return;
        }
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': 0 }).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    kind: 'counter',
    url: `http://127.0.0.1:${port}`,
    spansOf: counts.get,
    undeliveredOf: undelivered.get,
    requests: () => requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
