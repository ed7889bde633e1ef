import { type Child, stopChild } from './children.ts';
import { roundOrder } from './end-to-end.ts';
import { type H2loadResult, runH2loadGreet } from './load-generators.ts';
import { cpuTimeMs, machineCpuMs, reapedChildrenCpuMs } from './proc-stats.ts';
import { type ServerSpec, startServer } from './servers.ts';

/** A backend driven directly with h2load sending real gRPC frames. */

export type GrpcTarget = { id: string; label: string; url: string; child: Child };

export type GrpcMode = {
  id: string;
  label: string;
  connections: number;
  streamsPerConnection: number;
};

export const GRPC_MODES: readonly GrpcMode[] = [
  { id: '1x32', label: '1 connection x 32 streams', connections: 1, streamsPerConnection: 32 },
  { id: '32x1', label: '32 connections x 1 stream', connections: 32, streamsPerConnection: 1 },
];

export type GrpcRun = {
  target: string;
  mode: string;
  round: number;
  h2load: H2loadResult;
  cpuMsPerRequest: number;
  /** Share of the machine's CPU used by processes outside the bench during the run. */
  otherCpuShare: number;
};

export type GrpcLoadOptions = {
  rounds: number;
  seconds: number;
  warmupSeconds: number;
  body: string;
  /** CPU list for h2load (taskset), or undefined. */
  cpus?: string | undefined;
};

async function drive(
  target: GrpcTarget,
  mode: GrpcMode,
  seconds: number,
  options: GrpcLoadOptions,
) {
  const before = {
    target: cpuTimeMs(target.child.pid),
    load: reapedChildrenCpuMs(),
    bench: process.cpuUsage(),
    machine: machineCpuMs(),
  };
  const h2load = await runH2loadGreet({
    url: target.url,
    connections: mode.connections,
    streamsPerConnection: mode.streamsPerConnection,
    seconds,
    body: options.body,
    cpus: options.cpus,
  });
  if (target.child.hasExited())
    throw new Error(`${target.child.name} exited under load:\n${target.child.tail()}`);
  const cpu = cpuTimeMs(target.child.pid) - before.target;
  const bench = process.cpuUsage(before.bench);
  const machine = machineCpuMs();
  const ours = cpu + (reapedChildrenCpuMs() - before.load) + (bench.user + bench.system) / 1000;
  return {
    h2load,
    cpuMsPerRequest: h2load.requests > 0 ? cpu / h2load.requests : Number.NaN,
    otherCpuShare:
      Math.max(0, machine.busy - before.machine.busy - ours) /
      (machine.total - before.machine.total),
  };
}

export async function runGrpcLoad(
  targets: readonly GrpcTarget[],
  options: GrpcLoadOptions,
  onRun?: (run: GrpcRun) => void,
): Promise<GrpcRun[]> {
  for (const target of targets) {
    await drive(target, GRPC_MODES[0] as GrpcMode, options.warmupSeconds, options);
  }
  const runs: GrpcRun[] = [];
  for (let round = 0; round < options.rounds; round++) {
    for (const mode of GRPC_MODES) {
      for (const target of roundOrder(targets, round)) {
        const result = await drive(target, mode, options.seconds, options);
        const run = { target: target.id, mode: mode.id, round, ...result };
        runs.push(run);
        onRun?.(run);
      }
    }
  }
  return runs;
}

export type GrpcTargetSpec = { id: string; label: string; spec: Omit<ServerSpec, 'name' | 'role'> };

/** Starts each backend, drives them all in alternation, stops them. */
export async function runGrpcComparison(
  specs: readonly GrpcTargetSpec[],
  options: GrpcLoadOptions & { serverCpus?: string | undefined },
  onRun?: (run: GrpcRun) => void,
): Promise<GrpcRun[]> {
  const targets: GrpcTarget[] = [];
  try {
    for (const { id, label, spec } of specs) {
      const running = await startServer({
        ...spec,
        name: `${id} backend`,
        role: 'backend',
        cpus: options.serverCpus,
      });
      targets.push({ id, label, url: running.url, child: running.child });
    }
    return await runGrpcLoad(targets, options, onRun);
  } finally {
    await Promise.all(targets.map((target) => stopChild(target.child)));
  }
}
