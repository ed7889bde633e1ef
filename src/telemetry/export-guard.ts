import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from './logger.js';

export type GuardedSpanExporter = SpanExporter & {
  /** Whether exports currently succeed within `promptMs`: only then is it worth waiting for one. */
  isPrompt(promptMs: number): boolean;
};

type ExportHealth = {
  readonly healthy: boolean;
  /** Records one export's result; `lost` is what a failed export dropped. */
  record(result: ExportResult, lost: number): void;
};

/**
 * Keeps export trouble out of the logs' way: one line when exports start failing (with what to
 * check), one when they recover, with what was lost between. Written outside any request's
 * context: an export can run inside the request that flushed it (request mode), and the lines
 * are about the instance, not that request's trace.
 */
function exportHealth(
  logger: Logger,
  signal: 'span' | 'metric',
  target: string,
  lostUnit: string,
): ExportHealth {
  let healthy = true;
  let lost = 0;
  return {
    get healthy() {
      return healthy;
    },
    record(result, dropped) {
      if (result.code === 0) {
        if (!healthy) {
          const message = `${signal} export to ${target} recovered; ${lost} ${lostUnit} were lost`;
          context.with(ROOT_CONTEXT, () => logger.warn({ lost, lostUnit }, message));
        }
        healthy = true;
        lost = 0;
        return;
      }
      if (healthy) {
        const message = `${signal} export to ${target} failed; ${signal}s are dropped until it recovers (check OTEL_EXPORTER_OTLP_ENDPOINT and the service account's telemetry roles)`;
        context.with(ROOT_CONTEXT, () => logger.warn({ error: result.error }, message));
      }
      healthy = false;
      lost += dropped;
    },
  };
}

/** Span export that reports its trouble once (see `exportHealth`) and knows whether it is prompt. */
export function guardSpanExporter(
  inner: SpanExporter,
  logger: Logger,
  target: string,
): GuardedSpanExporter {
  const health = exportHealth(logger, 'span', target, 'spans');
  let lastDurationMs = 0;
  const inFlight = new Set<number>();
  return {
    isPrompt(promptMs) {
      const now = performance.now();
      const oldest = Math.min(...inFlight);
      return health.healthy && lastDurationMs <= promptMs && !(now - oldest > promptMs);
    },
    export(spans: ReadableSpan[], done: (result: ExportResult) => void) {
      const startedAt = performance.now();
      inFlight.add(startedAt);
      inner.export(spans, (result) => {
        inFlight.delete(startedAt);
        lastDurationMs = performance.now() - startedAt;
        health.record(result, spans.length);
        done(result);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}

/** Metric export that reports its trouble once, like spans' (see `exportHealth`). */
export function guardMetricExporter(
  inner: PushMetricExporter,
  logger: Logger,
  target: string,
): PushMetricExporter {
  const health = exportHealth(logger, 'metric', target, 'exports');
  const guarded: PushMetricExporter = {
    export(metrics: ResourceMetrics, done: (result: ExportResult) => void) {
      inner.export(metrics, (result) => {
        health.record(result, 1);
        done(result);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush(),
  };
  return followAggregationChoices(inner, guarded);
}

/** A wrapping exporter keeps the choices of the one it wraps (delta or cumulative, say). */
export function followAggregationChoices(
  inner: PushMetricExporter,
  outer: PushMetricExporter,
): PushMetricExporter {
  if (inner.selectAggregationTemporality)
    outer.selectAggregationTemporality = inner.selectAggregationTemporality.bind(inner);
  if (inner.selectAggregation) outer.selectAggregation = inner.selectAggregation.bind(inner);
  return outer;
}
