import type { E2eRun, PairConfig, PairInstance } from './end-to-end.ts';
import type { GrpcRun } from './grpc-load.ts';
import type { Machine } from './machine.ts';
import type { SpanSink } from './span-sinks.ts';
import { max, median, min, sum } from './stats.ts';

/** The shape of .bench/results.json, and the summaries computed from the raw runs. */

export type Settings = {
  /** The commit dist/ was built from (dist/ itself carries no version). */
  revision: string;
  quick: boolean;
  connections: number;
  e2eSeconds: number;
  warmupSeconds: number;
  rounds: number;
  grpcSeconds: number;
  grpcRounds: number;
  coldStartRuns: number;
  pinning: string;
  layout: { api?: string | undefined; backend?: string | undefined; load?: string | undefined };
  loadGenerator: string;
  shippedNodeOptions: string | undefined;
  logLevel: string;
  spanSink: 'receiver' | 'counter';
};

export type ColdStartResult = {
  id: string;
  label: string;
  samplesMs: number[];
  medianMs: number;
  minMs: number;
  maxMs: number;
};

export type E2eSummary = {
  requestsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number };
  cpuMsPerRequest: { api: number; backend: number; total: number; load: number; bench: number };
  /** Median share of the machine's CPU used by processes outside the bench during the runs. */
  otherCpuShare: number;
  idleRssMiB: { api: number; backend: number };
  peakRssMiB: { api: number; backend: number };
  errors: number;
  requests: number;
};

export type E2eConfigResult = {
  id: string;
  label: string;
  nodeOptions: string | undefined;
  summary: E2eSummary;
};

export type Ratio = {
  id: string;
  label: string;
  /** No round had quiet runs of both configurations: computed from disturbed runs. */
  noisy?: boolean;
  median: number;
  min: number;
  max: number;
  perRound: number[];
};

export type SpanDelivery = {
  config: string;
  expected: { api: number; backend: number };
  received: { api: number; backend: number };
  /** What the SDK itself counted as dropped (queue full) or failed to export; undefined: no report. */
  undelivered: { api: number | undefined; backend: number | undefined };
};

export type GrpcSummary = {
  target: string;
  label: string;
  mode: string;
  requestsPerSecond: number;
  meanLatencyMs: number;
  cpuMsPerRequest: number;
  errors: number;
  /** No quiet run in this cell: the figures come from disturbed runs. */
  noisy: boolean;
};

export type TargetCheck = { target: string; measured: string; met: boolean | undefined };

export type Results = {
  startedAt: string;
  durationSeconds: number;
  machine: Machine;
  loadAverageAfter: number[];
  settings: Settings;
  coldStart: {
    cases: ColdStartResult[];
    /** Share of the machine's CPU used by processes outside the bench during the cold starts. */
    otherCpuShare: number;
  };
  endToEnd: {
    /** Runs the summaries and ratios leave out (see selectRuns); `runs` keeps them all. */
    selection: RunSelection;
    configs: E2eConfigResult[];
    ratios: Ratio[];
    runs: E2eRun[];
    instances: PairInstance[];
    spans: SpanDelivery[];
  };
  grpc: { summary: GrpcSummary[]; runs: GrpcRun[] };
  targets: TargetCheck[];
};

/** A run counts when other processes took at most this share of the CPU while it ran. */
export const NOISY_SHARE = 0.1;

export type RunSelection = {
  /** Runs left out of summaries and ratios: other processes took too much CPU meanwhile. */
  dropped: { config: string; round: number; otherCpuShare: number }[];
  /** Configurations with no quiet run: then no run is left out, and every figure is skewed. */
  allNoisy: string[];
};

/**
 * Keeps the runs no other process disturbed, when every configuration has at least one; else
 * keeps all (mixing quiet and disturbed configurations would skew every ratio) and says which
 * configurations had no quiet run. Ratios pair runs of the same round, so a dropped run drops
 * that round from its ratios only.
 */
export function selectRuns(runs: readonly E2eRun[]): { used: E2eRun[]; selection: RunSelection } {
  const configs = [...new Set(runs.map((run) => run.config))];
  const quiet = (run: E2eRun) => run.otherCpuShare <= NOISY_SHARE;
  const allNoisy = configs.filter(
    (config) => !runs.some((run) => run.config === config && quiet(run)),
  );
  if (allNoisy.length > 0) return { used: [...runs], selection: { dropped: [], allNoisy } };
  return {
    used: runs.filter(quiet),
    selection: {
      dropped: runs
        .filter((run) => !quiet(run))
        .map((run) => ({ config: run.config, round: run.round, otherCpuShare: run.otherCpuShare })),
      allNoisy: [],
    },
  };
}

export function summarizeColdStart(
  id: string,
  label: string,
  samplesMs: number[],
): ColdStartResult {
  return {
    id,
    label,
    samplesMs,
    medianMs: median(samplesMs),
    minMs: min(samplesMs),
    maxMs: max(samplesMs),
  };
}

export function summarizeE2e(
  runs: readonly E2eRun[],
  instances: readonly PairInstance[],
): E2eSummary {
  const pick = (f: (run: E2eRun) => number) => median(runs.map(f));
  return {
    requestsPerSecond: pick((run) => run.wrk.requestsPerSecond),
    latencyMs: {
      p50: pick((run) => run.wrk.latencyMs.p50),
      p90: pick((run) => run.wrk.latencyMs.p90),
      p99: pick((run) => run.wrk.latencyMs.p99),
    },
    cpuMsPerRequest: {
      api: pick((run) => run.cpuMsPerRequest.api),
      backend: pick((run) => run.cpuMsPerRequest.backend),
      total: pick((run) => run.cpuMsPerRequest.total),
      load: pick((run) => run.cpuMsPerRequest.load),
      bench: pick((run) => run.cpuMsPerRequest.bench),
    },
    otherCpuShare: pick((run) => run.otherCpuShare),
    idleRssMiB: {
      api: median(instances.map((i) => i.idleRssMiB.api)),
      backend: median(instances.map((i) => i.idleRssMiB.backend)),
    },
    peakRssMiB: {
      api: max(instances.map((i) => i.peakRssMiB.api)),
      backend: max(instances.map((i) => i.peakRssMiB.backend)),
    },
    errors: sum(runs.map((run) => run.wrk.errors)),
    requests: sum(runs.map((run) => run.wrk.requests)),
  };
}

export function summarizeConfigs(
  configs: readonly PairConfig[],
  runs: readonly E2eRun[],
  instances: readonly PairInstance[],
): E2eConfigResult[] {
  return configs.map((config) => ({
    id: config.id,
    label: config.label,
    nodeOptions: config.api.nodeOptions,
    summary: summarizeE2e(
      runs.filter((run) => run.config === config.id),
      instances.filter((instance) => instance.config === config.id),
    ),
  }));
}

/** Per-round ratio of a metric between two configurations measured in the same round. */
export function pairedRatio(
  runs: readonly E2eRun[],
  id: string,
  label: string,
  numerator: string,
  denominator: string,
  metric: (run: E2eRun) => number,
): Ratio {
  const rounds = [...new Set(runs.map((run) => run.round))];
  const perRound = rounds.flatMap((round) => {
    const top = runs.find((run) => run.round === round && run.config === numerator);
    const bottom = runs.find((run) => run.round === round && run.config === denominator);
    return top && bottom ? [metric(top) / metric(bottom)] : [];
  });
  return { id, label, median: median(perRound), min: min(perRound), max: max(perRound), perRound };
}

const rps = (run: E2eRun) => run.wrk.requestsPerSecond;
const p99 = (run: E2eRun) => run.wrk.latencyMs.p99;
/** Throughput implied by CPU per request (api + backend): steadier than req/s on a busy machine. */
const cpu = (run: E2eRun) => 1 / run.cpuMsPerRequest.total;

/** Ratios from the quiet runs (`used`); from all runs, marked noisy, where no round has a quiet pair. */
export function endToEndRatios(used: readonly E2eRun[], all: readonly E2eRun[] = used): Ratio[] {
  const on = 'telemetry on (default sampler)';
  const exported = '100% sampled + exported';
  const cloudRun = "as on Cloud Run (the front end's unsampled requests)";
  const rows: [string, string, string, string, (run: E2eRun) => number][] = [
    ['default/off', `throughput: ${on} / off`, 'default', 'off', rps],
    ['export/off', `throughput: ${exported} / off`, 'export', 'off', rps],
    ['cloud-run/off', `throughput: ${cloudRun} / off`, 'cloud-run', 'off', rps],
    ['off/baseline', 'throughput: product, telemetry off / baseline', 'off', 'baseline', rps],
    ['default/baseline', `throughput: ${on} / baseline`, 'default', 'baseline', rps],
    ['export/baseline', `throughput: ${exported} / baseline`, 'export', 'baseline', rps],
    ['p99 default/baseline', `p99 latency: ${on} / baseline`, 'default', 'baseline', p99],
    ['p99 export/baseline', `p99 latency: ${exported} / baseline`, 'export', 'baseline', p99],
    ['cpu default/off', `CPU-implied throughput: ${on} / off`, 'default', 'off', cpu],
    ['cpu export/off', `CPU-implied throughput: ${exported} / off`, 'export', 'off', cpu],
    [
      'cpu default/baseline',
      `CPU-implied throughput: ${on} / baseline`,
      'default',
      'baseline',
      cpu,
    ],
    [
      'cpu export/baseline',
      `CPU-implied throughput: ${exported} / baseline`,
      'export',
      'baseline',
      cpu,
    ],
    [
      'fastify/baseline',
      "throughput: the baseline's handler on Fastify / baseline",
      'fastify',
      'baseline',
      rps,
    ],
    [
      'off-quiet/off',
      'throughput: product, telemetry off, without / with the access line',
      'off-quiet',
      'off',
      rps,
    ],
  ];
  const ids = [...new Set(all.map((run) => run.config))];
  for (const id of ids.filter((config) => config.startsWith('export-'))) {
    rows.push([
      `${id}/export`,
      `throughput: ${id} / export (Dockerfile NODE_OPTIONS)`,
      id,
      'export',
      rps,
    ]);
  }
  return rows
    .filter(([, , top, bottom]) => ids.includes(top) && ids.includes(bottom))
    .map(([id, label, top, bottom, metric]) => {
      const quiet = pairedRatio(used, id, label, top, bottom, metric);
      if (quiet.perRound.length > 0) return quiet;
      return { ...pairedRatio(all, id, label, top, bottom, metric), noisy: true };
    });
}

/**
 * Spans the sink counted against what the requests should have made: per request of the load,
 * the configuration's spansPerRequest (2 from the api, SERVER and CLIENT, and 1 from the backend
 * when sampled); per pair, the api's check (2 + 1) and the backend's readiness Greet (1).
 * wrk does not count requests still in flight when it stops, so a few more may arrive.
 */
export function spanDelivery(
  configs: readonly PairConfig[],
  instances: readonly PairInstance[],
  sink: Pick<SpanSink, 'spansOf' | 'undeliveredOf'>,
): SpanDelivery[] {
  return configs
    .filter((config) => config.api.env.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined)
    .map((config) => {
      const mine = instances.filter((instance) => instance.config === config.id);
      const pairs = mine.length;
      const load = sum(mine.map((instance) => instance.served)) - pairs;
      const perRequest = config.spansPerRequest ?? { api: 0, backend: 0 };
      return {
        config: config.id,
        expected: {
          api: 2 * pairs + perRequest.api * load,
          backend: 2 * pairs + perRequest.backend * load,
        },
        received: {
          api: sink.spansOf(config.id, 'greeter-api'),
          backend: sink.spansOf(config.id, 'greeter-backend'),
        },
        undelivered: {
          api: sink.undeliveredOf(config.id, 'greeter-api'),
          backend: sink.undeliveredOf(config.id, 'greeter-backend'),
        },
      };
    });
}

/** Per backend and mode, medians over the quiet runs (over all of them when none was quiet). */
export function summarizeGrpc(
  runs: readonly GrpcRun[],
  labels: Record<string, string>,
): GrpcSummary[] {
  const keys = [...new Set(runs.map((run) => `${run.target}\u0000${run.mode}`))];
  return keys.map((key) => {
    const [target = '', mode = ''] = key.split('\u0000');
    const cell = runs.filter((run) => run.target === target && run.mode === mode);
    const quiet = cell.filter((run) => run.otherCpuShare <= NOISY_SHARE);
    const mine = quiet.length > 0 ? quiet : cell;
    return {
      target,
      label: labels[target] ?? target,
      mode,
      requestsPerSecond: median(mine.map((run) => run.h2load.requestsPerSecond)),
      meanLatencyMs: median(mine.map((run) => run.h2load.latencyMs.mean)),
      cpuMsPerRequest: median(mine.map((run) => run.cpuMsPerRequest)),
      errors: sum(cell.map((run) => run.h2load.errors)),
      noisy: quiet.length === 0,
    };
  });
}
