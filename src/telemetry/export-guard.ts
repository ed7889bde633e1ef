import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { context, ROOT_CONTEXT, TraceFlags } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { ReadableSpan, SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace';
import type { Logger } from './logger.js';
import { deliveredOf } from './telemetry-api-limits.js';

export type GuardedSpanExporter = SpanExporter &
  ReportingExporter & {
    /** Whether exports currently succeed within `promptMs`: only then is it worth waiting for one. */
    isPrompt(promptMs: number): boolean;
    /**
     * Counts the sampled spans that end, beside the batch processor: at shutdown, those that
     * never reached this exporter (dropped on a full queue, or still queued) are reported.
     */
    endedSpans: SpanProcessor;
  };

type ExportHealth = {
  readonly healthy: boolean;
  /** Records that an export carrying `size` items has started. */
  started(size: number): void;
  /** Records how an export carrying `size` items ended; `lost` is what a failure dropped. */
  ended(result: ExportResult, size: number, lost: number): void;
  /** At shutdown: one line for what is still in flight, or lost since exports failed. */
  reportUnsent(): void;
};

/**
 * Keeps export trouble out of the logs' way: one line when exports start failing (with what to
 * check), one when they recover, with what was lost between, and one at shutdown when exports
 * are still failing or unfinished (the exporter retries past the shutdown's flush, so the
 * process would otherwise exit with them in silence). Written outside any request's context: an
 * export can run inside the request that flushed it (request mode), and the lines are about the
 * instance, not that request's trace.
 */
function exportHealth(
  logger: Logger,
  signal: 'span' | 'metric',
  target: string,
  lostUnit: string,
): ExportHealth {
  let healthy = true;
  let lost = 0;
  let inFlight = 0;
  const warn = (fields: object, message: string) => warnOutsideRequests(logger, fields, message);
  return {
    get healthy() {
      return healthy;
    },
    started(size) {
      inFlight += size;
    },
    ended(result, size, dropped) {
      inFlight -= size;
      if (result.code === 0) {
        if (!healthy) {
          warn(
            { lost, lostUnit },
            `${signal} export to ${target} recovered; ${lost} ${lostUnit} were lost`,
          );
        }
        healthy = true;
        lost = 0;
        return;
      }
      if (healthy) {
        warn(
          { error: result.error },
          `${signal} export to ${target} failed${answerOf(result.error)}; ${signal}s are dropped until it recovers (${CHECK})`,
        );
      }
      healthy = false;
      lost += dropped;
    },
    reportUnsent() {
      if (inFlight > 0) {
        const unsent = inFlight + lost;
        warn(
          { lost: unsent, lostUnit },
          `${signal} export to ${target} had not finished when the shutdown flush ended; ${unsent} ${lostUnit} are lost with the process (${CHECK})`,
        );
      } else if (!healthy) {
        warn(
          { lost, lostUnit },
          `${signal} export to ${target} was still failing at shutdown; ${lost} ${lostUnit} were lost`,
        );
      }
    },
  };
}

const CHECK = "check OTEL_EXPORTER_OTLP_ENDPOINT and the service account's telemetry roles";

/** Export trouble is about the instance: its lines carry no request's trace. */
function warnOutsideRequests(logger: Logger, fields: object, message: string): void {
  context.with(ROOT_CONTEXT, () => logger.warn(fields, message));
}

/**
 * What the endpoint answered a refused export, when the exporter kept it: ` (HTTP 403: "...")`,
 * the reason read from the answer's google.rpc.Status (JSON or protobuf), where OTLP puts it.
 */
function answerOf(error: Error | undefined): string {
  const { code, data } = (error ?? {}) as { code?: unknown; data?: unknown };
  if (typeof code !== 'number') return '';
  const reason = typeof data === 'string' ? statusMessageOf(data) : undefined;
  return ` (HTTP ${code}${reason ? `: ${JSON.stringify(reason)}` : ''})`;
}

/** google.rpc.Status's `message` (field 2) from an answer's body, or undefined. */
function statusMessageOf(body: string): string | undefined {
  try {
    const message: unknown = (JSON.parse(body) as { message?: unknown } | null)?.message;
    return typeof message === 'string' ? message : undefined;
  } catch {
    // Not JSON: protobuf, which the exporter read as UTF-8 text.
  }
  try {
    const reader = new BinaryReader(Buffer.from(body, 'utf8'));
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 2 && wireType === WireType.LengthDelimited) return reader.string();
      reader.skip(wireType, field);
    }
  } catch {
    // Not a google.rpc.Status either.
  }
  return undefined;
}

/** An exporter that reports its trouble once (see `exportHealth`), and at shutdown. */
export type ReportingExporter = { reportUnsent(): void };

/** Span export that reports its trouble (see `exportHealth`) and knows whether it is prompt. */
export function guardSpanExporter(
  inner: SpanExporter,
  logger: Logger,
  target: string,
): GuardedSpanExporter {
  const health = exportHealth(logger, 'span', target, 'spans');
  let lastDurationMs = 0;
  const inFlight = new Set<number>();
  let ended = 0;
  let handed = 0;
  return {
    endedSpans: {
      onStart: () => {},
      onEnd(span) {
        if (span.spanContext().traceFlags & TraceFlags.SAMPLED) ended++;
      },
      shutdown: () => Promise.resolve(),
      forceFlush: () => Promise.resolve(),
    },
    isPrompt(promptMs) {
      const now = performance.now();
      const oldest = Math.min(...inFlight);
      return health.healthy && lastDurationMs <= promptMs && !(now - oldest > promptMs);
    },
    export(spans: ReadableSpan[], done: (result: ExportResult) => void) {
      const startedAt = performance.now();
      inFlight.add(startedAt);
      handed += spans.length;
      health.started(spans.length);
      inner.export(spans, (result) => {
        inFlight.delete(startedAt);
        lastDurationMs = performance.now() - startedAt;
        health.ended(result, spans.length, spans.length - deliveredOf(result));
        done(result);
      });
    },
    reportUnsent() {
      health.reportUnsent();
      const neverSent = ended - handed;
      if (neverSent <= 0) return;
      warnOutsideRequests(
        logger,
        { lost: neverSent, lostUnit: 'spans' },
        `${neverSent} spans never reached the span export to ${target}: dropped because the queue was full (OTEL_BSP_MAX_QUEUE_SIZE), or still queued when the shutdown flush ended`,
      );
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}

/** Metric export that reports its trouble like spans' (see `exportHealth`). */
export function guardMetricExporter(
  inner: PushMetricExporter,
  logger: Logger,
  target: string,
): PushMetricExporter & ReportingExporter {
  const health = exportHealth(logger, 'metric', target, 'exports');
  const guarded = {
    export(metrics: ResourceMetrics, done: (result: ExportResult) => void) {
      health.started(1);
      inner.export(metrics, (result) => {
        health.ended(result, 1, 1);
        done(result);
      });
    },
    reportUnsent: () => health.reportUnsent(),
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush(),
  };
  return followAggregationChoices(inner, guarded);
}

/** A wrapping exporter keeps the choices of the one it wraps (delta or cumulative, say). */
export function followAggregationChoices<Outer extends PushMetricExporter>(
  inner: PushMetricExporter,
  outer: Outer,
): Outer {
  if (inner.selectAggregationTemporality)
    outer.selectAggregationTemporality = inner.selectAggregationTemporality.bind(inner);
  if (inner.selectAggregation) outer.selectAggregation = inner.selectAggregation.bind(inner);
  return outer;
}
