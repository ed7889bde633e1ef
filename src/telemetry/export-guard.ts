import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from './logger.js';

export type GuardedSpanExporter = SpanExporter & {
  /** Whether exports currently succeed within `promptMs`: only then is it worth waiting for one. */
  isPrompt(promptMs: number): boolean;
};

/**
 * Keeps export trouble out of requests and out of the logs' way: one line when exports start
 * failing (with what to check), one when they recover, with the count of spans lost between.
 */
export function guardSpanExporter(
  inner: SpanExporter,
  logger: Logger,
  target: string,
): GuardedSpanExporter {
  let healthy = true;
  let lostSpans = 0;
  let lastDurationMs = 0;
  const inFlight = new Set<number>();
  return {
    isPrompt(promptMs) {
      const now = performance.now();
      const oldest = Math.min(...inFlight);
      return healthy && lastDurationMs <= promptMs && !(now - oldest > promptMs);
    },
    export(spans: ReadableSpan[], done: (result: ExportResult) => void) {
      const startedAt = performance.now();
      inFlight.add(startedAt);
      inner.export(spans, (result) => {
        inFlight.delete(startedAt);
        lastDurationMs = performance.now() - startedAt;
        if (result.code === 0) {
          if (!healthy) {
            logger.warn(
              { lostSpans },
              `span export to ${target} recovered; ${lostSpans} spans were lost`,
            );
          }
          healthy = true;
          lostSpans = 0;
        } else {
          if (healthy) {
            logger.warn(
              { error: result.error?.message },
              `span export to ${target} failed; spans are dropped until it recovers (check OTEL_EXPORTER_OTLP_ENDPOINT and the service account's telemetry roles)`,
            );
          }
          healthy = false;
          lostSpans += spans.length;
        }
        done(result);
      });
    },
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve(),
  };
}
