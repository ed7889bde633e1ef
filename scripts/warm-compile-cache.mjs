// Fills NODE_COMPILE_CACHE for the image: starts both roles from dist/, sends WARM_REQUESTS
// through them and reads the API docs, then stops them with SIGTERM, when Node writes the V8 code
// cache of every module it compiled. Instances started from the image then skip most compilation
// (docs/benchmarks.md, "Cold start"). Run it as the user the image runs as: Node keys the cache
// by user id. Fails (exit 1) if either role cannot start or serve, or if no cache was written.
// Node built-ins only: it runs in the runtime stage, beside dist/ and production dependencies.
// Usage: NODE_COMPILE_CACHE=dir [WARM_DEADLINE_MS=60000] node scripts/warm-compile-cache.mjs
//        [dist/entry/main.js]
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Requests to the api, each of which must answer 200: they load the modules a first request
 * loads (the API docs are imported on first use), so that those are in the cache too, and prove
 * the image serves. Node writes a module's code cache when it compiles the module: it holds the
 * module's top-level code, not the functions V8 compiles later, on their first call. A fork that replaces the greeting lists its own routes here: ones
 * that need nothing but the two roles (no database, no other service), and have no side effects.
 */
const WARM_REQUESTS = [
  { method: 'POST', path: '/greet', body: { name: 'cache' } },
  { method: 'GET', path: '/openapi.json' },
  { method: 'GET', path: '/docs/' },
];

const [main = 'dist/entry/main.js'] = process.argv.slice(2);
// WARM_DEADLINE_MS: more time where the build is slow, e.g. linux/amd64 emulated on an arm64 host.
const DEADLINE_MS = Number(process.env.WARM_DEADLINE_MS) || 60_000;
const REQUEST_TIMEOUT_MS = 10_000;

const cacheDir = process.env.NODE_COMPILE_CACHE;
if (!cacheDir) fail('NODE_COMPILE_CACHE is not set: set it to the directory the image ships.');

const children = [];
const watchdog = setTimeout(() => fail(`not done within ${DEADLINE_MS} ms`), DEADLINE_MS);
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => fail(`${signal} received`));

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
  await untilAnswered(`${api}/readyz`);
  for (const { method, path, body } of WARM_REQUESTS) {
    await expectOk(`${api}${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
  }
  await Promise.all(children.map(stop));
  const files = cachedFiles();
  if (files === 0) fail(`no compile cache was written under ${cacheDir} for user id ${uid()}`);
  process.stdout.write(`compile cache in ${cacheDir}: ${files} entries\n`);
} finally {
  for (const child of children) child.kill('SIGKILL');
  otlpSink.close();
  clearTimeout(watchdog);
}

function start(role, port, env) {
  const child = spawn(process.execPath, [main], {
    // With an OTLP endpoint the exporters load, as they do in production.
    env: {
      ...process.env,
      ...env,
      SERVICE_ROLE: role,
      PORT: String(port),
      HOST: '127.0.0.1',
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

async function expectOk(url, init = {}) {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const body = await response.text();
  if (response.status !== 200) {
    fail(
      `${init.method ?? 'GET'} ${url} answered ${response.status}: ${body}\n` +
        'Each of WARM_REQUESTS (at the top of scripts/warm-compile-cache.mjs) must answer 200; ' +
        'a fork without this route lists its own there.',
    );
  }
}

async function untilAnswered(url) {
  for (;;) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {}
    await sleep(20);
  }
}

/** Files in this user's cache directory: Node names it `v<version>-<arch>-<flags hash>-<uid>`. */
function cachedFiles() {
  let count = 0;
  if (!existsSync(cacheDir)) return count;
  for (const entry of readdirSync(cacheDir, { withFileTypes: true })) {
    if (entry.isDirectory() && entry.name.endsWith(`-${uid()}`)) {
      count += readdirSync(join(cacheDir, entry.name)).length;
    }
  }
  return count;
}

function uid() {
  return process.getuid?.() ?? 0;
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
