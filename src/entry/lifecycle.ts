import { setImmediate as nextTurn } from 'node:timers/promises';
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
/** After a cut, how long the drain may still take to end: from the flush's share, at most half. */
const CUT_GRACE_MS = 250;
/** A second Ctrl-C: exit at once, as a shell reports SIGINT (128 + 2). */
const FORCED_EXIT_CODE = 130;

/** The role's server once it listens: a crash stops it too. */
let serving: Stoppable | undefined;

/**
 * After a crash: stop taking work and cut what is open (the process is not safe to go on), so
 * that the cut requests end, with their spans and lines, before the crash's flush.
 */
export async function cutOnCrash(): Promise<void> {
  if (!serving) return;
  serving.drain().catch(() => undefined);
  serving.destroy();
  await nextTurn();
}

let signalWhileStarting: NodeJS.Signals | undefined;
const holdSignal = (signal: NodeJS.Signals) => {
  // A second one while a start hangs: no drain to wait for, exit as a shell reports the signal.
  if (signalWhileStarting) process.exit(signal === 'SIGINT' ? FORCED_EXIT_CODE : 143);
  signalWhileStarting = signal;
};

/**
 * Until the role can stop, a SIGTERM or Ctrl-C is held (Node's default would end the process
 * without a word, exit 143): `stopOnSignals` then stops at once, with its log lines and exit 0.
 * A second signal while starting exits at once.
 */
export function holdSignalsWhileStarting(): void {
  process.on('SIGTERM', holdSignal);
  process.on('SIGINT', holdSignal);
}

/**
 * Cloud Run's contract: on SIGTERM (and Ctrl-C) stop accepting, finish in-flight requests, flush
 * telemetry and exit 0, all within `timeoutMs` (under the 10 s before SIGKILL). Requests still
 * running when the drain's share of it is up are cut, so that the flush keeps the rest. While
 * stopping, a repeated SIGTERM is ignored; a SIGINT (a second Ctrl-C) exits at once with 130.
 * A signal held while the role was starting stops it now.
 */
export function stopOnSignals(target: Stoppable, telemetry: Telemetry, timeoutMs: number): void {
  const { logger } = telemetry;
  serving = target;
  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    stopping = true;
    const startedAt = performance.now();
    const drainMs = Math.round(timeoutMs * DRAIN_SHARE);
    logger.info({ signal }, `${signal} received: draining for up to ${drainMs} ms`);
    const drained = target
      .drain()
      .catch((error: unknown) => logger.error({ error }, 'drain failed'));
    // Once cut, the drain is waited for only briefly (a connection that arrives late cannot hold
    // the exit), and one more turn: the cut requests end their spans as their sockets close.
    if (!(await settlesWithin(drained, drainMs))) {
      logger.warn('drain timed out; closing remaining connections');
      target.destroy();
      await settlesWithin(drained, Math.min(CUT_GRACE_MS, (timeoutMs - drainMs) / 2));
      await nextTurn();
    }
    logger.info('stopped; flushing telemetry');
    await telemetry.shutdown(Math.max(timeoutMs - (performance.now() - startedAt), 0));
    process.exit(0);
  };
  process.on('SIGTERM', (signal) => {
    if (stopping) logger.info({ signal }, `${signal} while stopping: ignored`);
    else void stop(signal);
  });
  process.on('SIGINT', (signal) => {
    if (!stopping) {
      void stop(signal);
      return;
    }
    logger.warn(
      { signal },
      `${signal} while stopping: exiting now, without the rest of the drain or the flush`,
    );
    process.exit(FORCED_EXIT_CODE);
  });
  process.off('SIGTERM', holdSignal);
  process.off('SIGINT', holdSignal);
  if (signalWhileStarting) {
    logger.info({ signal: signalWhileStarting }, `${signalWhileStarting} received while starting`);
    void stop(signalWhileStarting);
  }
}

/** Whether `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(ms, 0));
  });
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

export function logListening(logger: Logger, role: string, address: string): void {
  logger.info({ role, address }, `${role} role listening on ${address}`);
}
