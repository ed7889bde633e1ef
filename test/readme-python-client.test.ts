import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RoleProcess, startRole } from './helpers/roles.js';

/*
 * The README's Python example, run as written (Debian's python3 with grpcio and grpc-tools)
 * against a backend on a free port: the snippet stays true as the proto or the server change.
 */
const execFileAsync = promisify(execFile);
const REPO = resolve(import.meta.dirname, '..');

async function readmePythonExample(): Promise<string> {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const after = readme.slice(readme.indexOf('From Python,'));
  const block = /```sh\n([\s\S]*?)```/.exec(after)?.[1];
  if (!block) throw new Error('README.md: no ```sh block after "From Python,"');
  return block;
}

describe("the README's Python grpcio example", () => {
  let backend: RoleProcess;
  let stubs: string;
  beforeAll(async () => {
    backend = await startRole('backend');
    stubs = await mkdtemp(join(tmpdir(), 'readme-python-'));
  });
  afterAll(async () => {
    await backend?.stop();
    if (stubs) await rm(stubs, { recursive: true, force: true });
  });

  it('greets the backend', async () => {
    const example = await readmePythonExample();
    expect(example).toContain('localhost:8081');
    const script = example
      .replaceAll('/tmp/greeter-stubs', stubs)
      .replaceAll('localhost:8081', new URL(backend.url).host);
    const { stdout } = await execFileAsync('bash', ['-euc', script], {
      cwd: REPO,
      // Debian's python3, which has grpcio and grpc-tools, whatever else is on PATH.
      env: { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` },
      timeout: 30_000,
    });
    expect(stdout.trim()).toBe('Hello David!!');
  }, 40_000);
});
