import type { Logger } from '../telemetry/logger.js';

/** How long a crash waits for telemetry's flush (spans still queued, the last metrics). */
const CRASH_FLUSH_MS = 2_000;
/** Past the flush's bound, the process exits whatever is still pending. */
const EXIT_GRACE_MS = 500;
/** Further crashes logged while the first is handled: more would only repeat it. */
const MAX_FURTHER_CRASHES = 5;

export type FaultTarget = {
  logger: Logger;
  /** Flushes telemetry within `withinMs` (Telemetry.shutdown). */
  shutdown?(withinMs: number): Promise<void>;
  /** Before the flush: stops the server and cuts the requests in flight. */
  cut?(): Promise<void>;
};

export type ProcessFaults = {
  /** From now on, log with `target.logger` and flush `target` before a crash's exit. */
  use(target: FaultTarget): void;
  /**
   * One CRITICAL line about `error`; the server stopped and the requests in flight cut; a
   * telemetry flush of at most 2 s; then exit 1.
   */
  crash(error: unknown, message: string): Promise<never>;
};

/**
 * Uncaught exceptions, unhandled rejections and Node's process warnings become log lines (with
 * severity, the error's stack as `stack_trace` and the service labels) instead of text on
 * stderr, which Cloud Logging would split into entries without severity. A crash still exits
 * non-zero, after a bounded flush so the spans and metrics that led up to it are not lost.
 */
export function handleProcessFaults(logger: Logger): ProcessFaults {
  let target: FaultTarget = { logger };
  let crashing = false;
  let furtherCrashes = 0;

  const crash = async (error: unknown, message: string): Promise<never> => {
    if (crashing) {
      if (furtherCrashes++ < MAX_FURTHER_CRASHES) {
        log(() => target.logger.fatal({ error }, `${message} (while stopping after a crash)`));
      }
      return new Promise<never>(() => {});
    }
    crashing = true;
    log(() => target.logger.fatal({ error }, message));
    // Also when the flush itself hangs past its bound.
    setTimeout(() => process.exit(1), CRASH_FLUSH_MS + EXIT_GRACE_MS);
    await target.cut?.().catch(() => undefined);
    await target.shutdown?.(CRASH_FLUSH_MS).catch(() => undefined);
    process.exit(1);
  };

  // A SIGTERM's drain, sharing the crash's flush, may exit first: the crash's code still wins.
  process.on('exit', () => {
    if (crashing) process.exitCode = 1;
  });
  process.on('uncaughtException', (error) => {
    void crash(error, `uncaught exception: ${describe(error)}`);
  });
  process.on('unhandledRejection', (reason) => {
    void crash(reason, `unhandled promise rejection: ${describe(reason)}`);
  });
  // Node's own listener prints warnings to stderr as text; ours logs them at WARNING.
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string; detail?: string }) => {
    const { name, message, code, detail, stack } = warning;
    log(() =>
      target.logger.warn(
        { warning: { name, message, code, detail, stack } },
        `${name}: ${message}`,
      ),
    );
  });

  return {
    use(next) {
      target = next;
    },
    crash,
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A failure to log must not stop a crash from exiting, nor become a crash of its own. */
function log(write: () => void): void {
  try {
    write();
  } catch {
    // Nowhere else to report it.
  }
}
