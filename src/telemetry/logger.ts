import { createRequire } from 'node:module';
import { type Context, context, isSpanContextValid, trace } from '@opentelemetry/api';
import { type DestinationStream, type Logger, type LoggerOptions as PinoOptions, pino } from 'pino';
import { errorType } from './error-type.js';
import { requestAttributesOf } from './request-attributes.js';
import { batchedStdout } from './stdout-lines.js';

export type { Logger };

export type LoggerOptions = {
  level: string;
  projectId: () => string;
  labels: Record<string, string>;
  /** `pretty` for people; default: pretty when stdout is a terminal, else JSON. */
  format?: 'json' | 'pretty' | undefined;
  /** Where JSON lines go; defaults to stdout (human-readable when stdout is a terminal). */
  destination?: DestinationStream;
  /** Baggage keys a request's lines carry under `attributes`, as its spans do (see below). */
  baggageKeys?: readonly string[];
};

/** pino's number for `error`: lines at this level and above report an error event. */
const ERROR_LEVEL = 50;

const SEVERITY: Record<string, string> = {
  trace: 'DEBUG',
  debug: 'DEBUG',
  info: 'INFO',
  warn: 'WARNING',
  error: 'ERROR',
  fatal: 'CRITICAL',
};

/**
 * One JSON object per line in Cloud Logging's structured format. Trace fields come from the
 * active span, so every line written inside a request joins that request's trace, and the
 * request's own attributes (`setRequestAttributes`, allow-listed baggage) go under `attributes`,
 * as on its spans. A line at
 * ERROR or above whose `error` has a stack also gets it as `stack_trace`, the field Error
 * Reporting reads: such a line is one error event.
 */
export function createLogger(options: LoggerOptions): Logger {
  const baggageKeys = new Set(options.baggageKeys);
  const common: PinoOptions = {
    level: options.level,
    errorKey: 'error',
    serializers: { error: serializeError, err: serializeError },
    mixin: () => requestFields(options.projectId, baggageKeys),
  };
  const pretty = options.format ? options.format === 'pretty' : process.stdout.isTTY;
  if (!options.destination && pretty) return prettyLogger(common);
  const { labels } = options;
  return pino(
    {
      ...common,
      mixin: (line, level) => {
        const fields = requestFields(options.projectId, baggageKeys);
        if (level >= ERROR_LEVEL) addStackTrace(fields, line as ErrorFields);
        return fields;
      },
      messageKey: 'message',
      timestamp: isoTimeField(),
      base: {
        serviceContext: { service: labels['service.name'], version: labels['service.version'] },
        'logging.googleapis.com/labels': labels,
      },
      formatters: { level: (label) => ({ severity: SEVERITY[label] ?? 'DEFAULT' }) },
    },
    options.destination ?? batchedStdout(),
  );
}

/** pino's `time` field, formatted once per millisecond: busy servers write several lines in one. */
function isoTimeField(): () => string {
  let formattedAt = -1;
  let field = '';
  return () => {
    const now = Date.now();
    if (now !== formattedAt) {
      formattedAt = now;
      field = `,"time":"${new Date(now).toISOString()}"`;
    }
    return field;
  };
}

/** The trace fields and the request's own `attributes` (`setRequestAttributes`) of a line. */
function requestFields(
  projectId: () => string,
  baggageKeys: ReadonlySet<string>,
): Record<string, unknown> {
  const active = context.active();
  const fields = traceFields(active, projectId);
  const attributes = requestAttributesOf(active, baggageKeys);
  if (attributes) fields.attributes = attributes;
  return fields;
}

function traceFields(active: Context, projectId: () => string): Record<string, unknown> {
  const spanContext = trace.getSpan(active)?.spanContext();
  // A new object every line: pino merges the line's own fields into it. With the SDK disabled,
  // a request without a caller's trace has the all-zero one, which is no trace at all.
  if (!spanContext || !isSpanContextValid(spanContext)) return {};
  return {
    'logging.googleapis.com/trace': `projects/${projectId()}/traces/${spanContext.traceId}`,
    'logging.googleapis.com/spanId': spanContext.spanId,
    'logging.googleapis.com/trace_sampled': (spanContext.traceFlags & 1) === 1,
  };
}

/**
 * `error` is always an object, so that a schema inferred from one line (a BigQuery sink's) fits
 * every line: errors are serialised by pino's own serializer, any other value is its `message`.
 * An error's cause is an object of its own under `cause` (pino's `errWithCause`): pino's `err`
 * appends the cause's message and stack to the error's, so that a connection failure read twice
 * in `message` ("connect ECONNREFUSED 127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1").
 */
function serializeError(value: unknown): unknown {
  if (!(typeof value === 'object' && value !== null)) return { message: String(value) };
  const serialized = pino.stdSerializers.errWithCause(value as Error);
  nameTypes(value, serialized);
  return serialized;
}

type SerializedError = { type?: string; cause?: unknown; aggregateErrors?: unknown[] };

/**
 * Our `type` (the bundle renames classes) at every level of the cause chain and in an
 * AggregateError's entries; a cause that is not an Error (pino leaves it out, or as it is) is an
 * object with its text as `message`, as every other `error` is.
 */
function nameTypes(error: unknown, into: SerializedError | undefined, depth = 0): void {
  if (!(error instanceof Error) || !into || depth > 10) return;
  into.type = errorType(error);
  if (error instanceof AggregateError && Array.isArray(into.aggregateErrors)) {
    error.errors.forEach((entry, i) => {
      nameTypes(entry, into.aggregateErrors?.[i] as SerializedError | undefined, depth + 1);
    });
  }
  const { cause } = error;
  if (cause instanceof Error) nameTypes(cause, into.cause as SerializedError, depth + 1);
  else if (cause !== undefined) into.cause = { message: textOf(cause) };
}

function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Where an error is on a line: ours under `error`, Fastify's own under `err`. */
type ErrorFields = { error?: { stack?: unknown } | null; err?: { stack?: unknown } | null };

/**
 * Error Reporting's "Format a log entry to report error events": a top-level `stack_trace`
 * holding the stack. `serviceContext` is in every line's base fields.
 */
function addStackTrace(fields: Record<string, unknown>, line: ErrorFields): void {
  const stack = (line.error ?? line.err)?.stack;
  if (typeof stack === 'string' && stack !== '') fields.stack_trace = stack;
}

/** Terminals get pino-pretty, loaded only then: containers never pay for it. */
function prettyLogger(common: PinoOptions): Logger {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream;
  return pino(
    common,
    // Colours where the output takes them (a terminal; not NO_COLOR, a pipe or a file).
    pretty({
      translateTime: 'HH:MM:ss.l',
      ignore: 'pid,hostname,logging.googleapis.com/trace,logging.googleapis.com/trace_sampled',
      sync: true,
    }),
  );
}
