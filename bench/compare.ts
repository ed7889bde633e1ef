import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stopAllChildren, stopChildrenOnExit } from './lib/children.ts';
import { parseTelemetry, productPair } from './lib/configurations.ts';
import { type PairConfig, runEndToEnd } from './lib/end-to-end.ts';
import { writeLoadFiles } from './lib/load-generators.ts';
import { dockerfileNodeOptions } from './lib/machine.ts';
import { pairedRatio } from './lib/results.ts';
import { REPO } from './lib/servers.ts';
import { startSpanSink } from './lib/span-sinks.ts';
import { median } from './lib/stats.ts';

const USAGE = `Usage: node bench/compare.ts [options] BUILD BUILD...

Runs POST /greet end to end through each production build (a directory like dist/, with
entry/main.js), in alternation as npm run bench does, and prints throughput, CPU per request
and each build's throughput against the first, paired round by round. For example:

  cp -r dist /tmp/before && <change something> && npm run build
  node bench/compare.ts /tmp/before dist

  --telemetry MODE   off, default (the default), export (100% sampled, to a local OTLP sink) or
                     cloud-run (exported, default sampler, Cloud Run's unsampled traceparent)
  --rounds N         measured rounds per build (default 3)
  --seconds S        length of each measured run (default 5)
  --warmup S         warm-up per build before the rounds (default 8)
  --node-options=O   NODE_OPTIONS for the builds, once per build in their order (default: the
                     Dockerfile's; write it with "=", as the value starts with a dash; an empty
                     value runs V8's defaults); the same build may be given twice to compare
                     V8 flags (only those Node accepts in NODE_OPTIONS):
                       node bench/compare.ts dist dist --node-options="--max-semi-space-size=8" \
                         --node-options="--max-semi-space-size=16"
  -h, --help`;

function parseOptions() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      telemetry: { type: 'string', default: 'default' },
      rounds: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '8' },
      'node-options': { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const telemetry = parseTelemetry(values.telemetry);
  const count = (name: string, value: string) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number < 1)
      throw new Error(`--${name} ${value}: use a whole number of at least 1`);
    return number;
  };
  if (positionals.length < 2) throw new Error(`give at least two builds to compare\n\n${USAGE}`);
  const builds = positionals.map((path) => resolve(path));
  for (const build of builds) {
    if (!existsSync(`${build}/entry/main.js`)) {
      throw new Error(`${build}/entry/main.js is missing: give a build directory like dist/`);
    }
  }
  const nodeOptions = values['node-options'];
  if (nodeOptions && nodeOptions.length !== builds.length) {
    throw new Error(
      `${nodeOptions.length} --node-options for ${builds.length} builds: give one per build, in their order`,
    );
  }
  return {
    telemetry,
    builds,
    nodeOptions,
    rounds: count('rounds', values.rounds),
    seconds: count('seconds', values.seconds),
    warmupSeconds: count('warmup', values.warmup),
  };
}

async function main(): Promise<void> {
  const options = parseOptions();
  stopChildrenOnExit();
  const workDir = `${REPO}.bench/compare`;
  rmSync(workDir, { recursive: true, force: true });
  mkdirSync(workDir, { recursive: true });
  const { wrkScript } = writeLoadFiles(`${REPO}.bench`);
  const sink = await startSpanSink('counter');
  const shippedNodeOptions = dockerfileNodeOptions(`${REPO}Dockerfile`);
  // Copies, so that a rebuild started elsewhere cannot change a build mid-run.
  const configs: PairConfig[] = options.builds.map((build, index) => {
    const copy = `${workDir}/${index + 1}`;
    cpSync(build, copy, { recursive: true });
    const id = `#${index + 1}`;
    const product = { entry: `${copy}/entry/main.js`, sink, shippedNodeOptions };
    const nodeOptions = options.nodeOptions?.[index];
    return productPair(product, {
      id,
      label:
        nodeOptions === undefined
          ? build
          : `${build} (${nodeOptions ? `NODE_OPTIONS ${nodeOptions}` : "V8's defaults"})`,
      telemetry: options.telemetry,
      ...(nodeOptions === undefined ? {} : { nodeOptions: nodeOptions || undefined }),
    });
  });
  try {
    const { runs } = await runEndToEnd(
      configs,
      {
        rounds: options.rounds,
        warmupSeconds: options.warmupSeconds,
        seconds: options.seconds,
        connections: 32,
        wrkScript,
        layout: {},
      },
      (run) =>
        process.stderr.write(
          `round ${run.round + 1} ${run.config}: ${run.wrk.requestsPerSecond.toFixed(0)} req/s, ` +
            `${run.cpuMsPerRequest.total.toFixed(3)} CPU ms/req, ${run.wrk.errors} errors, ` +
            `other processes ${(100 * run.otherCpuShare).toFixed(0)}% CPU\n`,
        ),
    );
    const first = configs[0]?.id ?? '';
    const lines = [
      `Telemetry ${options.telemetry}; ${options.rounds} rounds of ${options.seconds} s, medians.`,
      '',
      '| build | req/s | CPU ms/req api | backend | total | errors | throughput / #1 (range) |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    ];
    for (const config of configs) {
      const mine = runs.filter((run) => run.config === config.id);
      const ratio = pairedRatio(runs, '', '', config.id, first, (run) => run.wrk.requestsPerSecond);
      const cell = (metric: (run: (typeof mine)[number]) => number, digits: number) =>
        median(mine.map(metric)).toFixed(digits);
      lines.push(
        `| ${config.id} ${config.label} | ${cell((run) => run.wrk.requestsPerSecond, 0)} ` +
          `| ${cell((run) => run.cpuMsPerRequest.api, 3)} ` +
          `| ${cell((run) => run.cpuMsPerRequest.backend, 3)} ` +
          `| ${cell((run) => run.cpuMsPerRequest.total, 3)} ` +
          `| ${mine.reduce((total, run) => total + run.wrk.errors, 0)} ` +
          `| ${ratio.median.toFixed(2)} (${ratio.min.toFixed(2)}-${ratio.max.toFixed(2)}) |`,
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await stopAllChildren();
    await sink.close();
  }
}

main().catch(async (error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  await stopAllChildren();
  process.exit(1);
});
