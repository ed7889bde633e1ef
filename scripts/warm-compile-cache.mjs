// Fills NODE_COMPILE_CACHE for the image: starts both roles from dist/, serves one greeting
// through them, and stops them with SIGTERM, when Node writes the V8 code cache of every module
// it compiled. Instances started from the image then skip most compilation (docs/benchmarks.md,
// "Cold start"). Run it as the user the image runs as: Node keys the cache by user id.
// Node built-ins only: it runs in the runtime stage, beside dist/ and production dependencies.
// Usage: NODE_COMPILE_CACHE=dir node scripts/warm-compile-cache.mjs [dist/entry/main.js]
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const [main = 'dist/entry/main.js'] = process.argv.slice(2);
const DEADLINE_MS = 30_000;

const cacheDir = process.env.NODE_COMPILE_CACHE;
if (!cacheDir) fail('NODE_COMPILE_CACHE is not set: set it to the directory the image ships.');

const deadline = Date.now() + DEADLINE_MS;
const children = [];
// Accepts what the roles export as they stop, so their shutdown does not wait on retries.
const otlpSink = createHttpServer((request, response) => {
  request.resume().on('end', () => response.end());
});
try {
  const otlpPort = await new Promise((resolve) =>
    otlpSink.listen(0, '127.0.0.1', () => resolve(otlpSink.address().port)),
  );
  const backendPort = await freePort();
  const apiPort = await freePort();
  const otlp = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${otlpPort}` };
  start('backend', backendPort, otlp);
  start('api', apiPort, { ...otlp, BACKEND_URL: `http://127.0.0.1:${backendPort}` });
  const api = `http://127.0.0.1:${apiPort}`;
  await untilAnswered(`${api}/healthz`);
  const greeting = await fetch(`${api}/greet`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"name":"cache"}',
  });
  if (greeting.status !== 200)
    fail(`POST /greet answered ${greeting.status}: ${await greeting.text()}`);
  await Promise.all(children.map(stop));
  const entries = readdirSync(cacheDir, { recursive: true }).length;
  process.stdout.write(`compile cache in ${cacheDir}: ${entries} entries\n`);
} finally {
  for (const child of children) child.kill('SIGKILL');
  otlpSink.close();
}

function start(role, port, env) {
  const child = spawn(process.execPath, [main], {
    // With an OTLP endpoint the exporters load, as they do in production.
    env: {
      ...process.env,
      ...env,
      SERVICE_ROLE: role,
      PORT: String(port),
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  child.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  child.exited.then((code) => {
    if (!child.stopping) fail(`the ${role} role exited with ${code} during start`);
  });
  children.push(child);
}

async function stop(child) {
  child.stopping = true;
  child.kill('SIGTERM');
  const code = await child.exited;
  if (code !== 0) fail(`a role exited with ${code} after SIGTERM`);
}

async function untilAnswered(url) {
  for (;;) {
    try {
      if ((await fetch(url)).status === 200) return;
    } catch {}
    if (Date.now() > deadline) fail(`${url} did not answer within ${DEADLINE_MS} ms`);
    await sleep(20);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function fail(message) {
  console.error(`warm-compile-cache: ${message}`);
  for (const child of children) child.kill('SIGKILL');
  process.exit(1);
}
