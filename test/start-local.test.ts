import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './helpers/free-port.js';
import { baseEnv } from './helpers/roles.js';

const REPO = resolve(import.meta.dirname, '..');

/*
 * `npm run start:cloud` (scripts/start-local.ts --cloud, from the production build): the
 * commands it prints under "Try:" work when pasted into a shell.
 */
const execFileAsync = promisify(execFile);

describe('npm run start:cloud prints commands that work', () => {
  let launcher: ChildProcess;
  let output = '';
  let tryLines: string[] = [];

  beforeAll(async () => {
    launcher = spawn(process.execPath, ['scripts/start-local.ts', '--cloud'], {
      cwd: REPO,
      env: { ...baseEnv(), OTLP_PORT: String(await freePort()) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so that stopping it stops the roles it started, even mid-start.
      detached: true,
    });
    launcher.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    launcher.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const deadline = Date.now() + 20_000;
    while (!output.includes('Ctrl-C stops everything.')) {
      if (Date.now() > deadline || launcher.exitCode !== null) {
        throw new Error(`start:cloud did not come up:\n${output}`);
      }
      await delay(50);
    }
    const banner = output.slice(output.indexOf('Try:'), output.indexOf('Ctrl-C'));
    tryLines = banner
      .split('\n')
      .slice(1)
      .map((line) => line.trim())
      .filter((line) => line !== '');
  }, 30_000);

  afterAll(async () => {
    if (launcher?.pid !== undefined && launcher.exitCode === null) {
      const exited = once(launcher, 'exit');
      process.kill(-launcher.pid, 'SIGTERM');
      await exited;
    }
  });

  const run = async (line: string) => {
    const { stdout } = await execFileAsync('bash', ['-c', line], { cwd: REPO, timeout: 30_000 });
    return stdout;
  };

  it('writes no colour codes into a pipe', () => {
    expect(output).toContain('[api]');
    expect(output).not.toContain('\u001b[');
  });

  it('greets through the front end, and prints the trace of a sampled request', async () => {
    const sampled = tryLines.find((line) => line.includes('traceparent:'));
    const traceId = /traceparent: 00-([0-9a-f]{32})-/.exec(sampled ?? '')?.[1];
    expect(traceId, output).toBeDefined();
    expect(JSON.parse(await run(sampled ?? ''))).toEqual({ reply: 'Hello David!!' });
    await expect.poll(() => output.includes(`trace ${traceId}`), { timeout: 10_000 }).toBe(true);
  });

  it('calls the token-checked backend with buf curl and a fresh ID token', async () => {
    const grpc = tryLines.find((line) => line.startsWith('npx buf curl'));
    expect(grpc, output).toContain('authorization: Bearer $(curl');
    expect(JSON.parse(await run(grpc ?? ''))).toEqual({ reply: 'Hello David!!' });
  }, 40_000);

  it('answers the failing example with a problem body', async () => {
    const failing = tryLines.find((line) => line.includes('"withError":true'));
    const body = JSON.parse(await run(failing ?? ''));
    expect(body).toMatchObject({ status: 500 });
  });
});

describe('npm start with a port already taken', () => {
  it('says which port to change in one line and exits 1, leaving nothing running', async () => {
    const taken = createServer();
    await new Promise<void>((ready) => taken.listen(0, '127.0.0.1', ready));
    const backendPort = String((taken.address() as AddressInfo).port);
    const apiPort = String(await freePort());
    try {
      const launcher = spawn(process.execPath, ['scripts/start-local.ts'], {
        cwd: REPO,
        env: {
          ...baseEnv(),
          PORT: apiPort,
          BACKEND_PORT: backendPort,
          OTLP_PORT: String(await freePort()),
          NO_COLOR: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      launcher.stderr?.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      launcher.stdout?.resume();
      const [code] = await once(launcher, 'exit');
      expect(code).toBe(1);
      expect(stderr.trim()).toBe(
        `start failed: backend exited with 1 before listening. Its own lines above say why; if a port is taken, set PORT (the api's, ${apiPort}) or BACKEND_PORT (${backendPort}).`,
      );
      // The api never started: its port is free.
      const probe = createServer();
      await new Promise<void>((ready) => probe.listen(Number(apiPort), '127.0.0.1', ready));
      await new Promise((closed) => probe.close(closed));
    } finally {
      await new Promise((closed) => taken.close(closed));
    }
  }, 30_000);
});
