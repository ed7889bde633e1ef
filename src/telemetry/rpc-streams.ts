import { Code, ConnectError } from '@connectrpc/connect';
import { type Context, context } from '@opentelemetry/api';

/*
 * A streaming call does not end when the interceptors return: Connect hands them the response's
 * messages as an iterable, and the messages and the call's status come as it is read. These
 * wrappers tell the tracing interceptors when and how a stream ended.
 */

export type ServedStreamEnd = {
  /** Every message was sent. The end of the stream waits for what it returns (the export). */
  done(): Promise<void> | undefined;
  /** The handler failed: records the failure and returns what the client is sent instead. */
  failed(thrown: unknown): Promise<ConnectError>;
  /** Connect stopped reading before the end: the client went away, or writing to it failed. */
  abandoned(): void;
};

/**
 * The handler's messages, each produced inside the call's context (a handler's generator runs
 * as Connect pulls its messages, outside the interceptor), ending the call with the stream.
 */
export function traceServerStream<T>(
  messages: AsyncIterable<T>,
  ctx: Context,
  end: ServedStreamEnd,
): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = messages[Symbol.asyncIterator]();
      let open = true;
      const abandon = () => {
        if (!open) return;
        open = false;
        end.abandoned();
      };
      return {
        async next() {
          let result: IteratorResult<T>;
          try {
            result = await context.with(ctx, () => it.next());
          } catch (thrown) {
            if (!open) throw thrown;
            open = false;
            throw await end.failed(thrown);
          }
          if (result.done && open) {
            open = false;
            await end.done();
          }
          return result;
        },
        async return(value?: unknown) {
          abandon();
          const returned = it.return ? await context.with(ctx, it.return, it, value) : undefined;
          return returned ?? { done: true, value };
        },
        async throw(reason?: unknown) {
          abandon();
          if (it.throw) return context.with(ctx, it.throw, it, reason);
          if (it.return) await context.with(ctx, it.return, it);
          throw reason;
        },
      };
    },
  };
}

/**
 * The server's messages as the caller reads them, calling `end` once: with undefined after the
 * last one, with the error that ended the stream, or when the call's signal aborts first (its
 * deadline, or the caller giving up: Connect's client offers no other way to stop reading).
 * Errors are named as Connect's client names them to the caller (`runStreamingCall`).
 */
export function traceClientStream<T>(
  messages: AsyncIterable<T>,
  signal: AbortSignal,
  end: (error: ConnectError | undefined) => void,
): AsyncIterable<T> {
  let open = true;
  const close = (error: ConnectError | undefined) => {
    if (!open) return;
    open = false;
    signal.removeEventListener('abort', onAbort);
    end(error);
  };
  const aborted = () => ConnectError.from(signal.reason, Code.Canceled);
  const onAbort = () => close(aborted());
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return {
    [Symbol.asyncIterator]() {
      const it = messages[Symbol.asyncIterator]();
      return {
        async next() {
          try {
            const result = await it.next();
            if (result.done) close(undefined);
            return result;
          } catch (thrown) {
            close(signal.aborted ? aborted() : ConnectError.from(thrown));
            throw thrown;
          }
        },
      };
    },
  };
}
