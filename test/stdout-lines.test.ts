import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setImmediate as turnEnd } from 'node:timers/promises';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { lineBatcher } from '../src/telemetry/stdout-lines.js';

const MODULE = resolve(import.meta.dirname, '../src/telemetry/stdout-lines.ts');

function fileTarget() {
  const path = join(mkdtempSync(join(tmpdir(), 'stdout-lines-')), 'out.log');
  const target = pino.destination({ dest: path, sync: true });
  let writes = 0;
  target.on('write', () => {
    writes += 1;
  });
  return { target, read: () => readFileSync(path, 'utf8'), writes: () => writes };
}

/**
 * Runs a script that writes through the process's batched stdout; returns what reached it.
 * The parent starts reading after `readAfterMs`, or closes its end at once when it is 'never'.
 */
async function runChild(script: string, readAfterMs: number | 'never' = 0) {
  const source = `import { batchedStdout } from ${JSON.stringify(MODULE)};
process.stdout.isTTY; // as the logger does: Node then makes a pipe on fd 1 non-blocking
const out = batchedStdout();
${script}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const chunks: Buffer[] = [];
  if (readAfterMs === 'never') child.stdout.destroy();
  else {
    child.stdout.pause();
    setTimeout(() => {
      child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk)).resume();
    }, readAfterMs);
  }
  const [code] = await once(child, 'close');
  return { code: code as number | null, stdout: Buffer.concat(chunks).toString('utf8'), stderr };
}

describe('log lines batched per turn of the event loop', () => {
  it('writes the lines of one turn together, in order, when the turn ends', async () => {
    const { target, read, writes } = fileTarget();
    const out = lineBatcher(target);
    out.write('one\n');
    out.write('two\n');
    out.write('three\n');
    expect(read()).toBe('');
    await turnEnd();
    expect(read()).toBe('one\ntwo\nthree\n');
    expect(writes()).toBe(1);
    out.write('four\n');
    await turnEnd();
    expect(read()).toBe('one\ntwo\nthree\nfour\n');
    expect(writes()).toBe(2);
  });

  it('does not hold more than 64 KiB: a long turn writes as it goes', async () => {
    const { target, read } = fileTarget();
    const out = lineBatcher(target);
    const line = `${'x'.repeat(1023)}\n`;
    for (let i = 0; i < 70; i++) out.write(line);
    expect(read().length).toBeGreaterThan(64 * 1024);
    await turnEnd();
    expect(read()).toBe(line.repeat(70));
  });

  it('writes what is waiting on flush, as pino.flush() asks', async () => {
    const { target, read } = fileTarget();
    const logger = pino({}, lineBatcher(target));
    logger.info('flushed now');
    await new Promise<void>((done, fail) =>
      logger.flush((error) => (error ? fail(error) : done())),
    );
    expect(JSON.parse(read()).msg).toBe('flushed now');
  });

  it('writes the waiting lines when the process exits in the same turn', async () => {
    const { code, stdout } = await runChild(
      "out.write('before exit 1\\n'); out.write('before exit 2\\n'); process.exit(3);",
    );
    expect(code).toBe(3);
    expect(stdout).toBe('before exit 1\nbefore exit 2\n');
  });

  it('writes the waiting lines when an uncaught error ends the process', async () => {
    const { code, stdout, stderr } = await runChild(
      "out.write('last words\\n'); throw new Error('boom');",
    );
    expect(code).toBe(1);
    expect(stderr).toContain('boom');
    expect(stdout).toBe('last words\n');
  });

  it('loses no line when the reader is slow and the pipe fills', async () => {
    const { code, stdout, stderr } = await runChild(
      `for (let turn = 0; turn < 20; turn++) {
        for (let i = 0; i < 1000; i++) out.write(\`turn \${turn} line \${i} \${'.'.repeat(100)}\\n\`);
        await new Promise((r) => setImmediate(r));
      }`,
      300,
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(20_000);
    expect(lines[0]).toMatch(/^turn 0 line 0 /);
    expect(lines.at(-1)).toMatch(/^turn 19 line 999 /);
  });

  it('stops writing, without failing, once nobody reads stdout any more (EPIPE)', async () => {
    const { code, stderr } = await runChild(
      `for (let turn = 0; turn < 20; turn++) {
        for (let i = 0; i < 100; i++) out.write(\`turn \${turn} line \${i}\\n\`);
        await new Promise((r) => setTimeout(r, 5));
      }
      process.stderr.write('still running\\n');`,
      'never',
    );
    expect(stderr).toBe('still running\n');
    expect(code).toBe(0);
  });
});
