import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import type {
  MetricData,
  PushMetricExporter,
  ResourceMetrics,
  ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { followAggregationChoices } from './export-guard.js';

/**
 * Google's Telemetry API refuses a whole export request past these limits
 * (https://cloud.google.com/stackdriver/quotas, "Telemetry API limits"): attributes per
 * ResourceSpans, counting the resource's and every span's, event's and link's; data points per
 * metrics request. A busy instance's batch of 512 spans with a few attributes of one's own, or
 * the duration points of a service with many routes and status codes, reaches them.
 */
const TELEMETRY_API_LIMITS = {
  attributesPerResourceSpans: 8_192,
  pointsPerMetricsRequest: 200,
} as const;

type Done = (result: ExportResult) => void;

/** A failed export's result that says how many of its items its other parts delivered. */
type PartlyDelivered = ExportResult & { readonly delivered: number };

/** How many items of a failed export went through all the same (in parts that succeeded). */
export function deliveredOf(result: ExportResult): number {
  return (result as Partial<PartlyDelivered>).delivered ?? 0;
}

/**
 * Sends the parts of one export one after another; the first failure is the result, with the
 * number of items the other parts delivered (`deliveredOf`). A part the endpoint refused for its
 * content (400, 413: a span past a limit, say) does not stop the others; any other failure (the
 * endpoint down, a permission) does, as the rest would fail alike. The exporter's flush and
 * shutdown wait for parts not yet sent: the SDK calls them as soon as the export it knows of has
 * started.
 */
function exportInParts<T>(
  split: (whole: T) => readonly T[],
  send: (part: T, done: Done) => void,
  inner: { shutdown(): Promise<void>; forceFlush?(): Promise<void> },
  size: (part: T) => number = () => 0,
) {
  const pending = new Set<Promise<void>>();
  const settled = () => Promise.all(pending).then(() => undefined);
  return {
    export(whole: T, done: Done) {
      const parts = split(whole);
      if (parts.length === 1) return send(whole, done);
      const { promise, resolve } = Promise.withResolvers<void>();
      pending.add(promise);
      let next = 0;
      let sending: T | undefined;
      let delivered = 0;
      let failure: ExportResult | undefined;
      const sendNext = (result: ExportResult) => {
        if (result.code !== ExportResultCode.SUCCESS) failure ??= result;
        else if (sending !== undefined) delivered += size(sending);
        sending = parts[next++];
        if (sending !== undefined && (failure === undefined || othersMayGoThrough(result)))
          return send(sending, sendNext);
        pending.delete(promise);
        resolve();
        if (!failure) return done(result);
        const partly: PartlyDelivered = { ...failure, delivered };
        done(partly);
      };
      sendNext({ code: ExportResultCode.SUCCESS });
    },
    shutdown: () => settled().then(() => inner.shutdown()),
    forceFlush: () => settled().then(() => inner.forceFlush?.()),
  };
}

/** After a part went through, or was refused for its content alone, the next may go through. */
function othersMayGoThrough(result: ExportResult): boolean {
  if (result.code === ExportResultCode.SUCCESS) return true;
  const status = (result.error as { code?: unknown } | undefined)?.code;
  return status === 400 || status === 413;
}

function countKeys(attributes: object | undefined): number {
  return attributes ? Object.keys(attributes).length : 0;
}

function attributesOf(span: ReadableSpan): number {
  let count = countKeys(span.attributes);
  for (const event of span.events) count += countKeys(event.attributes);
  for (const link of span.links) count += countKeys(link.attributes);
  return count;
}

/** Batches of spans whose attributes, with their resource's, stay within `limit` each. */
function splitSpans(spans: ReadableSpan[], limit: number): ReadableSpan[][] {
  const first = spans[0];
  if (!first) return [spans];
  const budget = limit - countKeys(first.resource.attributes);
  const parts: ReadableSpan[][] = [];
  let part: ReadableSpan[] = [];
  let used = 0;
  for (const span of spans) {
    const count = attributesOf(span);
    if (part.length > 0 && used + count > budget) {
      parts.push(part);
      part = [];
      used = 0;
    }
    part.push(span);
    used += count;
  }
  parts.push(part);
  return parts;
}

/** Metrics requests of at most `limit` data points each; a metric's points may span several. */
function splitMetrics(metrics: ResourceMetrics, limit: number): ResourceMetrics[] {
  let total = 0;
  for (const scope of metrics.scopeMetrics)
    for (const metric of scope.metrics) total += metric.dataPoints.length;
  if (total <= limit) return [metrics];

  const parts: ResourceMetrics[] = [];
  let scopes: ScopeMetrics[] = [];
  let points = 0;
  for (const { scope, metrics: scoped } of metrics.scopeMetrics) {
    let current: ScopeMetrics | undefined;
    for (const metric of scoped) {
      for (let offset = 0; offset < metric.dataPoints.length; ) {
        if (points === limit) {
          parts.push({ resource: metrics.resource, scopeMetrics: scopes });
          scopes = [];
          points = 0;
          current = undefined;
        }
        const taken = Math.min(limit - points, metric.dataPoints.length - offset);
        if (!current) {
          current = { scope, metrics: [] };
          scopes.push(current);
        }
        const dataPoints = metric.dataPoints.slice(offset, offset + taken);
        current.metrics.push({ ...metric, dataPoints } as MetricData);
        points += taken;
        offset += taken;
      }
    }
  }
  if (scopes.length > 0) parts.push({ resource: metrics.resource, scopeMetrics: scopes });
  return parts;
}

/** Span export whose requests stay within the Telemetry API's attribute limit. */
export function spanExportWithinLimits(
  inner: SpanExporter,
  limit: number = TELEMETRY_API_LIMITS.attributesPerResourceSpans,
): SpanExporter {
  return exportInParts<ReadableSpan[]>(
    (spans) => splitSpans(spans, limit),
    (spans, done) => inner.export(spans, done),
    inner,
    (spans) => spans.length,
  );
}

/** Metric export whose requests stay within the Telemetry API's data point limit. */
export function metricExportWithinLimits(
  inner: PushMetricExporter,
  limit: number = TELEMETRY_API_LIMITS.pointsPerMetricsRequest,
): PushMetricExporter {
  const parts = exportInParts<ResourceMetrics>(
    (metrics) => splitMetrics(metrics, limit),
    (metrics, done) => inner.export(metrics, done),
    inner,
  );
  return followAggregationChoices(inner, parts);
}
