import { type ChildProcess, spawn } from 'node:child_process';

/*
 * Every process the bench starts goes through here, so that all of them are stopped on success,
 * on failure and on Ctrl-C: SIGTERM, then SIGKILL after a grace period; SIGKILL on exit for any
 * that remain.
 */

export type Child = {
  readonly name: string;
  readonly pid: number;
  readonly process: ChildProcess;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  readonly hasExited: () => boolean;
  /** The last lines written to stderr (and stdout when piped), for error messages. */
  readonly tail: () => string;
  /** Resolves with the first stdout line containing `text`; rejects if the process exits first. */
  readonly waitForLine: (text: string, timeoutMs: number) => Promise<string>;
};

export type StartOptions = {
  name: string;
  command: string;
  args: readonly string[];
  env: Record<string, string>;
  /** CPU list for `taskset -c` (for example "0" or "0,1"); unpinned when undefined. */
  cpus?: string | undefined;
  /** 'ignore' sends stdout to /dev/null (request logs under load); 'pipe' keeps it readable. */
  stdout: 'ignore' | 'pipe';
  cwd?: string;
};

const TAIL_LINES = 30;
const live = new Set<Child>();

export function startChild(options: StartOptions): Child {
  const [command, args] = options.cpus
    ? ['taskset', ['-c', options.cpus, options.command, ...options.args]]
    : [options.command, [...options.args]];
  const child = spawn(command, args, {
    env: options.env,
    stdio: ['ignore', options.stdout, 'pipe'],
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  if (child.pid === undefined)
    throw new Error(`could not start ${options.name}: ${command} not found?`);
  const lines: string[] = [];
  const lineListeners = new Set<(line: string) => void>();
  const collect = (stream: NodeJS.ReadableStream | null, isStdout: boolean) => {
    if (!stream) return;
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        lines.push(line);
        if (lines.length > TAIL_LINES) lines.shift();
        if (isStdout) for (const listener of lineListeners) listener(line);
      }
    });
  };
  collect(child.stdout, true);
  collect(child.stderr, false);

  let exitedYet = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedYet = true;
      resolve(code ?? signal ?? 'unknown');
    });
    child.once('error', (error) => {
      exitedYet = true;
      lines.push(String(error));
      resolve('spawn error');
    });
  });
  const handle: Child = {
    name: options.name,
    pid: child.pid,
    process: child,
    exited,
    hasExited: () => exitedYet,
    tail: () => lines.join('\n'),
    waitForLine: (text, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(
              `${options.name} wrote no line containing "${text}" within ${timeoutMs} ms:\n${handle.tail()}`,
            ),
          );
        }, timeoutMs);
        const listener = (line: string) => {
          if (!line.includes(text)) return;
          done();
          resolve(line);
        };
        const done = () => {
          clearTimeout(timer);
          lineListeners.delete(listener);
        };
        lineListeners.add(listener);
        void exited.then((code) => {
          done();
          reject(
            new Error(
              `${options.name} exited (${code}) before writing "${text}":\n${handle.tail()}`,
            ),
          );
        });
      }),
  };
  live.add(handle);
  void exited.then(() => live.delete(handle));
  return handle;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
export async function stopChild(child: Child, graceMs = 5_000): Promise<number | string> {
  if (!child.hasExited()) {
    child.process.kill('SIGTERM');
    const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs);
    try {
      return await child.exited;
    } finally {
      clearTimeout(timer);
    }
  }
  return child.exited;
}

/** SIGKILL at once, for processes whose shutdown is not under test. */
export function killChild(child: Child): Promise<number | string> {
  if (!child.hasExited()) child.process.kill('SIGKILL');
  return child.exited;
}

export async function stopAllChildren(graceMs = 3_000): Promise<void> {
  await Promise.all([...live].map((child) => stopChild(child, graceMs)));
}

/** Stops every child on Ctrl-C, SIGTERM, an uncaught error and exit. Call once. */
export function stopChildrenOnExit(): void {
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: stopping ${live.size} processes`);
    void stopAllChildren().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  process.on('exit', () => {
    for (const child of live) child.process.kill('SIGKILL');
  });
}
