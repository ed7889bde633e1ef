import { readFileSync } from 'node:fs';

export type MemorySample = { atMs: number; rssMiB: number };

/** Resident set size from /proc/<pid>/status, in MiB. */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** Samples RSS of `pid` every `everyMs` until stopped. */
export function sampleRss(pid: number, everyMs: number) {
  const started = performance.now();
  const samples: MemorySample[] = [];
  const take = () => samples.push({ atMs: performance.now() - started, rssMiB: rssMiB(pid) });
  take();
  const timer = setInterval(take, everyMs);
  return {
    samples,
    stop() {
      clearInterval(timer);
      take();
      return samples;
    },
  };
}

export type Flatness = {
  afterWarmUpMiB: number;
  endMiB: number;
  peakMiB: number;
  growthMiB: number;
  allowedMiB: number;
  flat: boolean;
};

/**
 * RSS is flat when the median of the last quarter of the run exceeds the median of the quarter
 * right after the warm-up by at most 10 % or 32 MiB, whichever is larger.
 */
export function rssFlatness(
  samples: readonly MemorySample[],
  warmUpMs: number,
  endMs: number,
): Flatness {
  const span = (endMs - warmUpMs) / 4;
  const medianBetween = (from: number, to: number) => {
    const values = samples
      .filter((s) => s.atMs >= from && s.atMs <= to)
      .map((s) => s.rssMiB)
      .sort((a, b) => a - b);
    return values[Math.floor(values.length / 2)] ?? Number.NaN;
  };
  const afterWarmUpMiB = medianBetween(warmUpMs, warmUpMs + span);
  const endMiB = medianBetween(endMs - span, endMs);
  const allowedMiB = Math.max(32, afterWarmUpMiB * 0.1);
  const growthMiB = endMiB - afterWarmUpMiB;
  return {
    afterWarmUpMiB,
    endMiB,
    peakMiB: Math.max(...samples.map((s) => s.rssMiB)),
    growthMiB,
    allowedMiB,
    flat: growthMiB <= allowedMiB,
  };
}
