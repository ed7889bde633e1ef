import { type DestinationStream, pino } from 'pino';

export type LineBatcher = DestinationStream & {
  /** Writes what is waiting now, then calls back (pino's `logger.flush()`). */
  flush(callback?: (error?: Error) => void): void;
};

type SyncTarget = Pick<ReturnType<typeof pino.destination>, 'write' | 'flushSync'>;

/** Above this many characters waiting, lines are written at once rather than at the turn's end. */
const MAX_WAITING_CHARS = 64 * 1024;

/**
 * Log lines written once per turn of the event loop. A busy server writes a line for each of
 * the many requests it finishes in one turn; one system call for all of them costs less than
 * one each, and the process waits less on the reader of its stdout. Lines keep their order.
 * Lines still waiting when the process exits (`process.exit`, an uncaught error, the end of the
 * loop) are written by an 'exit' listener; only a SIGKILL or a crash of Node itself loses them,
 * at most one turn's worth. The writes themselves are pino's synchronous destination: it waits
 * out a full pipe (EAGAIN) instead of dropping lines, and stops writing once the reader is gone
 * (EPIPE) instead of failing the process.
 */
export function lineBatcher(target: SyncTarget): LineBatcher {
  let waiting: string[] = [];
  let waitingChars = 0;
  let scheduled = false;

  const writeWaiting = () => {
    if (waiting.length === 0) return;
    const lines = waiting.length === 1 ? (waiting[0] as string) : waiting.join('');
    waiting = [];
    waitingChars = 0;
    target.write(lines);
  };
  const atTurnEnd = () => {
    scheduled = false;
    writeWaiting();
  };
  process.on('exit', writeWaiting);

  return {
    write(line: string) {
      waiting.push(line);
      waitingChars += line.length;
      if (waitingChars > MAX_WAITING_CHARS) writeWaiting();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(atTurnEnd);
      }
    },
    flush(callback) {
      try {
        writeWaiting();
        target.flushSync();
      } catch (error) {
        callback?.(error as Error);
        return;
      }
      callback?.();
    },
  };
}

let stdout: LineBatcher | undefined;

/** The process's one batched stdout (one 'exit' listener however many loggers share it). */
export function batchedStdout(): LineBatcher {
  stdout ??= lineBatcher(pino.destination({ dest: 1, sync: true }));
  return stdout;
}
