export interface WaitForOptions {
  /**
   * Default 10000: longer than a BatchSpanProcessor's default 5 s delay, shorter than the
   * project's 30 s test timeout, so this message, not vitest's, explains a failure.
   */
  timeoutMs?: number;
}

export interface WaitForParams<T> {
  readonly read: () => T;
  readonly predicate: (value: T) => boolean;
  /** Registers a callback run after every change; returns its unsubscribe. */
  readonly subscribe: (onChange: () => void) => () => void;
  /** Called on timeout for the error message: what the waiter has. */
  readonly describe: (value: T, waitedMs: number, lastError: unknown) => string;
  readonly timeoutMs: number;
}

export const DEFAULT_WAIT_TIMEOUT_MS = 10_000;

/**
 * Resolves with `read()` once `predicate` holds, checking now and after each change. A predicate
 * that throws (an `expect` inside it) counts as "not yet"; its last error goes into the timeout
 * message.
 */
export function waitFor<T>(params: WaitForParams<T>): Promise<T> {
  const started = Date.now();
  let lastError: unknown;
  const check = (): { done: true; value: T } | { done: false } => {
    const value = params.read();
    try {
      if (params.predicate(value)) return { done: true, value };
    } catch (error) {
      lastError = error;
    }
    return { done: false };
  };

  const first = check();
  if (first.done) return Promise.resolve(first.value);

  return new Promise<T>((resolve, reject) => {
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      unsubscribe();
      settle();
    };
    const timer = setTimeout(() => {
      const message = params.describe(params.read(), Date.now() - started, lastError);
      finish(() => reject(new Error(message)));
    }, params.timeoutMs);
    const unsubscribe = params.subscribe(() => {
      const result = check();
      if (result.done) finish(() => resolve(result.value));
    });
  });
}
