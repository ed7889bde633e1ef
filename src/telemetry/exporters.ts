import type { Resource } from '@opentelemetry/resources';
import type { MetricReader, PushMetricExporter } from '@opentelemetry/sdk-metrics';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import { loadGoogleAuthLibrary } from '../identity/google-auth-library.js';
import { lazy } from '../lazy.js';
import { guardMetricExporter, type ReportingExporter } from './export-guard.js';
import type { Logger } from './logger.js';
import {
  hasOtlpEndpoint,
  metricReaderTimingFromEnv,
  otlpEndpoint,
  otlpEndpointIsGoogle,
  otlpProtocol,
} from './otel-env.js';
import { metricExportWithinLimits } from './telemetry-api-limits.js';

/*
 * The OTLP span exporter and metric readers a role uses, each loaded only when configured (cold
 * start), and the Google credentials that Google's Telemetry API needs.
 */

const TELEMETRY_API = 'https://telemetry.googleapis.com';

/** Where a signal's exports go, for messages: the endpoint set, else the exporter's default. */
export function describeTarget(
  signal: 'TRACES' | 'METRICS',
  auth: GoogleHeaders | undefined,
): string {
  return otlpEndpoint(signal) ?? (auth ? TELEMETRY_API : 'http://localhost:4318');
}

/** Request headers for Google's Telemetry API, made fresh for every export. */
export type GoogleHeaders = () => Promise<Record<string, string>>;

/**
 * The Telemetry API wants a fresh OAuth token on every export: an async headers factory. The
 * quota project (`x-goog-user-project`, which needs `roles/serviceusage.serviceUsageConsumer`)
 * is sent once known. google-auth-library loads with the first export, not at start: most
 * requests are not sampled and have nothing to export.
 */
export function googleAuthHeaders(quotaProject: () => string | undefined): GoogleHeaders {
  const auth = lazy(async () => {
    const { GoogleAuth } = await loadGoogleAuthLibrary();
    return new GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'] });
  });
  return async () => {
    const headers = Object.fromEntries((await (await auth()).getRequestHeaders()).entries());
    const project = quotaProject();
    return project ? { 'x-goog-user-project': project, ...headers } : headers;
  };
}

function otlpOptions(signal: 'TRACES' | 'METRICS', auth: GoogleHeaders | undefined) {
  if (!auth) return {};
  if (!hasOtlpEndpoint(signal)) {
    return { url: `${TELEMETRY_API}/v1/${signal.toLowerCase()}`, headers: auth };
  }
  // Google's endpoint named in OTEL_* still needs Google's token; no other endpoint gets it.
  return otlpEndpointIsGoogle(signal) ? { headers: auth } : {};
}

/**
 * The most span exports that can be in flight at once, so that the exporter never refuses one
 * ("Concurrent export limit reached", its default limit being 30): each request-mode flush and
 * the shutdown flush can take a full queue in batches, and the processor's timer sends one more.
 * 37 with the SDK's defaults (a queue of 2,048 in batches of 512).
 */
export function exportsAtOnce(
  batch: { maxQueueSize?: number; maxExportBatchSize?: number },
  flushesAtOnce: number,
): number {
  const queue = batch.maxQueueSize ?? 2_048;
  const batchesPerFlush = Math.ceil(queue / Math.min(batch.maxExportBatchSize ?? 512, queue));
  return (flushesAtOnce + 1) * batchesPerFlush + 1;
}

export async function otlpSpanExporter(
  auth: GoogleHeaders | undefined,
  concurrencyLimit: number,
): Promise<SpanExporter> {
  const options = { ...otlpOptions('TRACES', auth), concurrencyLimit };
  if (otlpProtocol('TRACES') === 'http/json') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    return new OTLPTraceExporter(options);
  }
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
  return new OTLPTraceExporter(options);
}

export async function metricReaders(
  choices: readonly string[],
  auth: GoogleHeaders | undefined,
  logger: Logger,
  reporting: ReportingExporter[],
): Promise<MetricReader[]> {
  if (choices.length === 0) return [];
  const { PeriodicExportingMetricReader, ConsoleMetricExporter } = await import(
    '@opentelemetry/sdk-metrics'
  );
  const timing = metricReaderTimingFromEnv();
  const readers: MetricReader[] = [];
  for (const choice of choices) {
    let exporter: PushMetricExporter;
    if (choice === 'otlp') {
      const options = otlpOptions('METRICS', auth);
      const otlp =
        otlpProtocol('METRICS') === 'http/json'
          ? new (await import('@opentelemetry/exporter-metrics-otlp-http')).OTLPMetricExporter(
              options,
            )
          : new (await import('@opentelemetry/exporter-metrics-otlp-proto')).OTLPMetricExporter(
              options,
            );
      const guarded = guardMetricExporter(
        metricExportWithinLimits(otlp),
        logger,
        describeTarget('METRICS', auth),
      );
      reporting.push(guarded);
      exporter = guarded;
    } else {
      exporter = new ConsoleMetricExporter();
    }
    readers.push(new PeriodicExportingMetricReader({ exporter, ...timing }));
  }
  return readers;
}

export async function createMeterProvider(resource: Resource, readers: MetricReader[]) {
  const { MeterProvider } = await import('@opentelemetry/sdk-metrics');
  return new MeterProvider({ resource, readers });
}
