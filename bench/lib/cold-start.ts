import { killChild } from './children.ts';
import { untilFirstSuccess } from './probes.ts';
import { freePort, readinessProbe, type ServerSpec, spawnServer } from './servers.ts';

const COLD_START_TIMEOUT_MS = 10_000;
/** Probe spacing: a refused connection on loopback costs microseconds, so poll tightly. */
const PROBE_INTERVAL_MS = 1;

export type ColdStartCase = {
  id: string;
  label: string;
  spec: ServerSpec;
};

/** Milliseconds from spawn to the first successful response. Then the process is killed. */
export async function measureColdStart(spec: ServerSpec): Promise<number> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const started = performance.now();
  const child = spawnServer(spec, port);
  try {
    const answered = await untilFirstSuccess(readinessProbe(spec.role, url), {
      timeoutMs: COLD_START_TIMEOUT_MS,
      intervalMs: PROBE_INTERVAL_MS,
      failed: () =>
        child.hasExited() ? `${spec.name} exited during start:\n${child.tail()}` : undefined,
    });
    return answered - started;
  } finally {
    await killChild(child);
  }
}

/** Runs every case `runs` times, interleaved (case A, B, C, A, B, C, ...) so drift is shared. */
export async function measureColdStarts(
  cases: readonly ColdStartCase[],
  runs: number,
  onRun?: (id: string, ms: number) => void,
): Promise<Record<string, number[]>> {
  const results: Record<string, number[]> = Object.fromEntries(cases.map((item) => [item.id, []]));
  for (let run = 0; run < runs; run++) {
    for (const item of cases) {
      const ms = await measureColdStart(item.spec);
      results[item.id]?.push(ms);
      onRun?.(item.id, ms);
    }
  }
  return results;
}
