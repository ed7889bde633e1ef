import type { Logger } from '../telemetry/logger.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';

export type Stoppable = {
  /** Stop taking work, finish in-flight work; resolves when done. */
  drain(): Promise<void>;
  /** Drop whatever is still open. */
  destroy(): void;
};

/**
 * Cloud Run's contract: on SIGTERM (and Ctrl-C) stop accepting, finish in-flight requests
 * within the grace period, flush telemetry, exit 0, all within the 10 s before SIGKILL.
 */
export function stopOnSignals(target: Stoppable, telemetry: Telemetry, timeoutMs: number): void {
  const { logger } = telemetry;
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, `${signal} received: draining for up to ${timeoutMs} ms`);
    const timer = setTimeout(() => {
      logger.warn('drain timed out; closing remaining connections');
      target.destroy();
    }, timeoutMs);
    timer.unref();
    try {
      await target.drain();
    } catch (error) {
      logger.error({ error }, 'drain failed');
    }
    clearTimeout(timer);
    logger.info('stopped; flushing telemetry');
    await telemetry.shutdown();
    process.exit(0);
  };
  process.once('SIGTERM', (signal) => void stop(signal));
  process.once('SIGINT', (signal) => void stop(signal));
}

export function logListening(logger: Logger, role: string, address: string): void {
  logger.info({ role, address }, `${role} role listening on ${address}`);
}
