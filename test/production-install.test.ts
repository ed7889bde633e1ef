import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LocalStack, startLocalStack } from '../tools/local-stack/index.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { freePort } from './helpers/free-port.js';
import { postGreetTls } from './helpers/http.js';
import { baseEnv, eventually, type RoleProcess, startRole } from './helpers/roles.js';
import { newTraceParent, waitForGreetTrace } from './helpers/traces.js';

const run = promisify(execFile);

type LockedPackage = { version?: string };
type Lock = { packages: Record<string, LockedPackage> };

/** Lock locations (`node_modules/a`, `node_modules/a/node_modules/b`) of every package in `root`. */
async function installedLocations(root: string, prefix = 'node_modules'): Promise<string[]> {
  const locations: string[] = [];
  for (const entry of await readdir(join(root, prefix), { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name.startsWith('.')) continue;
    const names = entry.name.startsWith('@')
      ? (await readdir(join(root, prefix, entry.name))).map((name) => `${entry.name}/${name}`)
      : [entry.name];
    for (const name of names) {
      const location = `${prefix}/${name}`;
      locations.push(location);
      if (existsSync(join(root, location, 'node_modules'))) {
        locations.push(...(await installedLocations(root, `${location}/node_modules`)));
      }
    }
  }
  return locations;
}

async function versionAt(root: string, location: string): Promise<string> {
  const manifest = JSON.parse(await readFile(join(root, location, 'package.json'), 'utf8'));
  return (manifest as { version: string }).version;
}

/*
 * No Docker engine runs here, so this does what the Dockerfile does: production dependencies
 * installed from the lock in a stage of their own, scripts/runtime-deps.mjs keeping what the
 * bundle loads from node_modules; then that tree beside the build, the compile cache filled by
 * starting both roles once, and both roles from `node dist/entry/main.js` with that cache.
 */
describe('the production image, assembled the way the Dockerfile does it', () => {
  let root: string;
  let app: string;
  let lock: Lock;
  let runtimeDeps: { stdout: string };
  let compileCache: string;
  let warmed: { stdout: string };
  let backend: RoleProcess | undefined;
  let api: RoleProcess | undefined;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'image-'));
    lock = JSON.parse(await readFile('package-lock.json', 'utf8')) as Lock;

    // The runtime-deps stage.
    const deps = join(root, 'deps');
    for (const file of ['package.json', 'package-lock.json', '.npmrc'])
      await cp(file, join(deps, file));
    await run('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], {
      cwd: deps,
      timeout: 240_000,
    });
    for (const file of ['bundle-externals.mjs', 'runtime-deps.mjs'])
      await cp(join('scripts', file), join(deps, 'scripts', file));
    runtimeDeps = await run(
      process.execPath,
      ['scripts/runtime-deps.mjs', '.', join(root, 'runtime')],
      { cwd: deps },
    );

    // The runtime stage.
    app = join(root, 'app');
    await cp('package.json', join(app, 'package.json'));
    await cp(join(root, 'runtime/node_modules'), join(app, 'node_modules'), { recursive: true });
    await cp('dist', join(app, 'dist'), { recursive: true });
    await cp('scripts/warm-compile-cache.mjs', join(app, 'scripts/warm-compile-cache.mjs'));
    compileCache = join(app, '.compile-cache');
    warmed = await run(process.execPath, ['scripts/warm-compile-cache.mjs'], {
      cwd: app,
      env: { ...process.env, NODE_ENV: 'production', NODE_COMPILE_CACHE: compileCache },
      timeout: 60_000,
    });
  }, 300_000);

  afterAll(async () => {
    await Promise.all([api?.stop(), backend?.stop()]);
    await rm(root, { recursive: true, force: true });
  });

  it('ships only the packages the bundle keeps external and their dependencies, as locked', async () => {
    expect(runtimeDeps.stdout).toMatch(
      /^runtime-deps: \d+ packages for pino-pretty, @fastify\/swagger-ui in /,
    );
    const shipped = await installedLocations(app);
    for (const external of ['pino-pretty', '@fastify/swagger-ui']) {
      expect(shipped).toContain(`node_modules/${external}`);
    }
    // Their dependencies, found as Node finds them: pino-pretty's own sonic-boom, not pino's.
    expect(shipped).toContain('node_modules/@fastify/static');
    expect(shipped).toContain('node_modules/pino-pretty/node_modules/sonic-boom');
    // Bundled in dist/, so not shipped.
    for (const bundled of [
      'fastify',
      'zod',
      'pino',
      'sonic-boom',
      'google-auth-library',
      '@connectrpc/connect',
      '@bufbuild/protobuf',
      '@fastify/swagger',
    ]) {
      expect(shipped).not.toContain(`node_modules/${bundled}`);
    }
    expect(shipped.filter((location) => location.includes('@opentelemetry/'))).toEqual([]);
    // Every package is where and at the version package-lock.json says.
    for (const location of shipped) {
      expect(await versionAt(app, location), location).toBe(lock.packages[location]?.version);
    }
  });

  it('refuses to assemble the tree when an external is not in package-lock.json', async () => {
    const bare = join(root, 'bare');
    await mkdir(bare);
    await writeFile(
      join(bare, 'package-lock.json'),
      JSON.stringify({ lockfileVersion: 3, packages: { '': {} } }),
    );
    await expect(
      run(process.execPath, ['scripts/runtime-deps.mjs', bare, join(bare, 'out')]),
    ).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('pino-pretty is kept out of the bundle'),
    });
    expect(existsSync(join(bare, 'out'))).toBe(false);
  });

  it('starts both roles with node dist/entry/main.js, compiled from the cache, and serves a greeting', async () => {
    expect(warmed.stdout).toMatch(/compile cache in .*: \d+ entries/);
    const main = join(app, 'dist/entry/main.js');
    const env = { NODE_COMPILE_CACHE: compileCache, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' };
    backend = await startRole('backend', { main, cwd: app, env });
    api = await startRole('api', { main, cwd: app, env: { ...env, BACKEND_URL: backend.url } });
    for (const [role, started] of [
      ['backend', backend],
      ['api', api],
    ] as const) {
      const accepted = started.stderr().match(/V8 code cache for ESM \S+ was accepted/g) ?? [];
      expect(accepted.join('\n'), role).toContain('dist/entry/main.js');
      expect(accepted.join('\n'), role).toContain(`dist/start-${role}-`);
    }
    const response = await fetch(`${api.url}/greet`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"name":"Container"}',
    });
    expect(await response.json()).toEqual({ reply: 'Hello Container!!' });
  });

  it.each([
    ['a fork without /greet', "path: '/greet'", "path: '/orders'", 'POST', '/orders'],
    ['the last request failing', "path: '/docs/'", "path: '/no-docs/'", 'GET', '/no-docs/'],
  ])(
    'fails the image build, naming WARM_REQUESTS, when a warm-up request is not served: %s',
    async (_, request, replacement, method, path) => {
      const script = await readFile('scripts/warm-compile-cache.mjs', 'utf8');
      const forked = script.replace(request, replacement);
      expect(forked).not.toBe(script);
      const name = `warm-${path.replaceAll('/', '')}`;
      await writeFile(join(app, `scripts/${name}.mjs`), forked);
      const failed = await run(process.execPath, [`scripts/${name}.mjs`], {
        cwd: app,
        env: { ...process.env, NODE_ENV: 'production', NODE_COMPILE_CACHE: join(root, name) },
        timeout: 60_000,
      }).then(
        () => undefined,
        (error: { code?: number; stderr?: string }) => error,
      );
      expect(failed?.code).toBe(1);
      expect(failed?.stderr).toContain(`warm-compile-cache: ${method} http://127.0.0.1:`);
      expect(failed?.stderr).toMatch(new RegExp(`:\\d+${path} answered 404: `));
      expect(failed?.stderr).toContain(
        'Each of WARM_REQUESTS (at the top of scripts/warm-compile-cache.mjs) must answer 200',
      );
    },
  );

  it('serves the Swagger UI page and its assets from the shipped @fastify/swagger-ui', async () => {
    expect(api, 'the api started by the test before').toBeDefined();
    const docs = `${api?.url}/docs`;
    const page = await fetch(`${docs}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('swagger-ui');
    const linked = [...html.matchAll(/(?:href|src)="\.\/(static\/[^"]+)"/g)].map(
      ([, path]) => path,
    );
    const assets = [
      ['static/swagger-ui.css', /^text\/css/],
      ['static/swagger-ui-bundle.js', /^(application|text)\/javascript/],
    ] as const;
    for (const [path, contentType] of assets) {
      expect(linked).toContain(path);
      const asset = await fetch(`${docs}/${path}`);
      expect(asset.status, path).toBe(200);
      expect(asset.headers.get('content-type'), path).toMatch(contentType);
      const shipped = await readFile(join(app, 'node_modules/@fastify/swagger-ui', path));
      expect(Buffer.from(await asset.arrayBuffer()).equals(shipped), path).toBe(true);
    }
  });

  it('loads pino-pretty, nested sonic-boom and all, for pretty logs (as on a terminal)', async () => {
    const child = spawn(process.execPath, ['dist/entry/main.js'], {
      cwd: app,
      env: {
        ...baseEnv(),
        SERVICE_ROLE: 'backend',
        PORT: String(await freePort()),
        HOST: '127.0.0.1',
        LOG_FORMAT: 'pretty',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = once(child, 'exit');
    let output = '';
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
      });
    }
    try {
      await eventually(() => expect(output).toMatch(/INFO.*: .*backend role listening on/));
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    expect(child.exitCode, output).toBe(0);
  });

  it('exports telemetry and takes the Cloud Run path (metadata server, ID tokens) from that tree', async () => {
    const googleAuthChunks: string[] = [];
    for (const file of await readdir(join(app, 'dist'))) {
      if (!file.endsWith('.js')) continue;
      const code = await readFile(join(app, 'dist', file), 'utf8');
      if (code.includes('node_modules/google-auth-library/')) googleAuthChunks.push(file);
    }
    expect(googleAuthChunks).toHaveLength(1);
    const receiver: OtlpReceiver = await startOtlpReceiver();
    const roles: RoleProcess[] = [];
    let stack: LocalStack | undefined;
    try {
      stack = await startLocalStack({
        cloud: true,
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_BSP_SCHEDULE_DELAY: '100',
          NODE_COMPILE_CACHE: compileCache,
          NODE_DEBUG_NATIVE: 'COMPILE_CACHE',
        },
        // The api as Cloud Run starts it, its exporters in the other protocol than the backend's.
        apiEnv: {
          K_SERVICE: 'greeter-api',
          K_REVISION: 'greeter-api-00001-abc',
          OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        },
        async startRole(role, env) {
          const started = await startRole(role, {
            main: join(app, 'dist/entry/main.js'),
            cwd: app,
            env,
          });
          roles.push(started);
          return started;
        },
      });
      const ca = await readFile(stack.cloud?.caFile ?? '', 'utf8');
      const parent = newTraceParent();
      expect(
        await postGreetTls(stack.apiUrl, ca, { name: 'Cloud' }, { traceparent: parent.header }),
      ).toEqual({ status: 200, body: { reply: 'Hello Cloud!!' } });
      const { server, backend: backendSpan } = await waitForGreetTrace(receiver, parent.traceId);
      expect(server.resource).toMatchObject({
        'cloud.platform': 'gcp_cloud_run',
        'faas.name': 'greeter-api',
      });
      expect(backendSpan.attributes['caller.service_account']).toBe(stack.cloud?.apiServiceAccount);
      // Both roles loaded google-auth-library: the api to mint the ID token, the backend to
      // check it.
      for (const role of roles) expect(role.stderr()).toContain(String(googleAuthChunks[0]));
      await stack.stop();
      stack = undefined;
      // Metrics are flushed as the roles stop.
      const services = new Set(receiver.metrics().map((metric) => metric.resource['service.name']));
      expect(services).toEqual(new Set(['greeter-api', 'greeter-backend']));
    } finally {
      await stack?.stop();
      await receiver.close();
    }
  });

  it('is built by a multi-stage Dockerfile that runs node directly as a non-root user', async () => {
    const dockerfile = await readFile('Dockerfile', 'utf8');
    expect(dockerfile.match(/^FROM node:24-slim AS \w[\w-]*$/gm)).toEqual([
      'FROM node:24-slim AS build',
      'FROM node:24-slim AS runtime-deps',
      'FROM node:24-slim AS runtime',
    ]);
    expect(dockerfile).toContain('RUN npm ci --omit=dev\n');
    expect(dockerfile).toContain('RUN node scripts/runtime-deps.mjs . /runtime\n');
    const runtime = dockerfile.slice(dockerfile.indexOf('FROM node:24-slim AS runtime\n'));
    expect(runtime).not.toContain('npm ci');
    expect(runtime).toContain('COPY --from=runtime-deps /runtime/node_modules ./node_modules\n');
    expect(runtime).toMatch(/^USER node\nRUN node scripts\/warm-compile-cache\.mjs$/m);
    expect(runtime).toMatch(/NODE_COMPILE_CACHE=\/app\/\.compile-cache/);
    expect(runtime).toContain('CMD ["node", "dist/entry/main.js"]');
  });
});
