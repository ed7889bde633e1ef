import { describe, expect, it } from 'vitest';
import { lazy } from '../src/lazy.js';

describe('lazy', () => {
  it('loads once for every caller, concurrent or later', async () => {
    let loads = 0;
    const value = lazy(async () => ++loads);
    expect(await Promise.all([value(), value(), value()])).toEqual([1, 1, 1]);
    expect(await value()).toBe(1);
    expect(loads).toBe(1);
  });

  it('does not keep a failure: the next call loads again', async () => {
    let loads = 0;
    const value = lazy(async () => {
      loads += 1;
      if (loads === 1) throw new Error('first load fails');
      return loads;
    });
    await expect(Promise.all([value(), value()])).rejects.toThrow('first load fails');
    expect(await value()).toBe(2);
    expect(await value()).toBe(2);
    expect(loads).toBe(2);
  });
});
