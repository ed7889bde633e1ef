import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RoleProcess, startRole } from './helpers/roles.js';

const run = promisify(execFile);

/*
 * No Docker engine runs here, so this does what the Dockerfile's runtime stage does: production
 * dependencies alone beside the build, the compile cache filled by starting both roles once, then
 * both roles from `node dist/entry/main.js` with that cache.
 */
describe('the production image, assembled the way the Dockerfile does it', () => {
  let dir: string;
  let compileCache: string;
  let warmed: { stdout: string };
  let backend: RoleProcess | undefined;
  let api: RoleProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'image-'));
    for (const file of ['package.json', 'package-lock.json', '.npmrc'])
      await cp(file, join(dir, file));
    await run('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], {
      cwd: dir,
      timeout: 240_000,
    });
    await cp('dist', join(dir, 'dist'), { recursive: true });
    await cp('scripts/warm-compile-cache.mjs', join(dir, 'scripts/warm-compile-cache.mjs'));
    compileCache = join(dir, '.compile-cache');
    warmed = await run(process.execPath, ['scripts/warm-compile-cache.mjs'], {
      cwd: dir,
      env: { ...process.env, NODE_ENV: 'production', NODE_COMPILE_CACHE: compileCache },
      timeout: 60_000,
    });
  }, 300_000);

  afterAll(async () => {
    await Promise.all([api?.stop(), backend?.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('has no development dependencies installed', async () => {
    const { stdout } = await run('npm', ['ls', '--omit=dev', '--depth=0', '--json'], { cwd: dir });
    const installed = Object.keys((JSON.parse(stdout) as { dependencies: object }).dependencies);
    expect(installed).toContain('fastify');
    for (const devOnly of ['vitest', 'typescript', 'esbuild', '@bufbuild/buf']) {
      expect(installed).not.toContain(devOnly);
    }
  });

  it('starts both roles with node dist/entry/main.js, compiled from the cache, and serves a greeting', async () => {
    expect(warmed.stdout).toMatch(/compile cache in .*: \d+ entries/);
    const main = join(dir, 'dist/entry/main.js');
    const env = { NODE_COMPILE_CACHE: compileCache, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' };
    backend = await startRole('backend', { main, cwd: dir, env });
    api = await startRole('api', { main, cwd: dir, env: { ...env, BACKEND_URL: backend.url } });
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
    expect((await fetch(`${api.url}/docs/`)).status).toBe(200);
  });

  it('is built by a multi-stage Dockerfile that runs node directly as a non-root user', async () => {
    const dockerfile = await readFile('Dockerfile', 'utf8');
    expect(dockerfile.match(/^FROM node:24-slim AS \w+/gm)).toHaveLength(2);
    expect(dockerfile).toContain('npm ci --omit=dev');
    expect(dockerfile).toMatch(/^USER node\nRUN node scripts\/warm-compile-cache\.mjs$/m);
    expect(dockerfile).toMatch(/NODE_COMPILE_CACHE=\/app\/\.compile-cache/);
    expect(dockerfile).toContain('CMD ["node", "dist/entry/main.js"]');
  });
});
