import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stopAllChildren, stopChild, stopChildrenOnExit } from './lib/children.ts';
import { loadHeaders, parseTelemetry, productEnv } from './lib/configurations.ts';
import { runWrk, writeLoadFiles } from './lib/load-generators.ts';
import { dockerfileNodeOptions } from './lib/machine.ts';
import { REPO, snapshotProductBuild, startServer } from './lib/servers.ts';
import { startSpanSink } from './lib/span-sinks.ts';
import { type ProfileSummary, summarizeCpuProfile } from './lib/summarize-cpu-profile.ts';

const USAGE = `Usage: npm run build && node bench/profile.ts [options]

  --telemetry MODE   off, default (sampled, not exported), export (100% to a local sink; the
                     default) or cloud-run (exported, default sampler, each request carrying
                     the unsampled traceparent of Cloud Run's front end)
  --seconds N        measured load, after 3 s of warm-up (default 10)
  --top N            functions to list (default 25)

Runs both roles from dist/ under \`node --cpu-prof\`, drives POST /greet with wrk (32 connections),
and prints the top self-time functions and packages of each role, warm-up excluded (frames are
mapped back to their original files through the bundle's source maps). The profiles are kept
in .bench/profiles/<telemetry>/ (open them in Chrome DevTools or VS Code).`;

const WARMUP_SECONDS = 3;

const fixed = (value: number, digits = 1) => value.toFixed(digits);

function render(role: string, summary: ProfileSummary): string {
  const lines = [
    `### ${role}: ${fixed(summary.totalMs / 1000)} s profiled, ${fixed(summary.idleShare * 100)}% idle; shares are of busy time`,
    '',
    '| self % | self ms | package |',
    '| ---: | ---: | --- |',
    ...summary.packages.map((p) => `| ${fixed(p.share * 100)} | ${fixed(p.ms, 0)} | ${p.name} |`),
    '',
    '| self % | self ms | function | where |',
    '| ---: | ---: | --- | --- |',
    ...summary.functions.map(
      (f) => `| ${fixed(f.share * 100)} | ${fixed(f.ms, 0)} | \`${f.name}\` | ${f.where} |`,
    ),
    '',
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      telemetry: { type: 'string', default: 'export' },
      seconds: { type: 'string', default: '10' },
      top: { type: 'string', default: '25' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const telemetry = parseTelemetry(values.telemetry);
  stopChildrenOnExit();
  const workDir = `${REPO}.bench`;
  const profileDir = `${workDir}/profiles/${telemetry}`;
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
  const { wrkScript } = writeLoadFiles(workDir);
  const sink = await startSpanSink('counter');
  const script = snapshotProductBuild(workDir);
  const shipped = dockerfileNodeOptions(`${REPO}Dockerfile`);
  const env = productEnv(
    { entry: script, sink, shippedNodeOptions: shipped },
    telemetry,
    'profile',
  );
  const nodeOptions = (role: string) =>
    `${shipped ?? ''} --cpu-prof --cpu-prof-dir=${profileDir}/${role}`.trim();
  try {
    const spawned = performance.now();
    const backend = await startServer({
      name: 'backend',
      role: 'backend',
      script,
      env,
      nodeOptions: nodeOptions('backend'),
    });
    const api = await startServer({
      name: 'api',
      role: 'api',
      script,
      env,
      nodeOptions: nodeOptions('api'),
      backendUrl: backend.url,
    });
    const load = {
      url: `${api.url}/greet`,
      connections: 32,
      script: wrkScript,
      headers: loadHeaders(telemetry),
    };
    await runWrk({ ...load, seconds: WARMUP_SECONDS });
    const skipMs = performance.now() - spawned;
    const measured = await runWrk({ ...load, seconds: Number(values.seconds) });
    process.stderr.write(
      `${measured.requestsPerSecond.toFixed(0)} req/s, ${measured.errors} errors\n`,
    );
    await Promise.all([stopChild(api.child), stopChild(backend.child)]);
    const out = [
      `## CPU profile under load: POST /greet, 32 connections, telemetry ${telemetry}, ${values.seconds} s ` +
        `(${measured.requestsPerSecond.toFixed(0)} req/s under the profiler)`,
      '',
    ];
    const summaries: Record<string, ProfileSummary> = {};
    for (const role of ['api', 'backend']) {
      const file = readdirSync(`${profileDir}/${role}`).find((name) =>
        name.endsWith('.cpuprofile'),
      );
      if (!file) throw new Error(`no .cpuprofile written in ${profileDir}/${role}`);
      const summary = summarizeCpuProfile(`${profileDir}/${role}/${file}`, {
        top: Number(values.top),
        skipMs,
      });
      summaries[role] = summary;
      out.push(render(`${role} role`, summary));
    }
    writeFileSync(`${profileDir}/summary.json`, `${JSON.stringify(summaries, null, 2)}\n`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await stopAllChildren();
    await sink.close();
  }
}

main().catch(async (error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  await stopAllChildren();
  process.exit(1);
});
