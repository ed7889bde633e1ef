import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';

export type Stoppable = {
  /** Stop taking work, finish in-flight work; resolves when done. */
  drain(): Promise<void>;
  /** Drop whatever is still open. */
  destroy(): void;
};

/** The part of the shutdown budget the drain may use; the rest is kept for the telemetry flush. */
const DRAIN_SHARE = 0.75;

/**
 * Cloud Run's contract: on SIGTERM (and Ctrl-C) stop accepting, finish in-flight requests, flush
 * telemetry and exit 0, all within `timeoutMs` (under the 10 s before SIGKILL). Requests still
 * running when the drain's share of it is up are cut, so that the flush keeps the rest.
 */
export function stopOnSignals(target: Stoppable, telemetry: Telemetry, timeoutMs: number): void {
  const { logger } = telemetry;
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    const startedAt = performance.now();
    const drainMs = Math.round(timeoutMs * DRAIN_SHARE);
    logger.info({ signal }, `${signal} received: draining for up to ${drainMs} ms`);
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        logger.warn('drain timed out; closing remaining connections');
        target.destroy();
        resolve();
      }, drainMs);
    });
    // Once cut, the drain is not waited for: a connection that arrives late cannot hold the exit.
    await Promise.race([
      target.drain().catch((error: unknown) => logger.error({ error }, 'drain failed')),
      cut,
    ]);
    clearTimeout(timer);
    logger.info('stopped; flushing telemetry');
    await telemetry.shutdown(Math.max(timeoutMs - (performance.now() - startedAt), 0));
    process.exit(0);
  };
  process.once('SIGTERM', (signal) => void stop(signal));
  process.once('SIGINT', (signal) => void stop(signal));
}

export function logListening(logger: Logger, role: string, address: string): void {
  logger.info({ role, address }, `${role} role listening on ${address}`);
}
