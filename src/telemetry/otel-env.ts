import { DiagLogLevel, diag } from '@opentelemetry/api';
import { getBooleanFromEnv, getStringFromEnv, getStringListFromEnv } from '@opentelemetry/core';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  type BatchSpanProcessorOptions,
  ParentBasedSampler,
  type Sampler,
  type SpanLimits,
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

/**
 * The exporters named for one signal. Values it cannot use are dropped with a warning; when none
 * is left, the role's default applies, as for an unset variable. `none` anywhere turns it off.
 */
export function exporterChoices(variable: string, fallback: ExporterChoice): ExporterChoice[] {
  const set = getStringFromEnv(variable)?.trim();
  if (set === undefined) return exporting(fallback);
  const values = getStringListFromEnv(variable)?.map((value) => value.toLowerCase()) ?? [];
  const known = values.filter(isExporterChoice);
  const unknown = values.filter((value) => !isExporterChoice(value));
  const supported = '(use otlp, console or none)';
  if (known.length === 0) {
    const used = fallback === 'none' ? 'none: nothing is exported' : fallback;
    diag.warn(
      `${variable}=${set} names no supported exporter ${supported}; using the default, ${used}.`,
    );
    return exporting(fallback);
  }
  for (const value of unknown) {
    diag.warn(`${variable}=${set}: ${value} is not supported here ${supported}; ignored.`);
  }
  if (known.includes('none')) {
    if (known.some((value) => value !== 'none')) {
      diag.warn(`${variable}=${set} includes none: nothing is exported.`);
    }
    return [];
  }
  return [...new Set(known)];
}

function isExporterChoice(value: string): value is ExporterChoice {
  return value === 'otlp' || value === 'console' || value === 'none';
}

function exporting(choice: ExporterChoice): ExporterChoice[] {
  return choice === 'none' ? [] : [choice];
}

/** Warnings already written: a variable read for both signals, or read again, is reported once. */
const reported = new Set<string>();

export function otlpProtocol(signal: 'TRACES' | 'METRICS'): OtlpProtocol {
  const own = `OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`;
  const variable = enumFromEnv(own) === undefined ? 'OTEL_EXPORTER_OTLP_PROTOCOL' : own;
  const value = enumFromEnv(variable) ?? 'http/protobuf';
  if (value === 'http/protobuf' || value === 'http/json') return value;
  warnOnce(
    `${variable}=${getStringFromEnv(variable)} is not supported here (use http/protobuf or http/json); using http/protobuf.`,
  );
  return 'http/protobuf';
}

function warnOnce(warning: string): void {
  if (!reported.has(warning)) diag.warn(warning);
  reported.add(warning);
}

/** A number as the spec writes one (`Number()`'s reading, blanks trimmed); NaN if it is not. */
function numberFromEnv(variable: string): number | undefined {
  const text = getStringFromEnv(variable);
  return text === undefined ? undefined : Number(text);
}

/**
 * The OTLP endpoint set for this signal: its own variable, else the general one. One that is not
 * a URL counts as unset (the exporter would send to its default while our lines named it).
 */
export function otlpEndpoint(signal: 'TRACES' | 'METRICS'): string | undefined {
  for (const variable of [`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`, 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
    const endpoint = getStringFromEnv(variable)?.trim();
    if (!endpoint) continue;
    if (URL.canParse(endpoint)) return endpoint;
    warnOnce(
      `${variable}=${endpoint} is not a URL (such as http://host:4318); ignored, as if unset.`,
    );
  }
  return undefined;
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
    const arg = numberFromEnv('OTEL_TRACES_SAMPLER_ARG');
    if (arg === undefined) return 1;
    if (Number.isNaN(arg) || arg < 0 || arg > 1) {
      diag.warn(
        `OTEL_TRACES_SAMPLER_ARG=${getStringFromEnv('OTEL_TRACES_SAMPLER_ARG')} is not a number from 0 to 1; using 1.`,
      );
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

/**
 * The longest a Node timer waits; a longer delay fires after 1 ms instead. Also the largest
 * integer the spec asks SDKs to accept, so it bounds every number read here.
 */
const LONGEST_TIMER_MS = 2 ** 31 - 1;
const NO_LIMIT = Number.POSITIVE_INFINITY;

type NumberVariable = {
  variable: string;
  /** The smallest usable value: 0 where the spec gives zero a meaning, else 1. */
  min: 0 | 1;
  /** What applies when the variable is unset or unusable. */
  fallback: number;
  unit: 'milliseconds' | 'spans' | 'characters' | 'attributes' | 'events' | 'links';
};

function ms(variable: string, min: 0 | 1, fallback: number): NumberVariable {
  return { variable, min, fallback, unit: 'milliseconds' };
}

function spans(variable: string, fallback: number): NumberVariable {
  return { variable, min: 1, fallback, unit: 'spans' };
}

/** A whole number in [min, 2³¹ − 1], else undefined (the default applies) and a warning. */
function wholeNumberFromEnv({ variable, min, fallback, unit }: NumberVariable): number | undefined {
  const value = numberFromEnv(variable);
  if (value === undefined) return undefined;
  if (Number.isInteger(value) && value >= min && value <= LONGEST_TIMER_MS) return value;
  const used = fallback === NO_LIMIT ? 'no limit' : fallback;
  diag.warn(
    `${variable}=${getStringFromEnv(variable)} is not a whole number of ${unit} from ${min} to ${LONGEST_TIMER_MS}; using the default, ${used}.`,
  );
  return undefined;
}

type BatchOptions = Omit<BatchSpanProcessorOptions, 'exporter'>;
type BatchKey =
  | 'scheduledDelayMillis'
  | 'exportTimeoutMillis'
  | 'maxQueueSize'
  | 'maxExportBatchSize';

/**
 * The spec's types decide what zero means: a schedule delay of 0 exports at once (on the next
 * turn of the event loop), an export timeout of 0 means no limit, and sizes must be positive.
 */
const BATCH_VARIABLES: readonly [BatchKey, NumberVariable][] = [
  ['scheduledDelayMillis', ms('OTEL_BSP_SCHEDULE_DELAY', 0, 5_000)],
  ['exportTimeoutMillis', ms('OTEL_BSP_EXPORT_TIMEOUT', 0, 30_000)],
  ['maxQueueSize', spans('OTEL_BSP_MAX_QUEUE_SIZE', 2_048)],
  ['maxExportBatchSize', spans('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512)],
];

export function batchOptionsFromEnv(): BatchOptions {
  const options: BatchOptions = {};
  for (const [key, variable] of BATCH_VARIABLES) {
    const value = wholeNumberFromEnv(variable);
    if (value === undefined) continue;
    options[key] = value === 0 && key === 'exportTimeoutMillis' ? LONGEST_TIMER_MS : value;
  }
  return options;
}

export type MetricReaderTiming = { exportIntervalMillis: number; exportTimeoutMillis: number };

const METRIC_EXPORT_INTERVAL = ms('OTEL_METRIC_EXPORT_INTERVAL', 1, 60_000);
const METRIC_EXPORT_TIMEOUT = ms('OTEL_METRIC_EXPORT_TIMEOUT', 0, 30_000);

/**
 * The timeout may not exceed the interval (the SDK refuses it): the default is clamped to it
 * quietly, as the SDK does, a timeout set longer is clamped with a warning, and 0 (no limit)
 * is the interval.
 */
export function metricReaderTimingFromEnv(): MetricReaderTiming {
  const interval = wholeNumberFromEnv(METRIC_EXPORT_INTERVAL) ?? METRIC_EXPORT_INTERVAL.fallback;
  const timeout = wholeNumberFromEnv(METRIC_EXPORT_TIMEOUT);
  if (timeout !== undefined && timeout > interval) {
    diag.warn(
      `OTEL_METRIC_EXPORT_TIMEOUT=${timeout} is longer than the export interval (${interval} ms); using ${interval}.`,
    );
  }
  const asked = timeout === 0 ? interval : (timeout ?? METRIC_EXPORT_TIMEOUT.fallback);
  return { exportIntervalMillis: interval, exportTimeoutMillis: Math.min(asked, interval) };
}

/** The spec's default for every count limit; attribute values have no length limit by default. */
const COUNT_LIMIT = 128;

/** A limit: counts may be 0 (nothing kept); a value length may not (the SDK would ignore it). */
function limitFromEnv(variable: string, unit: NumberVariable['unit'], fallback: number): number {
  const min = unit === 'characters' ? 1 : 0;
  return wholeNumberFromEnv({ variable, min, fallback, unit }) ?? fallback;
}

/**
 * Every span limit, so that none is left to the SDK's defaults. A span-specific variable wins
 * over the general one (OTEL_ATTRIBUTE_*), which applies to the attributes of spans, span events
 * and span links; an unusable value counts as unset, so the general one or the default applies.
 */
export function spanLimitsFromEnv(): Required<SpanLimits> {
  const valueLength = limitFromEnv('OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT', 'characters', NO_LIMIT);
  const attributes = limitFromEnv('OTEL_ATTRIBUTE_COUNT_LIMIT', 'attributes', COUNT_LIMIT);
  return {
    attributeValueLengthLimit: limitFromEnv(
      'OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT',
      'characters',
      valueLength,
    ),
    attributeCountLimit: limitFromEnv('OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT', 'attributes', attributes),
    eventCountLimit: limitFromEnv('OTEL_SPAN_EVENT_COUNT_LIMIT', 'events', COUNT_LIMIT),
    linkCountLimit: limitFromEnv('OTEL_SPAN_LINK_COUNT_LIMIT', 'links', COUNT_LIMIT),
    attributePerEventCountLimit: limitFromEnv(
      'OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT',
      'attributes',
      attributes,
    ),
    attributePerLinkCountLimit: limitFromEnv(
      'OTEL_LINK_ATTRIBUTE_COUNT_LIMIT',
      'attributes',
      attributes,
    ),
  };
}

const DIAG_LEVELS: ReadonlyMap<string, DiagLogLevel> = new Map([
  ['none', DiagLogLevel.NONE],
  ['error', DiagLogLevel.ERROR],
  ['warn', DiagLogLevel.WARN],
  ['info', DiagLogLevel.INFO],
  ['debug', DiagLogLevel.DEBUG],
  ['verbose', DiagLogLevel.VERBOSE],
  ['all', DiagLogLevel.ALL],
]);

/** OTEL_LOG_LEVEL, the SDK's own log level; undefined when unset or unusable (the default applies). */
export function diagLogLevelFromEnv(): DiagLogLevel | undefined {
  const name = enumFromEnv('OTEL_LOG_LEVEL');
  if (name === undefined) return undefined;
  const level = DIAG_LEVELS.get(name);
  if (level === undefined) {
    diag.warn(
      `OTEL_LOG_LEVEL=${getStringFromEnv('OTEL_LOG_LEVEL')} is not supported (use none, error, warn, info, debug, verbose or all); using the default, warn.`,
    );
  }
  return level;
}

/** The propagators are fixed, whatever OTEL_PROPAGATORS says: Cloud Run's front end needs them. */
export function warnIfPropagatorsSet(): void {
  const value = getStringFromEnv('OTEL_PROPAGATORS');
  if (value === undefined) return;
  diag.warn(
    `OTEL_PROPAGATORS=${value.trim()} is ignored: propagation is fixed to what Cloud Run needs (W3C trace context and baggage, plus x-cloud-trace-context).`,
  );
}
