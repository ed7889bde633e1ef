import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { startMetadataServer } from '../tools/cloud-run-local/index.ts';
import { stopAllChildren, stopChild, stopChildrenOnExit } from './lib/children.ts';
import { measureColdStarts } from './lib/cold-start.ts';
import {
  baselinePair,
  coldStartCases,
  endToEndConfigs,
  LOG_LEVEL,
  type MemoryVariant,
  type Product,
  productEnv,
  productPair,
} from './lib/configurations.ts';
import { type CpuLayout, runEndToEnd } from './lib/end-to-end.ts';
import { GRPC_MODES, type GrpcTargetSpec, runGrpcComparison } from './lib/grpc-load.ts';
import { writeLoadFiles } from './lib/load-generators.ts';
import { describeMachine, describeRevision, dockerfileNodeOptions } from './lib/machine.ts';
import { cpuTimeMs, machineCpuMs, reapedChildrenCpuMs } from './lib/proc-stats.ts';
import { renderReport } from './lib/report.ts';
import {
  endToEndRatios,
  type Results,
  type Settings,
  selectRuns,
  spanDelivery,
  summarizeColdStart,
  summarizeConfigs,
  summarizeGrpc,
} from './lib/results.ts';
import {
  type BenchBuild,
  baseEnv,
  buildBenchServers,
  REPO,
  snapshotProductBuild,
  startServer,
} from './lib/servers.ts';
import { type SpanSink, startSpanSink } from './lib/span-sinks.ts';
import { checkTargets } from './lib/targets.ts';

const USAGE = `Usage: npm run bench -- [options]      (builds first; or: node bench/run.ts [options])

  --quick            about a minute instead of about five: shorter runs, fewer rounds, no
                     heap-sizing, Connect-server or cost-breakdown variants
  --pin LAYOUT       none (default) or split: api on CPU 0, backend and wrk on CPU 1 (taskset)
  --sink KIND        where exported spans go: counter (default) walks only the OTLP envelope to
                     count spans; receiver is tools/otlp-receiver, which decodes every span
                     (its CPU competes with the services on the same cores)
  --only PARTS       comma-separated subset of: cold,e2e,grpc (default: all)
  --out FILE         JSON results (default .bench/results.json; the Markdown goes beside it)
  -h, --help

Prints a Markdown report on stdout (progress on stderr) and writes JSON. Needs wrk, h2load and
taskset on PATH, and a production build in dist/ (npm run build), which it copies first.`;

type Plan = {
  coldStartRuns: number;
  e2eSeconds: number;
  warmupSeconds: number;
  rounds: number;
  grpcSeconds: number;
  grpcRounds: number;
  grpcWarmupSeconds: number;
  /** The exported configuration again with other NODE_OPTIONS (heap sizing). */
  memoryVariants: MemoryVariant[];
  /** Fastify alone and the product without its access line, next to the baseline. */
  breakdown: boolean;
  connectVariants: boolean;
};

const withFlag = (shipped: string | undefined, flag: string) =>
  [shipped, flag].filter(Boolean).join(' ');

const MEMORY_VARIANTS: MemoryVariant[] = [
  { id: 'v8', label: 'V8 defaults (no NODE_OPTIONS)', nodeOptions: () => undefined },
  {
    id: 'semi16',
    label: '--max-semi-space-size=16',
    nodeOptions: () => '--max-semi-space-size=16',
  },
  {
    // Node sizes its heap from a container's memory limit: about 256 MiB of old space on a
    // 512 MiB Cloud Run instance (deploy.sh's default), which changes how V8 collects.
    id: 'old256',
    label: 'Dockerfile NODE_OPTIONS + --max-old-space-size=256 (a 512 MiB instance)',
    nodeOptions: (shipped) => withFlag(shipped, '--max-old-space-size=256'),
  },
];

const PLANS: Record<'full' | 'quick', Plan> = {
  full: {
    coldStartRuns: 7,
    e2eSeconds: 5,
    warmupSeconds: 8,
    rounds: 3,
    grpcSeconds: 2,
    grpcRounds: 2,
    grpcWarmupSeconds: 3,
    memoryVariants: MEMORY_VARIANTS,
    breakdown: true,
    connectVariants: true,
  },
  quick: {
    coldStartRuns: 3,
    e2eSeconds: 3,
    warmupSeconds: 4,
    rounds: 2,
    grpcSeconds: 2,
    grpcRounds: 1,
    grpcWarmupSeconds: 1,
    memoryVariants: [],
    breakdown: false,
    connectVariants: false,
  },
};

const LAYOUTS: Record<string, CpuLayout> = {
  none: {},
  split: { api: '0', backend: '1', load: '1' },
};

const CONNECTIONS = 32;

const log = (message: string) => process.stderr.write(`${message}\n`);

type Options = {
  quick: boolean;
  layoutName: string;
  sink: SpanSink['kind'];
  parts: Set<string>;
  out: string;
};

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      pin: { type: 'string', default: 'none' },
      sink: { type: 'string', default: 'counter' },
      only: { type: 'string', default: 'cold,e2e,grpc' },
      out: { type: 'string', default: `${REPO}.bench/results.json` },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (!(values.pin in LAYOUTS))
    throw new Error(`--pin ${values.pin}: use one of ${Object.keys(LAYOUTS).join(', ')}`);
  if (values.sink !== 'counter' && values.sink !== 'receiver') {
    throw new Error(`--sink ${values.sink}: use counter or receiver`);
  }
  const parts = new Set(values.only.split(',').map((part) => part.trim()));
  for (const part of parts) {
    if (!['cold', 'e2e', 'grpc'].includes(part)) {
      throw new Error(`--only: unknown part "${part}" (use cold, e2e, grpc)\n${USAGE}`);
    }
  }
  return { quick: values.quick, layoutName: values.pin, sink: values.sink, parts, out: values.out };
}

async function coldStartPhase(
  product: Product,
  bundles: BenchBuild,
  runs: number,
  workDir: string,
): Promise<Results['coldStart']> {
  log(`cold start: ${runs} runs per case`);
  const compileCache = `${workDir}/compile-cache`;
  rmSync(compileCache, { recursive: true, force: true });
  fillCompileCache(product, compileCache);
  const metadata = await startMetadataServer({ projectId: 'bench-project' });
  try {
    return await measureColdStartCases(product, bundles, runs, compileCache, metadata.host);
  } finally {
    await metadata.close();
  }
}

async function measureColdStartCases(
  product: Product,
  bundles: BenchBuild,
  runs: number,
  compileCache: string,
  metadataHost: string,
): Promise<Results['coldStart']> {
  const backend = await startServer({
    name: 'backend for api cold starts',
    role: 'backend',
    script: product.entry,
    env: productEnv(product, 'off', 'cold-start'),
  });
  try {
    const before = {
      machine: machineCpuMs(),
      reaped: reapedChildrenCpuMs(),
      bench: process.cpuUsage(),
      backend: cpuTimeMs(backend.child.pid),
    };
    const cases = coldStartCases(product, bundles, backend.url, compileCache, metadataHost);
    const samples = await measureColdStarts(cases, runs);
    const machine = machineCpuMs();
    const bench = process.cpuUsage(before.bench);
    const ours =
      reapedChildrenCpuMs() -
      before.reaped +
      (bench.user + bench.system) / 1000 +
      cpuTimeMs(backend.child.pid) -
      before.backend;
    return {
      cases: cases.map(({ id, label }) => summarizeColdStart(id, label, samples[id] ?? [])),
      otherCpuShare:
        Math.max(0, machine.busy - before.machine.busy - ours) /
        (machine.total - before.machine.total),
    };
  } finally {
    await stopChild(backend.child);
  }
}

/** What the image's build does, against the bench's copy of dist/. */
function fillCompileCache(product: Product, compileCache: string): void {
  execFileSync(process.execPath, [`${REPO}scripts/warm-compile-cache.mjs`, product.entry], {
    env: {
      ...baseEnv(),
      NODE_ENV: 'production',
      NODE_COMPILE_CACHE: compileCache,
      ...(product.shippedNodeOptions ? { NODE_OPTIONS: product.shippedNodeOptions } : {}),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
    timeout: 60_000,
  });
}

async function endToEndPhase(
  product: Product,
  bundles: BenchBuild,
  plan: Plan,
  layout: CpuLayout,
  wrkScript: string,
): Promise<Results['endToEnd']> {
  const configs = endToEndConfigs(product, bundles, plan.memoryVariants, plan.breakdown);
  log(
    `end to end: ${configs.length} configurations, ${plan.warmupSeconds} s warm-up each, ` +
      `then ${plan.rounds} rounds of ${plan.e2eSeconds} s`,
  );
  const { runs, instances } = await runEndToEnd(
    configs,
    {
      rounds: plan.rounds,
      warmupSeconds: plan.warmupSeconds,
      seconds: plan.e2eSeconds,
      connections: CONNECTIONS,
      wrkScript,
      layout,
    },
    (run) =>
      log(
        `round ${run.round + 1}/${plan.rounds} ${run.config}: ${run.wrk.requestsPerSecond.toFixed(0)} req/s, ` +
          `p99 ${run.wrk.latencyMs.p99.toFixed(1)} ms, ${run.cpuMsPerRequest.total.toFixed(3)} CPU ms/req, ` +
          `${run.wrk.errors} errors, other processes ${(100 * run.otherCpuShare).toFixed(0)}% CPU`,
      ),
  );
  const { used, selection } = selectRuns(runs);
  return {
    selection,
    configs: summarizeConfigs(configs, used, instances),
    ratios: endToEndRatios(used, runs),
    runs,
    instances,
    spans: spanDelivery(configs, instances, product.sink),
  };
}

async function grpcPhase(
  product: Product,
  bundles: BenchBuild,
  plan: Plan,
  layout: CpuLayout,
  body: string,
): Promise<Results['grpc']> {
  const baseline = baselinePair(bundles);
  const off = productPair(product, { id: 'off', label: '', telemetry: 'off' });
  const on = productPair(product, { id: 'default', label: '', telemetry: 'default' });
  const specs: GrpcTargetSpec[] = [
    { id: 'baseline', label: 'framework-free (node:http2)', spec: baseline.backend },
    { id: 'off', label: 'product backend, telemetry off', spec: off.backend },
    { id: 'default', label: 'product backend, telemetry on (default sampler)', spec: on.backend },
  ];
  if (plan.connectVariants) {
    const connect = (server: string) => ({
      script: bundles['connect-backend'],
      env: { SERVER: server, NODE_ENV: 'production' },
    });
    specs.push(
      {
        id: 'connect-node',
        label: 'Connect Greet on http2.createServer + connectNodeAdapter (no telemetry, no logs)',
        spec: connect('node'),
      },
      {
        id: 'connect-fastify',
        label:
          'Connect Greet on fastify({ http2: true }) + connect-fastify (no telemetry, no logs)',
        spec: connect('fastify'),
      },
    );
  }
  log(
    `gRPC: ${specs.length} backends x ${GRPC_MODES.length} modes x ${plan.grpcRounds} rounds of ${plan.grpcSeconds} s`,
  );
  const runs = await runGrpcComparison(
    specs,
    {
      rounds: plan.grpcRounds,
      seconds: plan.grpcSeconds,
      warmupSeconds: plan.grpcWarmupSeconds,
      body,
      cpus: layout.load,
      serverCpus: layout.backend,
    },
    (run) =>
      log(
        `gRPC ${run.target} ${run.mode}: ${run.h2load.requestsPerSecond.toFixed(0)} req/s, ${run.h2load.errors} errors`,
      ),
  );
  return {
    summary: summarizeGrpc(runs, Object.fromEntries(specs.map((s) => [s.id, s.label]))),
    runs,
  };
}

async function main(): Promise<void> {
  const options = parseOptions();
  const plan = options.quick ? PLANS.quick : PLANS.full;
  const layout = LAYOUTS[options.layoutName] as CpuLayout;
  const started = performance.now();
  const machine = describeMachine();
  const shippedNodeOptions = dockerfileNodeOptions(`${REPO}Dockerfile`);
  stopChildrenOnExit();

  const workDir = `${REPO}.bench`;
  mkdirSync(`${workDir}/build`, { recursive: true });
  const entry = snapshotProductBuild(workDir);
  const bundles = await buildBenchServers(`${workDir}/build`);
  const loadFiles = writeLoadFiles(workDir);
  const sink = await startSpanSink(options.sink);
  const product: Product = { entry, sink, shippedNodeOptions };
  log(
    `OTLP ${sink.kind} on ${sink.url}; ${machine.cpus} CPUs, load average ${machine.loadAverage.join(' ')}`,
  );
  if ((machine.loadAverage[0] ?? 0) > 1) log('warning: the machine is busy; figures will be noisy');

  const settings: Settings = {
    revision: describeRevision(REPO),
    quick: options.quick,
    connections: CONNECTIONS,
    e2eSeconds: plan.e2eSeconds,
    warmupSeconds: plan.warmupSeconds,
    rounds: plan.rounds,
    grpcSeconds: plan.grpcSeconds,
    grpcRounds: plan.grpcRounds,
    coldStartRuns: plan.coldStartRuns,
    pinning:
      options.layoutName === 'none'
        ? 'none (the kernel schedules all processes on both CPUs)'
        : `taskset: api on CPU ${layout.api}, backend on CPU ${layout.backend}, wrk and h2load on CPU ${layout.load}`,
    layout,
    loadGenerator: 'wrk (1 thread) for HTTP/1.1, h2load (1 thread) for gRPC',
    shippedNodeOptions,
    logLevel: LOG_LEVEL,
    spanSink: options.sink,
  };
  const results: Results = {
    startedAt: new Date().toISOString(),
    durationSeconds: 0,
    machine,
    loadAverageAfter: [],
    settings,
    coldStart: { cases: [], otherCpuShare: 0 },
    endToEnd: {
      selection: { dropped: [], allNoisy: [] },
      configs: [],
      ratios: [],
      runs: [],
      instances: [],
      spans: [],
    },
    grpc: { summary: [], runs: [] },
    targets: [],
  };
  try {
    if (options.parts.has('cold')) {
      results.coldStart = await coldStartPhase(product, bundles, plan.coldStartRuns, workDir);
    }
    if (options.parts.has('e2e')) {
      results.endToEnd = await endToEndPhase(product, bundles, plan, layout, loadFiles.wrkScript);
    }
    if (options.parts.has('grpc')) {
      results.grpc = await grpcPhase(product, bundles, plan, layout, loadFiles.grpcBody);
    }
    results.targets = checkTargets(results);
  } finally {
    await stopAllChildren();
    await sink.close();
  }

  results.durationSeconds = (performance.now() - started) / 1000;
  results.loadAverageAfter = describeMachine().loadAverage;
  const report = renderReport(results);
  mkdirSync(dirname(options.out), { recursive: true });
  writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(`${options.out.replace(/\.json$/, '')}.md`, `${report}\n`);
  process.stdout.write(`${report}\n`);
  log(`wrote ${options.out} and its .md`);
}

main().catch(async (error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  await stopAllChildren();
  process.exit(1);
});
