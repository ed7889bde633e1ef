import { describe, expect, it } from 'vitest';
import { coalesceFlushes } from '../src/telemetry/coalesce-flushes.js';

/** Lets every pending promise callback run (flushes start in one). */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A flush the test ends by hand, recording how many run at once. */
function controlledFlushes() {
  const pending: Array<{ end: () => void; fail: () => void }> = [];
  let running = 0;
  let mostAtOnce = 0;
  let started = 0;
  return {
    flush: () =>
      new Promise<void>((resolve, reject) => {
        started++;
        running++;
        mostAtOnce = Math.max(mostAtOnce, running);
        const done = () => {
          running--;
        };
        pending.push({
          end: () => {
            done();
            resolve();
          },
          fail: () => {
            done();
            reject(new Error('export failed'));
          },
        });
      }),
    /** Ends the oldest running flush and lets the promise callbacks run. */
    async endOldest(how: 'end' | 'fail' = 'end') {
      await settle();
      pending.shift()?.[how]();
      await settle();
    },
    stats: () => ({ started, running, mostAtOnce }),
  };
}

describe('coalesceFlushes', () => {
  it('runs up to the limit at once, and makes everyone past it share the next flush', async () => {
    const flushes = controlledFlushes();
    const flush = coalesceFlushes(flushes.flush, 2);
    const resolved: number[] = [];
    const calls = Array.from({ length: 10 }, (_, i) => flush().then(() => resolved.push(i)));
    await settle();
    expect(flushes.stats()).toEqual({ started: 2, running: 2, mostAtOnce: 2 });

    await flushes.endOldest();
    // The first caller is done; the eight waiting share one flush, started in the freed slot.
    expect(resolved).toEqual([0]);
    expect(flushes.stats()).toEqual({ started: 3, running: 2, mostAtOnce: 2 });

    await flushes.endOldest();
    await flushes.endOldest();
    await Promise.all(calls);
    expect(resolved.toSorted((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(flushes.stats()).toEqual({ started: 3, running: 0, mostAtOnce: 2 });
  });

  it('starts a new flush for a caller that comes after the shared one has started', async () => {
    const flushes = controlledFlushes();
    const flush = coalesceFlushes(flushes.flush, 1);
    const first = flush();
    const second = flush();
    await flushes.endOldest();
    await first;
    // `second` is running now: a caller's spans may have been queued after it started.
    const third = flush();
    await settle();
    expect(flushes.stats().started).toBe(2);
    await flushes.endOldest();
    await second;
    await settle();
    expect(flushes.stats().started).toBe(3);
    await flushes.endOldest();
    await third;
  });

  it('frees the slot of a flush that throws before it returns a promise', async () => {
    let calls = 0;
    const flush = coalesceFlushes(() => {
      calls++;
      if (calls === 1) throw new Error('thrown, not rejected');
      return Promise.resolve();
    }, 1);
    await expect(flush()).resolves.toBeUndefined();
    await expect(flush()).resolves.toBeUndefined();
    expect(calls).toBe(2);
  });

  it('resolves callers when a flush fails, and keeps going', async () => {
    const flushes = controlledFlushes();
    const flush = coalesceFlushes(flushes.flush, 1);
    const first = flush();
    const second = flush();
    await flushes.endOldest('fail');
    await expect(first).resolves.toBeUndefined();
    await flushes.endOldest();
    await expect(second).resolves.toBeUndefined();
    expect(flushes.stats()).toEqual({ started: 2, running: 0, mostAtOnce: 1 });
  });
});
