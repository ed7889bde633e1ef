import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from './logger.js';

export type GuardedSpanExporter = SpanExporter & { readonly healthy: boolean };

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
  return {
    get healthy() {
      return healthy;
    },
    export(spans: ReadableSpan[], done: (result: ExportResult) => void) {
      inner.export(spans, (result) => {
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
