import { context, type DiagLogger, DiagLogLevel, diag, ROOT_CONTEXT } from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import type { Logger } from './logger.js';
import { diagLogLevelFromEnv } from './otel-env.js';

export type OtelDiagnostics = {
  /** At shutdown: the items the endpoint rejected in partial successes after the first. */
  reportRejected(): void;
};

/**
 * OpenTelemetry's own messages go to our log, from warnings up unless OTEL_LOG_LEVEL says
 * otherwise. Routed at the default first, so that a bad OTEL_LOG_LEVEL is reported there. They
 * are about the instance, never a request: written outside any request's trace (an export can
 * run inside the request that flushed it).
 */
export function routeOtelDiagnostics(logger: Logger): OtelDiagnostics {
  const otelLogger = logger.child({ component: 'opentelemetry' });
  const rejections = partialSuccesses(otelLogger);
  const route = (logLevel: DiagLogLevel) =>
    diag.setLogger(diagLogger(otelLogger, rejections), {
      logLevel,
      suppressOverrideMessage: true,
    });
  route(DiagLogLevel.WARN);
  // Export failures are reported by the guarded exporters; the SDK would log each one again.
  setGlobalErrorHandler(() => {});
  const diagnostics = { reportRejected: () => rejections.report() };
  const level = diagLogLevelFromEnv();
  if (level === undefined) return diagnostics;
  // What OTEL_LOG_LEVEL asks for is written even where LOG_LEVEL is higher.
  const wanted = pinoLevel(level);
  if (wanted && !otelLogger.isLevelEnabled(wanted)) otelLogger.level = wanted;
  route(level);
  return diagnostics;
}

/** The exporters' words for an answer that took only part of an export (OTLP partial success). */
const PARTIAL_SUCCESS = 'Received Partial Success response:';

type PartialSuccesses = {
  /** Whether the line was a partial success, now reported or counted. */
  noted(message: string, args: unknown[]): boolean;
  report(): void;
};

/**
 * The OTLP exporters log every partial success, which in request mode is one line per request:
 * the first is written with the endpoint's reason, the rest are counted, and the count is given
 * at shutdown.
 */
function partialSuccesses(otelLogger: Logger): PartialSuccesses {
  const rejected = { spans: 0, dataPoints: 0 };
  let answers = 0;
  return {
    noted(message, args) {
      if (message !== PARTIAL_SUCCESS) return false;
      const answer = parsePartialSuccess(args[0]);
      rejected.spans += answer.rejectedSpans ?? 0;
      rejected.dataPoints += answer.rejectedDataPoints ?? 0;
      answers++;
      if (answers === 1) {
        otelLogger.warn(
          { partialSuccess: answer },
          `the telemetry endpoint took an export only in part: ${describe(answer)}; later partial answers are counted, and reported at shutdown`,
        );
      }
      return true;
    },
    report() {
      if (answers < 2) return;
      otelLogger.warn(
        { rejectedSpans: rejected.spans, rejectedDataPoints: rejected.dataPoints, answers },
        `the telemetry endpoint took ${answers} exports only in part: ${rejected.spans} spans and ${rejected.dataPoints} metric data points rejected in all`,
      );
    },
  };
}

type PartialSuccess = {
  rejectedSpans?: number;
  rejectedDataPoints?: number;
  errorMessage?: string;
};

function parsePartialSuccess(arg: unknown): PartialSuccess {
  try {
    const parsed: unknown = typeof arg === 'string' ? JSON.parse(arg) : arg;
    if (typeof parsed !== 'object' || parsed === null) return {};
    const { rejectedSpans, rejectedDataPoints, errorMessage } = parsed as Record<string, unknown>;
    return {
      ...(rejectedSpans === undefined ? {} : { rejectedSpans: Number(rejectedSpans) || 0 }),
      ...(rejectedDataPoints === undefined
        ? {}
        : { rejectedDataPoints: Number(rejectedDataPoints) || 0 }),
      ...(typeof errorMessage === 'string' ? { errorMessage } : {}),
    };
  } catch {
    return {};
  }
}

function describe(answer: PartialSuccess): string {
  const counts = [
    answer.rejectedSpans === undefined ? '' : `${answer.rejectedSpans} spans rejected`,
    answer.rejectedDataPoints === undefined
      ? ''
      : `${answer.rejectedDataPoints} metric data points rejected`,
  ].filter(Boolean);
  const reason = answer.errorMessage ? `"${answer.errorMessage}"` : 'no reason given';
  return `${counts.join(', ') || 'nothing rejected'} (${reason})`;
}

/** Diagnostics at pino's levels; verbose has none of its own in Cloud Logging, so it is debug. */
function diagLogger(otelLogger: Logger, rejections: PartialSuccesses): DiagLogger {
  const write =
    (method: 'error' | 'warn' | 'info' | 'debug') =>
    (message: string, ...args: unknown[]) =>
      context.with(ROOT_CONTEXT, () => {
        if (method === 'warn' && rejections.noted(message, args)) return;
        otelLogger[method]({ args: args.map(loggable) }, message);
      });
  return {
    error: write('error'),
    warn: write('warn'),
    info: write('info'),
    debug: write('debug'),
    verbose: write('debug'),
  };
}

function pinoLevel(level: DiagLogLevel): 'error' | 'warn' | 'info' | 'debug' | undefined {
  if (level >= DiagLogLevel.DEBUG) return 'debug';
  if (level >= DiagLogLevel.INFO) return 'info';
  if (level >= DiagLogLevel.WARN) return 'warn';
  if (level >= DiagLogLevel.ERROR) return 'error';
  return undefined;
}

/** pino serialises an Error only under `error`; inside `args` it would be written as `{}`. */
function loggable(arg: unknown): unknown {
  return arg instanceof Error ? { type: arg.name, message: arg.message, stack: arg.stack } : arg;
}
