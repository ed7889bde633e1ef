import { setTimeout as sleep } from 'node:timers/promises';
import { stopChild } from './children.ts';
import { runWrk, type WrkResult } from './load-generators.ts';
import { cpuTimeMs, type Memory, machineCpuMs, memory, reapedChildrenCpuMs } from './proc-stats.ts';
import { checkGreet, type Running, type ServerSpec, startServer } from './servers.ts';

/*
 * POST /greet through an api + backend pair at fixed concurrency. Every configuration's pair is
 * started once and warmed up (V8 needs about 10 s of this load to reach steady throughput, too
 * long to restart pairs every round); measured runs then alternate between configurations in an
 * order that rotates each round, so machine drift falls on all of them alike.
 */

export type RoleSpec = Pick<ServerSpec, 'script' | 'env' | 'nodeOptions'>;

export type PairConfig = {
  id: string;
  label: string;
  api: RoleSpec;
  backend: RoleSpec;
  /** Headers on every request of the load (none by default). */
  headers?: Readonly<Record<string, string>>;
  /** Spans each request of the load should export, per role (none by default). */
  spansPerRequest?: { api: number; backend: number };
};

export type CpuLayout = {
  api?: string | undefined;
  backend?: string | undefined;
  load?: string | undefined;
};

export type RunningPair = {
  config: PairConfig;
  api: Running;
  backend: Running;
  idle: { api: Memory; backend: Memory };
  /** POST /greet answered by this pair so far (checks, warm-up and measured runs). */
  served: number;
};

export type E2eRun = {
  config: string;
  round: number;
  wrk: WrkResult;
  /** total = api + backend; load = wrk; bench = this process (the span sink). */
  cpuMsPerRequest: { api: number; backend: number; total: number; load: number; bench: number };
  /** Share of the machine's CPU time used by processes outside the bench during the run. */
  otherCpuShare: number;
};

const IDLE_SETTLE_MS = 500;

export async function startPair(config: PairConfig, layout: CpuLayout): Promise<RunningPair> {
  const backend = await startServer({
    ...config.backend,
    name: `${config.id} backend`,
    role: 'backend',
    cpus: layout.backend,
  });
  const api = await startServer({
    ...config.api,
    name: `${config.id} api`,
    role: 'api',
    cpus: layout.api,
    backendUrl: backend.url,
  });
  await checkGreet(api.url);
  await sleep(IDLE_SETTLE_MS);
  return {
    config,
    api,
    backend,
    idle: { api: memory(api.child.pid), backend: memory(backend.child.pid) },
    served: 1,
  };
}

export function assertAlive(pair: RunningPair): void {
  for (const running of [pair.api, pair.backend]) {
    if (running.child.hasExited())
      throw new Error(`${running.child.name} exited under load:\n${running.child.tail()}`);
  }
}

export type LoadOptions = {
  connections: number;
  seconds: number;
  wrkScript: string;
  layout: CpuLayout;
};

export async function loadPair(
  pair: RunningPair,
  options: LoadOptions,
  round: number,
): Promise<E2eRun> {
  const before = {
    api: cpuTimeMs(pair.api.child.pid),
    backend: cpuTimeMs(pair.backend.child.pid),
    bench: process.cpuUsage(),
    load: reapedChildrenCpuMs(),
    machine: machineCpuMs(),
  };
  const wrk = await runWrk({
    url: `${pair.api.url}/greet`,
    connections: options.connections,
    seconds: options.seconds,
    script: options.wrkScript,
    headers: pair.config.headers,
    cpus: options.layout.load,
  });
  assertAlive(pair);
  const bench = process.cpuUsage(before.bench);
  const api = cpuTimeMs(pair.api.child.pid) - before.api;
  const backend = cpuTimeMs(pair.backend.child.pid) - before.backend;
  const load = reapedChildrenCpuMs() - before.load;
  const machineAfter = machineCpuMs();
  const benchMs = (bench.user + bench.system) / 1000;
  const others = machineAfter.busy - before.machine.busy - api - backend - load - benchMs;
  pair.served += wrk.requests;
  const perRequest = (ms: number) => (wrk.requests > 0 ? ms / wrk.requests : Number.NaN);
  return {
    config: pair.config.id,
    round,
    wrk,
    cpuMsPerRequest: {
      api: perRequest(api),
      backend: perRequest(backend),
      total: perRequest(api + backend),
      load: perRequest(load),
      bench: perRequest(benchMs),
    },
    otherCpuShare: Math.max(0, others) / (machineAfter.total - before.machine.total),
  };
}

/** Round r runs the configurations starting at index r, so each takes every position in turn. */
export function roundOrder<T>(items: readonly T[], round: number): T[] {
  const start = round % items.length;
  return [...items.slice(start), ...items.slice(0, start)];
}

/** SIGTERM to both roles; telemetry flushes before they exit. */
export async function stopPair(pair: RunningPair): Promise<void> {
  await Promise.all([stopChild(pair.api.child), stopChild(pair.backend.child)]);
}

export type EndToEndOptions = LoadOptions & { rounds: number; warmupSeconds: number };

export type PairInstance = {
  config: string;
  /** RSS after start and one request, before any load. */
  idleRssMiB: { api: number; backend: number };
  /** RSS high-water mark of each process after all its runs. */
  peakRssMiB: { api: number; backend: number };
  /** POST /greet answered (check, warm-up, measured runs). */
  served: number;
};

/**
 * Starts one pair per configuration, warms each up, then runs the rounds; stops every pair
 * (gracefully, so exporters flush) before returning.
 */
export async function runEndToEnd(
  configs: readonly PairConfig[],
  options: EndToEndOptions,
  onRun?: (run: E2eRun) => void,
): Promise<{ runs: E2eRun[]; instances: PairInstance[] }> {
  const pairs: RunningPair[] = [];
  const runs: E2eRun[] = [];
  try {
    for (const config of configs) pairs.push(await startPair(config, options.layout));
    for (const pair of pairs)
      await loadPair(pair, { ...options, seconds: options.warmupSeconds }, -1);
    for (let round = 0; round < options.rounds; round++) {
      for (const pair of roundOrder(pairs, round)) {
        const run = await loadPair(pair, options, round);
        runs.push(run);
        onRun?.(run);
      }
    }
    const peaks = pairs.map((pair) => ({
      api: memory(pair.api.child.pid).peakRssMiB,
      backend: memory(pair.backend.child.pid).peakRssMiB,
    }));
    await Promise.all(pairs.map(stopPair));
    const instances = pairs.map((pair, index) => ({
      config: pair.config.id,
      idleRssMiB: { api: pair.idle.api.rssMiB, backend: pair.idle.backend.rssMiB },
      peakRssMiB: peaks[index] as PairInstance['peakRssMiB'],
      served: pair.served,
    }));
    return { runs, instances };
  } finally {
    await Promise.all(pairs.map(stopPair));
  }
}
