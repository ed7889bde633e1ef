import { cpSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { type Child, startChild } from './children.ts';
import { grpcGreetProbe, httpCall, httpOkProbe, untilFirstSuccess } from './probes.ts';

/*
 * Starting the processes under test: the product's two roles from the production build, and
 * the bench's own servers (framework-free baseline, Connect and Fastify variants), bundled with esbuild like
 * the product so that none of them pays for type stripping.
 */

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
const READY_TIMEOUT_MS = 15_000;

export type BenchServer = 'baseline-api' | 'baseline-backend' | 'connect-backend' | 'fastify-api';

const BENCH_SOURCES: Record<BenchServer, string> = {
  'baseline-api': 'bench/baseline/api.ts',
  'baseline-backend': 'bench/baseline/backend.ts',
  'connect-backend': 'bench/variants/connect-backend.ts',
  'fastify-api': 'bench/variants/fastify-api.ts',
};

export type BenchBuild = Record<BenchServer, string>;

export async function buildBenchServers(outdir: string): Promise<BenchBuild> {
  await build({
    entryPoints: Object.fromEntries(
      Object.entries(BENCH_SOURCES).map(([name, source]) => [name, `${REPO}${source}`]),
    ),
    outdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    banner: {
      js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
    },
    logLevel: 'warning',
  });
  return Object.fromEntries(
    Object.keys(BENCH_SOURCES).map((name) => [name, `${outdir}/${name}.mjs`]),
  ) as BenchBuild;
}

/**
 * Copies dist/ into the bench's folder and returns the copy's entry: a rebuild started elsewhere
 * (tests build too) cannot pull the product from under a running bench. Packages still resolve
 * from the repository's node_modules.
 */
export function snapshotProductBuild(workDir: string): string {
  if (!existsSync(`${REPO}dist/entry/main.js`)) {
    throw new Error(
      'dist/entry/main.js is missing: run `npm run build` first (npm run bench does)',
    );
  }
  rmSync(`${workDir}/dist`, { recursive: true, force: true });
  cpSync(`${REPO}dist`, `${workDir}/dist`, { recursive: true });
  return `${workDir}/dist/entry/main.js`;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address
          ? resolve(address.port)
          : reject(new Error('no port')),
      );
    });
  });
}

/** The environment every process under test starts from: nothing inherited but PATH and HOME. */
export function baseEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
}

export type Running = { child: Child; url: string; port: number };

export type ServerSpec = {
  name: string;
  role: 'api' | 'backend';
  /** The product's entry (see snapshotProductBuild) or a bench server bundle. */
  script: string;
  env: Record<string, string>;
  nodeOptions?: string | undefined;
  cpus?: string | undefined;
  /** Required for the api role. */
  backendUrl?: string | undefined;
  stdout?: 'ignore' | 'pipe';
};

/** Spawns the server on `port`, without waiting for it. */
export function spawnServer(spec: ServerSpec, port: number): Child {
  const env: Record<string, string> = {
    ...baseEnv(),
    ...spec.env,
    SERVICE_ROLE: spec.role,
    PORT: String(port),
    HOST: '127.0.0.1',
    ...(spec.backendUrl ? { BACKEND_URL: spec.backendUrl } : {}),
    ...(spec.nodeOptions ? { NODE_OPTIONS: spec.nodeOptions } : {}),
  };
  return startChild({
    name: spec.name,
    command: process.execPath,
    args: [spec.script],
    env,
    cpus: spec.cpus,
    stdout: spec.stdout ?? 'ignore',
    cwd: REPO,
  });
}

export function readinessProbe(role: 'api' | 'backend', url: string) {
  return role === 'api' ? httpOkProbe(`${url}/healthz`) : grpcGreetProbe(url);
}

/** Starts the server and resolves once it answers (an api: GET /healthz; a backend: gRPC Greet). */
export async function startServer(spec: ServerSpec): Promise<Running> {
  const port = await freePort();
  const child = spawnServer(spec, port);
  const url = `http://127.0.0.1:${port}`;
  await untilFirstSuccess(readinessProbe(spec.role, url), {
    timeoutMs: READY_TIMEOUT_MS,
    intervalMs: 20,
    failed: () =>
      child.hasExited() ? `${spec.name} exited during start:\n${child.tail()}` : undefined,
  });
  return { child, url, port };
}

/** POST /greet answers {"reply":"Hello David!!"}: the contract holds before load is applied. */
export async function checkGreet(apiUrl: string): Promise<void> {
  const reply = await httpCall(`${apiUrl}/greet`, 'POST', JSON.stringify({ name: 'David' }));
  if (reply.status !== 200 || JSON.parse(reply.body).reply !== 'Hello David!!') {
    throw new Error(`POST ${apiUrl}/greet answered ${reply.status} ${reply.body}`);
  }
}
