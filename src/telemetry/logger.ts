import { createRequire } from 'node:module';
import { trace } from '@opentelemetry/api';
import { type DestinationStream, type Logger, type LoggerOptions as PinoOptions, pino } from 'pino';
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
};

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
 * active span, so every line written inside a request joins that request's trace.
 */
export function createLogger(options: LoggerOptions): Logger {
  const common: PinoOptions = {
    level: options.level,
    mixin: () => traceFields(options.projectId),
  };
  const pretty = options.format ? options.format === 'pretty' : process.stdout.isTTY;
  if (!options.destination && pretty) return prettyLogger(common);
  const { labels } = options;
  return pino(
    {
      ...common,
      messageKey: 'message',
      errorKey: 'error',
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

function traceFields(projectId: () => string): Record<string, unknown> {
  const spanContext = trace.getActiveSpan()?.spanContext();
  if (!spanContext) return {};
  return {
    'logging.googleapis.com/trace': `projects/${projectId()}/traces/${spanContext.traceId}`,
    'logging.googleapis.com/spanId': spanContext.spanId,
    'logging.googleapis.com/trace_sampled': (spanContext.traceFlags & 1) === 1,
  };
}

/** Terminals get pino-pretty, loaded only then: containers never pay for it. */
function prettyLogger(common: PinoOptions): Logger {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream;
  return pino(
    common,
    pretty({
      colorize: true,
      translateTime: 'HH:MM:ss.l',
      ignore: 'pid,hostname,logging.googleapis.com/trace,logging.googleapis.com/trace_sampled',
      sync: true,
    }),
  );
}
