import { type DiagLogger, DiagLogLevel, diag } from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import type { Logger } from './logger.js';
import { diagLogLevelFromEnv } from './otel-env.js';

/**
 * OpenTelemetry's own messages go to our log, from warnings up unless OTEL_LOG_LEVEL says
 * otherwise. Routed at the default first, so that a bad OTEL_LOG_LEVEL is reported there.
 */
export function routeOtelDiagnostics(logger: Logger): void {
  const otelLogger = logger.child({ component: 'opentelemetry' });
  const route = (logLevel: DiagLogLevel) =>
    diag.setLogger(diagLogger(otelLogger), { logLevel, suppressOverrideMessage: true });
  route(DiagLogLevel.WARN);
  // Export failures are reported by the guarded exporters; the SDK would log each one again.
  setGlobalErrorHandler(() => {});
  const level = diagLogLevelFromEnv();
  if (level === undefined) return;
  // What OTEL_LOG_LEVEL asks for is written even where LOG_LEVEL is higher.
  const wanted = pinoLevel(level);
  if (wanted && !otelLogger.isLevelEnabled(wanted)) otelLogger.level = wanted;
  route(level);
}

/** Diagnostics at pino's levels; verbose has none of its own in Cloud Logging, so it is debug. */
function diagLogger(otelLogger: Logger): DiagLogger {
  const write =
    (method: 'error' | 'warn' | 'info' | 'debug') =>
    (message: string, ...args: unknown[]) =>
      otelLogger[method]({ args: args.map(loggable) }, message);
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
