import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll } from 'vitest';
import { type OtlpReceiver, startOtlpReceiver } from '../../tools/otlp-receiver/index.ts';

export type RoleProcess = {
  url: string;
  port: number;
  child: ChildProcess;
  /** Every stdout line parsed as JSON (non-JSON lines are kept as { raw }). */
  logs(): Record<string, unknown>[];
  stderr(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
};

export const MAIN = resolve(import.meta.dirname, '../../dist/entry/main.js');

/** Environment every test role starts from: no inherited OTEL_*, K_SERVICE or GCE settings. */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (
      /^(OTEL_|K_SERVICE|K_REVISION|GCE_METADATA|GOOGLE_|SERVICE_ROLE|BACKEND_|AUTH_|TELEMETRY_)/.test(
        key,
      )
    )
      continue;
    env[key] = value;
  }
  return env;
}

export type StartRoleOptions = {
  env?: Record<string, string>;
  /** Defaults to dist/entry/main.js of this repository. */
  main?: string;
  cwd?: string;
};

/**
 * Starts `node dist/entry/main.js` for a role and waits until it listens. Without a PORT in
 * `env` the role takes a port of the kernel's choosing (PORT=0) and says which in its listening
 * line, so that no other test can take the port between a probe and the role's bind.
 */
export async function startRole(
  role: 'api' | 'backend',
  options: StartRoleOptions = {},
): Promise<RoleProcess> {
  const child = spawn(process.execPath, [options.main ?? MAIN], {
    cwd: options.cwd ?? process.cwd(),
    env: {
      ...baseEnv(),
      SERVICE_ROLE: role,
      PORT: '0',
      HOST: '127.0.0.1',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (!line.trim()) return;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      lines.push({ raw: line });
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const listening = () =>
    lines.find((line) => line.role === role && typeof line.address === 'string');
  const deadline = Date.now() + 15_000;
  while (!listening()) {
    if (child.exitCode !== null) {
      throw new Error(
        `${role} exited with ${child.exitCode} before listening:\n${stderr}\n${JSON.stringify(lines)}`,
      );
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${role} did not listen within 15 s:\n${stderr}\n${JSON.stringify(lines)}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const port = Number(/:(\d+)(?=\s|$)/.exec(String(listening()?.address))?.[1]);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    child,
    logs: () => lines,
    stderr: () => stderr,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
    exited,
  };
}

/** Runs the entry point to completion (for start-up failures) and returns its exit code and output. */
export async function runToExit(
  env: Record<string, string>,
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [MAIN], {
    env: { ...baseEnv(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const [code] = await once(child, 'exit');
  return { code: code as number | null, stdout, stderr };
}

/** Polls until `check` returns a value or throws the last error after `timeoutMs`. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The backend, then the api pointed at it: the pair most end-to-end tests start from. */
export async function startRoles(
  env: Record<string, string> = {},
): Promise<{ backend: RoleProcess; api: RoleProcess }> {
  const backend = await startRole('backend', { env });
  const api = await startRole('api', { env: { ...env, BACKEND_URL: backend.url } });
  return { backend, api };
}

export type TracedRoles = {
  receiver: OtlpReceiver;
  backend: RoleProcess;
  api: RoleProcess;
  /** Stops both roles (flushing their telemetry), then the receiver. */
  stop(): Promise<void>;
};

/** `startRoles` exporting to a local OTLP receiver of their own. */
export async function startRolesExporting(env: Record<string, string>): Promise<TracedRoles> {
  const receiver = await startOtlpReceiver();
  const { backend, api } = await startRoles({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url });
  return {
    receiver,
    backend,
    api,
    async stop() {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    },
  };
}

/**
 * `startRolesExporting` for the enclosing `describe`: started before its tests, stopped after.
 * Its fields are there from the first test on.
 */
export function rolesExportingForSuite(env: Record<string, string>): Readonly<TracedRoles> {
  let roles: TracedRoles | undefined;
  beforeAll(async () => {
    roles = await startRolesExporting(env);
  });
  afterAll(() => roles?.stop());
  const started = (): TracedRoles => {
    if (!roles) throw new Error('the roles start in beforeAll: use them inside tests and hooks');
    return roles;
  };
  return {
    get receiver() {
      return started().receiver;
    },
    get backend() {
      return started().backend;
    },
    get api() {
      return started().api;
    },
    stop: () => started().stop(),
  };
}
