import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
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
      env: { ...baseEnv(), OTLP_PORT: String(await freePort()), NO_COLOR: '1' },
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
