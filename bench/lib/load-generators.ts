import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startChild } from './children.ts';
import { encodeGreetRequest, GREET_PATH, grpcFrame } from './greet-wire.ts';

/*
 * wrk (HTTP/1.1, for POST /greet) and h2load (HTTP/2, for raw gRPC Greet) as child processes,
 * with their text reports parsed into numbers.
 */

export const GREET_BODY = JSON.stringify({ name: 'David' });

export type WrkResult = {
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p75: number; p90: number; p99: number; max: number };
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number;
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
};

export type H2loadResult = {
  requests: number;
  succeeded: number;
  seconds: number;
  requestsPerSecond: number;
  latencyMs: { min: number; mean: number; max: number; sd: number };
  /** failed + errored + timeout, and non-2xx status codes. */
  errors: number;
};

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function toMs(text: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s|m|h)$/.exec(text ?? '');
  if (!match) return Number.NaN;
  return Number(match[1]) * (UNIT_MS[match[2] as string] as number);
}

function numberAfter(report: string, pattern: RegExp): number {
  const match = pattern.exec(report);
  return match ? Number(match[1]) : 0;
}

export function parseWrkReport(report: string): WrkResult {
  const percentile = (p: number) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(report)?.[1]);
  const done = /(\d+) requests in ([\d.]+)(\w+),/.exec(report);
  if (!done) throw new Error(`wrk: no "N requests in" line in its report:\n${report}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
    report,
  );
  const socketErrors = {
    connect: Number(socket?.[1] ?? 0),
    read: Number(socket?.[2] ?? 0),
    write: Number(socket?.[3] ?? 0),
    timeout: Number(socket?.[4] ?? 0),
  };
  const non2xx = numberAfter(report, /Non-2xx or 3xx responses: (\d+)/);
  const seconds = toMs(`${done[2]}${done[3]}`) / 1000;
  return {
    requests: Number(done[1]),
    seconds,
    requestsPerSecond: numberAfter(report, /Requests\/sec:\s+([\d.]+)/),
    latencyMs: {
      p50: percentile(50),
      p75: percentile(75),
      p90: percentile(90),
      p99: percentile(99),
      max: toMs(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m.exec(report)?.[1]),
    },
    errors:
      non2xx + socketErrors.connect + socketErrors.read + socketErrors.write + socketErrors.timeout,
    non2xx,
    socketErrors,
  };
}

export function parseH2loadReport(report: string): H2loadResult {
  const requests =
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      report,
    );
  if (!requests) throw new Error(`h2load: no "requests:" line in its report:\n${report}`);
  const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(report);
  const timing = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)/.exec(report);
  const finished = /finished in ([\d.]+)(\w+), ([\d.]+) req\/s/.exec(report);
  const nonOk = Number(status?.[2] ?? 0) + Number(status?.[3] ?? 0) + Number(status?.[4] ?? 0);
  return {
    requests: Number(requests[3]),
    succeeded: Number(requests[4]),
    seconds: toMs(`${finished?.[1]}${finished?.[2]}`) / 1000,
    requestsPerSecond: Number(finished?.[3] ?? Number.NaN),
    latencyMs: {
      min: toMs(timing?.[1]),
      max: toMs(timing?.[2]),
      mean: toMs(timing?.[3]),
      sd: toMs(timing?.[4]),
    },
    errors: Number(requests[5]) + Number(requests[6]) + Number(requests[7]) + nonOk,
  };
}

export type LoadFiles = { wrkScript: string; grpcBody: string };

/** Writes the wrk Lua script and the h2load gRPC body (one framed GreetRequest). */
export function writeLoadFiles(directory: string): LoadFiles {
  const wrkScript = join(directory, 'post-greet.lua');
  writeFileSync(
    wrkScript,
    [
      'wrk.method = "POST"',
      `wrk.body = '${GREET_BODY}'`,
      'wrk.headers["Content-Type"] = "application/json"',
      '',
    ].join('\n'),
  );
  const grpcBody = join(directory, 'greet-request.bin');
  writeFileSync(grpcBody, grpcFrame(encodeGreetRequest({ name: 'David', withError: false })));
  return { wrkScript, grpcBody };
}

async function runTool(
  name: string,
  command: string,
  args: string[],
  cpus: string | undefined,
): Promise<string> {
  const child = startChild({
    name,
    command,
    args,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    cpus,
    stdout: 'pipe',
  });
  let output = '';
  child.process.stdout?.on('data', (chunk: string) => {
    output += chunk;
  });
  const code = await child.exited;
  if (code !== 0) throw new Error(`${name} exited with ${code}:\n${output}\n${child.tail()}`);
  return output;
}

export type WrkOptions = {
  url: string;
  connections: number;
  seconds: number;
  script: string;
  headers?: Readonly<Record<string, string>> | undefined;
  cpus?: string | undefined;
};

export async function runWrk(options: WrkOptions): Promise<WrkResult> {
  const report = await runTool(
    'wrk',
    'wrk',
    [
      '-t1',
      `-c${options.connections}`,
      `-d${options.seconds}s`,
      '--latency',
      '--timeout',
      '5s',
      '-s',
      options.script,
      ...Object.entries(options.headers ?? {}).flatMap(([name, value]) => [
        '-H',
        `${name}: ${value}`,
      ]),
      options.url,
    ],
    options.cpus,
  );
  return parseWrkReport(report);
}

export type H2loadOptions = {
  /** Base URL of the h2c backend. */
  url: string;
  connections: number;
  streamsPerConnection: number;
  seconds: number;
  body: string;
  cpus?: string | undefined;
};

export async function runH2loadGreet(options: H2loadOptions): Promise<H2loadResult> {
  const report = await runTool(
    'h2load',
    'h2load',
    [
      `--clients=${options.connections}`,
      `--max-concurrent-streams=${options.streamsPerConnection}`,
      `--duration=${options.seconds}`,
      '--threads=1',
      `--data=${options.body}`,
      '--header=content-type: application/grpc',
      '--header=te: trailers',
      new URL(GREET_PATH, options.url).toString(),
    ],
    options.cpus,
  );
  return parseH2loadReport(report);
}
