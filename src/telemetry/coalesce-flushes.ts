/**
 * At most `maxConcurrent` flushes at a time, however many requests ask for one. A request that
 * asks while that many run gets the next flush, which starts as soon as one of them ends and takes
 * every span queued by then; the requests that ask meanwhile share it. So a busy instance makes
 * a bounded number of exports at once, and stays clear of the exporter's limit of concurrent
 * exports (30), past which it drops spans.
 */
export function coalesceFlushes(
  flush: () => Promise<unknown>,
  maxConcurrent: number,
): () => Promise<void> {
  let running = 0;
  let next: { flushed: Promise<void>; start(): void } | undefined;
  const run = (): Promise<void> => {
    running++;
    return Promise.resolve()
      .then(flush)
      .then(settled, settled)
      .finally(() => {
        running--;
        const queued = next;
        next = undefined;
        queued?.start();
      });
  };
  return () => {
    if (running < maxConcurrent) return run();
    if (!next) {
      let start = () => {};
      const flushed = new Promise<void>((resolve) => {
        start = () => resolve(run());
      });
      next = { flushed, start };
    }
    return next.flushed;
  };
}

/** A failed flush is the exporter's to report; callers only wait for it. */
function settled(): void {}
