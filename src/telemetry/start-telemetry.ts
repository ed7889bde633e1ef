import { context, type Meter, metrics, propagation, type Tracer, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { CompositePropagator, W3CBaggagePropagator } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  type SpanExporter,
  type SpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import type { Config } from '../config.js';
import { loadGoogleAuthLibrary } from '../identity/google-auth-library.js';
import { coalesceFlushes } from './coalesce-flushes.js';
import {
  type GuardedSpanExporter,
  guardSpanExporter,
  type ReportingExporter,
} from './export-guard.js';
import {
  createMeterProvider,
  describeTarget,
  exportsAtOnce,
  googleAuthHeaders,
  metricReaders,
  otlpSpanExporter,
} from './exporters.js';
import { createLogger, type Logger } from './logger.js';
import { routeOtelDiagnostics } from './otel-diagnostics.js';
import {
  batchOptionsFromEnv,
  exporterChoices,
  hasOtlpEndpoint,
  isSdkDisabled,
  samplerFromEnv,
  spanLimitsFromEnv,
  warnIfPropagatorsSet,
} from './otel-env.js';
import { createCloudRunPropagator } from './propagation/index.js';
import { createRequestAttributesSpanProcessor } from './request-attributes.js';
import { createResource, detectedProjectId } from './resource.js';
import { createServerSpans, type ServerSpans } from './server-span.js';
import { spanExportWithinLimits } from './telemetry-api-limits.js';

/** The longest a response waits for its spans' export in request mode. */
export const REQUEST_FLUSH_CAP_MS = 1_000;
const SHUTDOWN_FLUSH_CAP_MS = 4_000;
/**
 * Request mode's flushes in flight at once; more waiting requests share the next one. Measured
 * with every request sampled (docs/benchmarks.md): 1 costs a slow endpoint's requests a second
 * round trip, 16 costs a fast one's CPU in exports.
 */
const MAX_CONCURRENT_REQUEST_FLUSHES = 8;
/** What the metrics keep of the shutdown cap when the spans' flush stalls. */
const METRICS_SHUTDOWN_RESERVE_MS = 1_000;

export type Telemetry = {
  readonly tracer: Tracer;
  readonly meter: Meter;
  readonly logger: Logger;
  readonly serverSpans: ServerSpans;
  /** Flushes and stops every exporter, giving up after `withinMs` (at most 4 s). Safe to call more than once. */
  shutdown(withinMs?: number): Promise<void>;
};

export type TelemetryOptions = {
  /** Baggage keys that callers may not set (the public edge strips them). */
  untrustedBaggageKeys?: readonly string[];
  /** Replaces stdout, for tests. */
  logDestination?: Parameters<typeof createLogger>[0]['destination'];
};

/**
 * Starts tracing, metrics and logging for one role. Lenient: a telemetry failure leaves
 * no-op telemetry and a warning, never a dead service.
 */
export async function startTelemetry(
  config: Config,
  options: TelemetryOptions = {},
): Promise<Telemetry> {
  const resource = createResource(config);
  const labels = serviceLabels(resource);
  // Undefined on Cloud Run until the metadata server has said.
  let projectId = config.GOOGLE_CLOUD_PROJECT ?? (config.onCloudRun ? undefined : 'local');
  const logger = createLogger({
    level: config.LOG_LEVEL,
    format: config.LOG_FORMAT,
    labels,
    projectId: () => projectId ?? 'unknown',
    baggageKeys: config.TELEMETRY_BAGGAGE_ATTRIBUTES,
    ...(options.logDestination ? { destination: options.logDestination } : {}),
  });
  const diagnostics = routeOtelDiagnostics(logger);

  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  warnIfPropagatorsSet();
  propagation.setGlobalPropagator(
    new CompositePropagator({
      propagators: [
        createCloudRunPropagator({
          writeCloudTraceContext: config.TELEMETRY_WRITE_CLOUD_TRACE_CONTEXT,
        }),
        new W3CBaggagePropagator(),
      ],
    }),
  );

  const auth = config.onCloudRun ? googleAuthHeaders(() => projectId) : undefined;
  if (config.onCloudRun && !config.GOOGLE_CLOUD_PROJECT) {
    // The detector gives up after a few seconds; the metadata client keeps trying.
    detectedProjectId(resource)
      .catch(async (): Promise<string> => {
        const { gcpMetadata } = await loadGoogleAuthLibrary();
        return gcpMetadata.project('project-id');
      })
      .then(
        (id) => {
          projectId = id;
        },
        (error: unknown) =>
          logger.warn({ error }, 'could not read the project id from the metadata server'),
      );
  }

  const processors: SpanProcessor[] = [
    createRequestAttributesSpanProcessor(config.TELEMETRY_BAGGAGE_ATTRIBUTES),
  ];
  let otlp: GuardedSpanExporter | undefined;
  const reporting: ReportingExporter[] = [];
  let tracerProvider: TracerProvider | undefined;
  let meterProvider: MeterProvider | undefined;
  if (!isSdkDisabled()) {
    try {
      const defaultMetrics = config.onCloudRun || hasOtlpEndpoint('METRICS') ? 'otlp' : 'none';
      const readers = await metricReaders(
        exporterChoices('OTEL_METRICS_EXPORTER', defaultMetrics),
        auth,
        logger,
        reporting,
      );
      if (readers.length > 0) meterProvider = await createMeterProvider(resource, readers);
      const defaultExporter = config.onCloudRun || hasOtlpEndpoint('TRACES') ? 'otlp' : 'none';
      const batchOptions = batchOptionsFromEnv();
      for (const choice of exporterChoices('OTEL_TRACES_EXPORTER', defaultExporter)) {
        let exporter: SpanExporter = new ConsoleSpanExporter();
        if (choice === 'otlp') {
          otlp = guardSpanExporter(
            spanExportWithinLimits(
              await otlpSpanExporter(
                auth,
                exportsAtOnce(batchOptions, MAX_CONCURRENT_REQUEST_FLUSHES),
              ),
            ),
            logger,
            describeTarget('TRACES', auth),
          );
          reporting.push(otlp);
          exporter = otlp;
        }
        processors.push(
          new BatchSpanProcessor({
            exporter,
            ...batchOptions,
            // otel.sdk.processor.span.processed: spans exported, failed, or dropped on a full queue.
            ...(meterProvider ? { selfObsMeterProvider: meterProvider } : {}),
          }),
        );
        if (choice === 'otlp' && otlp) processors.push(otlp.endedSpans);
      }
      tracerProvider = new TracerProvider({
        resource,
        sampler: samplerFromEnv(),
        // sdk-trace 3.x reads no OTEL_* limits itself: these are the only ones in force.
        spanLimits: spanLimitsFromEnv(),
        spanProcessors: processors,
      });
    } catch (error) {
      logger.warn({ error }, 'telemetry export could not start; the service runs without it');
      tracerProvider = new TracerProvider({ resource, spanProcessors: processors.slice(0, 1) });
      void meterProvider?.shutdown();
      meterProvider = undefined;
    }
  }
  if (tracerProvider) trace.setGlobalTracerProvider(tracerProvider);
  if (meterProvider) metrics.setGlobalMeterProvider(meterProvider);

  // Nothing to wait for when spans go out in batches.
  let afterRequest: (() => Promise<void>) | undefined;
  if (config.telemetryExportMode === 'request' && tracerProvider) {
    const provider = tracerProvider;
    const flush = coalesceFlushes(() => provider.forceFlush(), MAX_CONCURRENT_REQUEST_FLUSHES);
    afterRequest = () => {
      // A down or slow endpoint must not slow requests: while exports fail or take longer
      // than the cap, the flush starts but the response does not wait for it.
      const flushing = within(flush(), REQUEST_FLUSH_CAP_MS);
      return otlp && !otlp.isPrompt(REQUEST_FLUSH_CAP_MS) ? Promise.resolve() : flushing;
    };
  }

  const tracer = trace.getTracer('cloud-run-services');
  let stopping: Promise<void> | undefined;
  return {
    tracer,
    meter: metrics.getMeter('cloud-run-services'),
    logger,
    serverSpans: createServerSpans({
      tracer,
      logger,
      afterRequest,
      ...(options.untrustedBaggageKeys
        ? { untrustedBaggageKeys: options.untrustedBaggageKeys }
        : {}),
    }),
    shutdown(withinMs = SHUTDOWN_FLUSH_CAP_MS) {
      const capMs = Math.min(withinMs, SHUTDOWN_FLUSH_CAP_MS);
      stopping ??= shutDownInOrder(tracerProvider, meterProvider, capMs).then(() => {
        for (const exporter of reporting) exporter.reportUnsent();
        diagnostics.reportRejected();
        return new Promise<void>((resolve) => logger.flush(() => resolve()));
      });
      return stopping;
    },
  };
}

function serviceLabels(resource: Resource): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [key, value] of Object.entries(resource.attributes)) {
    if (key.startsWith('service.') || key.startsWith('deployment.')) labels[key] = String(value);
  }
  return labels;
}

async function within(work: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!work) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work.catch(() => undefined),
    new Promise((resolve) => {
      timer = setTimeout(resolve, Math.max(ms, 0));
    }),
  ]);
  clearTimeout(timer);
}

/**
 * Spans first, so that the counts their processor keeps (spans delivered, failed, dropped) are
 * complete when the metrics go; if the spans' flush stalls, the metrics still get a reserve of
 * the cap, and the spans go on trying meanwhile.
 */
async function shutDownInOrder(
  tracerProvider: TracerProvider | undefined,
  meterProvider: MeterProvider | undefined,
  capMs: number,
): Promise<void> {
  const startedAt = performance.now();
  const spans = tracerProvider?.shutdown();
  const reserveMs = meterProvider ? Math.min(METRICS_SHUTDOWN_RESERVE_MS, capMs / 2) : 0;
  await within(spans, capMs - reserveMs);
  const leftMs = capMs - (performance.now() - startedAt);
  await within(Promise.allSettled([spans, meterProvider?.shutdown()]), leftMs);
}
