import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export type SoakRole = {
  name: 'api' | 'backend';
  pid: number;
  url: string;
  /** Log lines by severity, and the last few lines that were not INFO. */
  severities: Record<string, number>;
  notable: string[];
  stderr(): string;
  /** Live JS heap after a full GC, in MiB (asks the process, see MEASURED_MAIN). */
  liveHeapMiB(): Promise<number>;
  /** SIGTERM; resolves with the exit code and how long the drain took. */
  stop(): Promise<{ code: number | null; ms: number }>;
};

const MAIN = new URL('../../dist/entry/main.js', import.meta.url);

/*
 * The production build, started through a wrapper that adds one thing: on SIGUSR2 it runs a
 * full GC and prints the live heap, so memory can be told apart from V8 growing its heap lazily.
 */
const MEASURED_MAIN = `import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');
process.on('SIGUSR2', () => {
  gc();
  const { heapUsed, heapTotal, external, arrayBuffers, rss } = process.memoryUsage();
  const line = { message: 'live heap', bytes: heapUsed, heapTotal, external, arrayBuffers, rss };
  process.stdout.write(JSON.stringify(line) + String.fromCharCode(10));
});
await import(${JSON.stringify(MAIN.href)});
`;

/** Starts one role on a free port from dist/ and resolves once it listens. */
export async function startSoakRole(
  name: 'api' | 'backend',
  env: Record<string, string>,
): Promise<SoakRole> {
  const dir = await mkdtemp(join(tmpdir(), 'soak-'));
  const main = join(dir, 'measured-main.mjs');
  await writeFile(main, MEASURED_MAIN);
  const child = spawn(process.execPath, [main], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      SERVICE_ROLE: name,
      HOST: '127.0.0.1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const severities: Record<string, number> = {};
  const notable: string[] = [];
  const heapWaiters: ((bytes: number) => void)[] = [];
  let stderr = '';
  let listening: ((url: string) => void) | undefined;
  const ready = new Promise<string>((resolve) => {
    listening = resolve;
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    let parsed: { severity?: string; message?: string; bytes?: number };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      notable.push(line.slice(0, 300));
      return;
    }
    if (parsed.message === 'live heap') {
      heapWaiters.shift()?.(Number(parsed.bytes));
      return;
    }
    const severity = parsed.severity ?? 'UNKNOWN';
    severities[severity] = (severities[severity] ?? 0) + 1;
    if (severity !== 'INFO') notable.push(line.slice(0, 300));
    if (notable.length > 20) notable.shift();
    const match = /listening on (http:\/\/[\d.:]+)/.exec(parsed.message ?? '');
    if (match?.[1]) listening?.(match[1]);
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const url = await Promise.race([
    ready,
    exited.then((code) => {
      throw new Error(`${name} exited with ${code} before listening:\n${stderr}`);
    }),
  ]);
  return {
    name,
    pid: child.pid ?? 0,
    url,
    severities,
    notable,
    stderr: () => stderr,
    liveHeapMiB: () =>
      new Promise<number>((resolve) => {
        heapWaiters.push((bytes) => resolve(bytes / 1024 / 1024));
        child.kill('SIGUSR2');
      }),
    async stop() {
      const started = performance.now();
      if (child.exitCode === null) child.kill('SIGTERM');
      const code = await exited;
      await rm(dir, { recursive: true, force: true });
      return { code, ms: performance.now() - started };
    },
  };
}
