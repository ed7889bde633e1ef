// `npm run soak`: steady load through both roles from the production build, every request
// traced (100 % sampled) and exported to a local OTLP receiver. Fails unless every request
// succeeded, every trace arrived complete with the right parents, both roles logged nothing
// above INFO, drained cleanly on SIGTERM, and memory stayed flat after the warm-up.
// Method and recorded figures: docs/reliability.md.
import { cpus, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { startLoad } from './soak/load.ts';
import { rssFlatness, sampleRss } from './soak/memory.ts';
import { instanceNodeOptions } from './soak/node-options.ts';
import { parseSoakOptions } from './soak/options.ts';
import { startSoakRole } from './soak/roles.ts';
import { checkTraces, indexTraces } from './soak/trace-check.ts';

let options: ReturnType<typeof parseSoakOptions>;
try {
  options = parseSoakOptions(process.argv.slice(2));
} catch (error) {
  console.error((error as Error).message);
  process.exit(64);
}
const print = (line = '') => process.stdout.write(`${line}\n`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(0)} s`;

const receiver = await startOtlpReceiver({ retain: false });
const traces = indexTraces(receiver);
const telemetry = {
  OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  OTEL_TRACES_SAMPLER: 'parentbased_always_on',
  OTEL_METRIC_EXPORT_INTERVAL: '10000',
  TELEMETRY_EXPORT_MODE: options.exportMode,
  NODE_OPTIONS: instanceNodeOptions(options.memoryMiB),
};
const backend = await startSoakRole('backend', { ...telemetry, PORT: '0' });
const api = await startSoakRole('api', { ...telemetry, PORT: '0', BACKEND_URL: backend.url });

const warmUpMs = options.durationMs * options.warmUpShare;
print(
  `soak: ${seconds(options.durationMs)} (warm-up ${seconds(warmUpMs)}), ${options.concurrency} keep-alive clients, ` +
    `export mode ${options.exportMode}, NODE_OPTIONS "${telemetry.NODE_OPTIONS}", ` +
    `${cpus().length} CPUs, load average ${loadavg()[0]?.toFixed(2)}`,
);
const rss = { api: sampleRss(api.pid, 1_000), backend: sampleRss(backend.pid, 1_000) };
const load = startLoad(api.url, options.concurrency);
const heap = { api: [] as number[], backend: [] as number[] };

const started = performance.now();
let reported = { at: 0, done: 0 };
const progress = () => {
  const at = performance.now() - started;
  const done = load.sent.length;
  const rate = (done - reported.done) / ((at - reported.at) / 1000);
  print(
    `  ${seconds(at).padStart(5)}  ${String(done).padStart(7)} requests  ${rate.toFixed(0).padStart(5)}/s  ` +
      `RSS api ${rss.api.samples.at(-1)?.rssMiB.toFixed(0)} MiB, backend ${rss.backend.samples.at(-1)?.rssMiB.toFixed(0)} MiB`,
  );
  reported = { at, done };
};
await sleep(warmUpMs);
progress();
heap.api.push(await api.liveHeapMiB());
heap.backend.push(await backend.liveHeapMiB());
for (;;) {
  const left = options.durationMs - (performance.now() - started);
  if (left <= 0) break;
  await sleep(Math.min(10_000, left));
  progress();
}
const endMs = performance.now() - started;
heap.api.push(await api.liveHeapMiB());
heap.backend.push(await backend.liveHeapMiB());
const sent = await load.stop();
const rssSamples = { api: rss.api.stop(), backend: rss.backend.stop() };

// SIGTERM both (api first, as Cloud Run would stop the caller too): each flushes its spans.
const stopped = { api: await api.stop(), backend: await backend.stop() };
// The receiver may still be decoding the last export requests.
await sleep(500);
traces.close();
await receiver.close();

const statuses: Record<string, number> = {};
for (const request of sent) {
  const key = request.status === undefined ? `error ${request.error}` : String(request.status);
  statuses[key] = (statuses[key] ?? 0) + 1;
}
const latencies = sent.map((request) => request.latencyMs).sort((a, b) => a - b);
const quantile = (q: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
const check = checkTraces(sent, traces);
const flatness = {
  api: rssFlatness(rssSamples.api, warmUpMs, endMs),
  backend: rssFlatness(rssSamples.backend, warmUpMs, endMs),
};
const HEAP_GROWTH_ALLOWED_MIB = 8;

const failures: string[] = [];
const ok = statuses['200'] ?? 0;
if (ok !== sent.length) failures.push(`unexpected answers: ${JSON.stringify(statuses)}`);
if (check.missing.length > 0) {
  failures.push(
    `${check.missing.length} traces incomplete or missing, e.g. ${check.missing.slice(0, 3).join('; ')}`,
  );
}
if (check.malformed.length > 0)
  failures.push(`traces with wrong shape: ${check.malformed.join('; ')}`);
if (check.strangers > 0) failures.push(`${check.strangers} spans of traces nobody sent`);
for (const role of [api, backend] as const) {
  const above = Object.entries(role.severities).filter(([severity]) => severity !== 'INFO');
  if (above.length > 0) {
    failures.push(
      `${role.name} logged ${JSON.stringify(Object.fromEntries(above))}:\n    ${role.notable.join('\n    ')}`,
    );
  }
  if (role.stderr()) failures.push(`${role.name} wrote to stderr: ${role.stderr().slice(0, 500)}`);
  const stop = stopped[role.name];
  if (stop.code !== 0 || stop.ms > 10_000) {
    failures.push(
      `${role.name} stopped with exit code ${stop.code} after ${stop.ms.toFixed(0)} ms`,
    );
  }
  const flat = flatness[role.name];
  if (!flat.flat) {
    failures.push(
      `${role.name} RSS grew ${flat.growthMiB.toFixed(0)} MiB after the warm-up (allowed ${flat.allowedMiB.toFixed(0)})`,
    );
  }
  const [heapStart = 0, heapEnd = 0] = heap[role.name];
  if (heapEnd - heapStart > HEAP_GROWTH_ALLOWED_MIB) {
    failures.push(
      `${role.name} live heap grew ${(heapEnd - heapStart).toFixed(1)} MiB after the warm-up`,
    );
  }
}

print();
print(
  `requests      ${sent.length} in ${seconds(endMs)} (${(sent.length / (endMs / 1000)).toFixed(0)}/s), answers ${JSON.stringify(statuses)}`,
);
print(
  `latency       p50 ${quantile(0.5).toFixed(1)} ms, p90 ${quantile(0.9).toFixed(1)} ms, p99 ${quantile(0.99).toFixed(1)} ms, max ${quantile(1).toFixed(1)} ms`,
);
print(
  `traces        ${check.complete} of ${check.checked} complete (3 spans, right parents); ${traces.spans()} spans received; ` +
    `${check.missing.length} incomplete, ${check.malformed.length} malformed`,
);
for (const role of [api, backend] as const) {
  const flat = flatness[role.name];
  const [heapStart = 0, heapEnd = 0] = heap[role.name];
  print(
    `${role.name.padEnd(13)} RSS after warm-up ${flat.afterWarmUpMiB.toFixed(0)} MiB, end ${flat.endMiB.toFixed(0)} MiB ` +
      `(growth ${flat.growthMiB.toFixed(0)}, allowed ${flat.allowedMiB.toFixed(0)}), peak ${flat.peakMiB.toFixed(0)} MiB; ` +
      `live heap ${heapStart.toFixed(1)} -> ${heapEnd.toFixed(1)} MiB (allowed +${HEAP_GROWTH_ALLOWED_MIB}); ` +
      `SIGTERM to exit ${stopped[role.name].ms.toFixed(0)} ms, code ${stopped[role.name].code}`,
  );
}
print();
if (failures.length > 0) {
  print(`FAILED\n  - ${failures.join('\n  - ')}`);
  process.exit(1);
}
print('PASSED');
