import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';

export type Machine = {
  cpus: number;
  model: string;
  kernel: string;
  memoryGiB: number;
  node: string;
  wrk: string;
  h2load: string;
  /** 1, 5 and 15 minute load averages when the bench started: other work skews every figure. */
  loadAverage: number[];
};

function firstLine(command: string, args: string[]): string {
  try {
    const out = execFileSync(command, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return out.split('\n')[0]?.trim() ?? '';
  } catch (error) {
    // wrk -v exits 1 after printing its version.
    const out = String((error as { stdout?: string }).stdout ?? '');
    return out.split('\n')[0]?.trim() || 'not found';
  }
}

function lscpuModel(): string | undefined {
  try {
    const out = execFileSync('lscpu', [], { encoding: 'utf8' });
    return /^Model name:\s+(.+)$/m.exec(out)?.[1]?.trim();
  } catch {
    return undefined;
  }
}

export function describeMachine(): Machine {
  return {
    cpus: availableParallelism(),
    model: lscpuModel() ?? cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    wrk: firstLine('wrk', ['-v']).replace(/ Copyright.*/, ''),
    h2load: firstLine('h2load', ['--version']),
    loadAverage: loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

/** NODE_OPTIONS as the Dockerfile's ENV sets it, or undefined. */
export function dockerfileNodeOptions(dockerfile: string): string | undefined {
  if (!existsSync(dockerfile)) return undefined;
  const text = readFileSync(dockerfile, 'utf8').replace(/\\\n/g, ' ');
  return /NODE_OPTIONS="([^"]*)"/.exec(text)?.[1] ?? /NODE_OPTIONS=(\S+)/.exec(text)?.[1];
}

/** The commit the product was built from, and whether src/ had uncommitted changes. */
export function describeRevision(repo: string): string {
  try {
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
    const dirty = git('status', '--porcelain', '--', 'src', 'scripts', 'package-lock.json') !== '';
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? ' with uncommitted changes in src/' : ''}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}
