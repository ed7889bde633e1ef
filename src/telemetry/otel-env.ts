import { diag } from '@opentelemetry/api';
import {
  getBooleanFromEnv,
  getNumberFromEnv,
  getStringFromEnv,
  getStringListFromEnv,
} from '@opentelemetry/core';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  type BatchSpanProcessorOptions,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace';

/*
 * The standard OTEL_* variables that the SDK packages we compose no longer read themselves
 * (in the 0.30x line sdk-node reads them). Lenient but loud: a bad value warns and falls back.
 */

export type ExporterChoice = 'otlp' | 'console' | 'none';
export type OtlpProtocol = 'http/protobuf' | 'http/json';

export function isSdkDisabled(): boolean {
  return getBooleanFromEnv('OTEL_SDK_DISABLED');
}

/** An enum-valued variable: the spec asks for values to be case-insensitive. */
function enumFromEnv(variable: string): string | undefined {
  return getStringFromEnv(variable)?.trim().toLowerCase();
}

export function exporterChoices(variable: string, fallback: ExporterChoice): ExporterChoice[] {
  const values = getStringListFromEnv(variable)?.map((value) => value.toLowerCase()) ?? [fallback];
  const known = values.filter((value): value is ExporterChoice => {
    if (value === 'otlp' || value === 'console' || value === 'none') return true;
    diag.warn(`${variable}=${value} is not supported here (use otlp, console or none); ignored.`);
    return false;
  });
  if (known.includes('none') || known.length === 0) return [];
  return [...new Set(known)];
}

export function otlpProtocol(signal: 'TRACES' | 'METRICS'): OtlpProtocol {
  const value =
    enumFromEnv(`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`) ??
    enumFromEnv('OTEL_EXPORTER_OTLP_PROTOCOL') ??
    'http/protobuf';
  if (value === 'http/protobuf' || value === 'http/json') return value;
  diag.warn(`OTLP protocol ${value} is not supported here (use http/protobuf or http/json).`);
  return 'http/protobuf';
}

/** The OTLP endpoint set for this signal: its own variable, else the general one. */
export function otlpEndpoint(signal: 'TRACES' | 'METRICS'): string | undefined {
  return (
    getStringFromEnv(`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`) ??
    getStringFromEnv('OTEL_EXPORTER_OTLP_ENDPOINT')
  );
}

export function hasOtlpEndpoint(signal: 'TRACES' | 'METRICS'): boolean {
  return otlpEndpoint(signal) !== undefined;
}

/** Whether the OTLP endpoint set for this signal is one of Google's (https, `*.googleapis.com`). */
export function otlpEndpointIsGoogle(signal: 'TRACES' | 'METRICS'): boolean {
  const endpoint = otlpEndpoint(signal);
  if (!endpoint || !URL.canParse(endpoint)) return false;
  const { protocol, hostname } = new URL(endpoint);
  return protocol === 'https:' && hostname.endsWith('.googleapis.com');
}

export function samplerFromEnv(): Sampler {
  const name = enumFromEnv('OTEL_TRACES_SAMPLER') ?? 'parentbased_always_on';
  const ratio = () => {
    const arg = getNumberFromEnv('OTEL_TRACES_SAMPLER_ARG');
    if (arg === undefined || Number.isNaN(arg) || arg < 0 || arg > 1) {
      if (arg !== undefined) diag.warn('OTEL_TRACES_SAMPLER_ARG must be in [0, 1]; using 1.');
      return 1;
    }
    return arg;
  };
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio());
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    default:
      diag.warn(`OTEL_TRACES_SAMPLER=${name} is not supported; using parentbased_always_on.`);
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

export function batchOptionsFromEnv(): Omit<BatchSpanProcessorOptions, 'exporter'> {
  const options: Omit<BatchSpanProcessorOptions, 'exporter'> = {};
  const set = (
    variable: string,
    key: 'scheduledDelayMillis' | 'maxQueueSize' | 'maxExportBatchSize' | 'exportTimeoutMillis',
  ) => {
    const value = getNumberFromEnv(variable);
    if (value !== undefined && Number.isFinite(value) && value > 0) options[key] = value;
  };
  set('OTEL_BSP_SCHEDULE_DELAY', 'scheduledDelayMillis');
  set('OTEL_BSP_MAX_QUEUE_SIZE', 'maxQueueSize');
  set('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 'maxExportBatchSize');
  set('OTEL_BSP_EXPORT_TIMEOUT', 'exportTimeoutMillis');
  return options;
}

export function metricExportIntervalMs(): number {
  const value = getNumberFromEnv('OTEL_METRIC_EXPORT_INTERVAL');
  return value !== undefined && value > 0 ? value : 60_000;
}
