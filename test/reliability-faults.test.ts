import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, createServer as createHttpServer, request as httpRequest } from 'node:http';
import { connect, constants, createServer, type Http2Server, type Http2Session } from 'node:http2';
import { type AddressInfo, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { connectNodeAdapter, createGrpcTransport } from '@connectrpc/connect-node';
import { afterEach, describe, expect, it } from 'vitest';
import { instanceNodeOptions } from '../scripts/soak/node-options.ts';
import {
  BackendService,
  GreetRequestSchema,
  GreetResponseSchema,
} from '../src/gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../src/gen/grpc/health/v1/health_pb.js';
import { ENVELOPE_HEADER_BYTES, frame } from '../src/grpc/envelope.js';
import { createIdTokenCredentials } from '../src/identity/id-token-credentials.js';
import { REQUEST_FLUSH_CAP_MS } from '../src/telemetry/start-telemetry.js';
import { type IdentityAnswer, startMetadataServer } from '../tools/cloud-run-local/index.ts';
import { startLocalStack } from '../tools/local-stack/index.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { freePort } from './helpers/free-port.js';
import { postGreetTls } from './helpers/http.js';
import { baseEnv, eventually, MAIN, type RoleProcess, startRole } from './helpers/roles.js';
import { newTraceParent } from './helpers/traces.js';

/*
 * Faults around the two roles, with real processes from the production build and real sockets:
 * the backend down, killed, slow or closing its HTTP/2 connections; the telemetry endpoint and
 * the token source failing; SIGTERM under load. What each case proves is listed in
 * docs/reliability.md.
 */

/** Everything a test starts, stopped after it whatever happens. */
const SLOW_LISTEN = join(import.meta.dirname, 'fixtures/slow-listen.mjs');
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
async function role(name: 'api' | 'backend', env: Record<string, string>): Promise<RoleProcess> {
  const started = await startRole(name, { env });
  cleanups.push(() => started.stop('SIGKILL'));
  return started;
}
async function receiver(): Promise<OtlpReceiver> {
  const started = await startOtlpReceiver();
  cleanups.push(() => started.close());
  return started;
}

type Answer = { status: number; retryAfter: string | null; code: string | undefined; ms: number };

async function greet(apiUrl: string, headers: Record<string, string> = {}): Promise<Answer> {
  const started = performance.now();
  const response = await fetch(`${apiUrl}/greet`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: '{"name":"Fault"}',
  });
  const body = (await response.json()) as { code?: string };
  return {
    status: response.status,
    retryAfter: response.headers.get('retry-after'),
    code: body.code,
    ms: performance.now() - started,
  };
}

/** `total` POST /greet calls, `concurrency` at a time; every answer. */
async function hammer(apiUrl: string, total: number, concurrency: number): Promise<Answer[]> {
  const answers: Answer[] = [];
  let issued = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued++ < total) answers.push(await greet(apiUrl));
    }),
  );
  return answers;
}

function countBy<T>(items: readonly T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** Resident set size of a process, from /proc/<pid>/status, in MiB. */
function rssMiB(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
}

/*
 * Memory. A measured role runs as on a 512 MiB Cloud Run instance (the image's NODE_OPTIONS and
 * the heap limit Node derives from the container's memory; without it V8 sizes its heap from
 * this machine's memory and lets RSS grow by 150-200 MiB before it collects). It is the
 * production build started through a wrapper that adds one thing: on SIGUSR2 it runs a full GC
 * and logs the live heap. Both are checked: the live heap tightly, RSS (which also holds
 * sockets and HTTP/2 sessions) more loosely.
 */
const MAIN_URL = new URL('../dist/entry/main.js', import.meta.url).href;
const MEASURED_MAIN = `import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');
process.on('SIGUSR2', () => {
  gc();
  const line = { message: 'live heap', bytes: process.memoryUsage().heapUsed };
  process.stdout.write(JSON.stringify(line) + String.fromCharCode(10));
});
await import(${JSON.stringify(MAIN_URL)});
`;
const messagesOf = (started: RoleProcess) => started.logs().map((line) => String(line.message));

async function measuredRole(name: 'api' | 'backend', env: Record<string, string>) {
  const dir = await mkdtemp(join(tmpdir(), 'measured-role-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const main = join(dir, 'measured-main.mjs');
  await writeFile(main, MEASURED_MAIN);
  const started = await startRole(name, {
    env: { NODE_OPTIONS: instanceNodeOptions(512), ...env },
    main,
  });
  cleanups.push(() => started.stop('SIGKILL'));
  return started;
}

/** Live JS heap after a full GC, in MiB, of a role started with measuredRole. */
async function liveHeapMiB(measured: RoleProcess): Promise<number> {
  const heapLines = () => measured.logs().filter((line) => line.message === 'live heap');
  const before = heapLines().length;
  measured.child.kill('SIGUSR2');
  const line = await eventually(() => {
    const lines = heapLines();
    expect(lines.length).toBeGreaterThan(before);
    return lines[lines.length - 1];
  });
  return Number(line?.bytes) / 1024 / 1024;
}

type MemorySamples = { heap: number; rss: number };
async function sampleMemory(measured: RoleProcess): Promise<MemorySamples> {
  return { heap: await liveHeapMiB(measured), rss: rssMiB(measured.child.pid) };
}

/**
 * Tolerances between two samples 1,500 calls apart: the live heap may grow by 4 MiB (a leak of
 * 3 KiB a call would exceed it), RSS by 32 MiB (a socket or HTTP/2 session kept per call would
 * exceed it).
 */
function expectNoLeak(first: MemorySamples, last: MemorySamples): void {
  const report = `live heap ${first.heap.toFixed(1)} -> ${last.heap.toFixed(1)} MiB, RSS ${first.rss.toFixed(0)} -> ${last.rss.toFixed(0)} MiB`;
  expect(last.heap - first.heap, report).toBeLessThan(4);
  expect(last.rss - first.rss, report).toBeLessThan(32);
}

type FakeBackend = {
  url: string;
  port: number;
  sessions: Set<Http2Session>;
  calls(): number;
  /** Calls whose handler saw its signal abort, by the abort's Connect code. */
  aborted(): Record<string, number>;
  close(): Promise<void>;
};

/**
 * A test-only BackendService on h2c whose Greet takes `delayMs` (unless the call is cancelled),
 * and that hands out its HTTP/2 sessions so a test can GOAWAY or close them.
 */
async function startFakeBackend(delayMs: number): Promise<FakeBackend> {
  let calls = 0;
  const aborted: Record<string, number> = {};
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(BackendService, {
        async greet(request, context) {
          calls += 1;
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(resolve, delayMs);
            context.signal.addEventListener('abort', () => {
              const code = Code[ConnectError.from(context.signal.reason).code];
              aborted[code] = (aborted[code] ?? 0) + 1;
              clearTimeout(timer);
              // As a real handler would: an aborted call ends with its reason, never a reply
              // (a reply here could beat the caller's own deadline timer and answer 200).
              reject(context.signal.reason);
            });
          });
          return { reply: `Hello ${request.name}!!` };
        },
      }),
  });
  const server: Http2Server = createServer(handler);
  const sessions = new Set<Http2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('error', () => {});
    session.once('close', () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const fake: FakeBackend = {
    url: `http://127.0.0.1:${port}`,
    port,
    sessions,
    calls: () => calls,
    aborted: () => ({ ...aborted }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
  cleanups.push(() => fake.close());
  return fake;
}

describe('backend down', () => {
  it('at start: 503 with Retry-After well within the deadline, /readyz 503, flat memory, recovery on the same port', async () => {
    const backendPort = await freePort();
    const api = await measuredRole('api', {
      BACKEND_URL: `http://127.0.0.1:${backendPort}`,
      BACKEND_TIMEOUT_MS: '1000',
    });

    const first = await greet(api.url);
    expect(first).toMatchObject({ status: 503, retryAfter: '1', code: 'unavailable' });
    expect(first.ms).toBeLessThan(1_000 + 500);
    const readiness = await fetch(`${api.url}/readyz`);
    expect(readiness.status).toBe(503);
    expect(readiness.headers.get('retry-after')).toBe('1');
    expect(readiness.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await readiness.json()).toMatchObject({ status: 503, instance: '/readyz' });
    // One WARNING naming the cause, however many probes fail for it.
    await fetch(`${api.url}/readyz`);
    const notReady = () => messagesOf(api).filter((line) => line.startsWith('not ready:'));
    await expect.poll(notReady).toHaveLength(1);
    expect(notReady()[0]).toContain('ECONNREFUSED');
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);

    // Memory across the outage: after a warm-up of 600 failing calls, then after 1,500 more.
    const warmUp = await hammer(api.url, 600, 100);
    const afterWarmUp = await sampleMemory(api);
    const more = await hammer(api.url, 1_500, 100);
    const afterMore = await sampleMemory(api);
    // 503 each; under this overload (100 at once on two shared cores) an attempt can still run
    // into the deadline, which is a 504. Nothing else, and nothing slower than the deadline.
    const outage = [...warmUp, ...more];
    expect(Object.keys(countBy(outage, (a) => String(a.status)))).toSatisfy((statuses: string[]) =>
      statuses.every((status) => status === '503' || status === '504'),
    );
    expect(outage.filter((a) => a.status === 503).length).toBeGreaterThan(0.99 * outage.length);
    expect(Math.max(...outage.map((a) => a.ms))).toBeLessThan(1_000 + 1_500);
    expectNoLeak(afterWarmUp, afterMore);

    // The backend comes up on the same port: the api recovers by itself.
    await role('backend', { PORT: String(backendPort) });
    const recovered = await eventually(async () => {
      const answer = await greet(api.url);
      expect(answer.status).toBe(200);
      return answer;
    }, 5_000);
    expect(recovered.status).toBe(200);
    expect((await fetch(`${api.url}/readyz`)).status).toBe(200);
    await expect
      .poll(() => messagesOf(api))
      .toContain('ready again: the backend answers its health check as serving');
    expect(api.child.exitCode).toBeNull();
  }, 120_000);

  it('killed mid-load (SIGKILL) and restarted: only 200 or 503, no hang, recovery without restarting the api', async () => {
    const backendPort = await freePort();
    let backend = await role('backend', { PORT: String(backendPort) });
    const api = await role('api', {
      BACKEND_URL: backend.url,
      BACKEND_TIMEOUT_MS: '2000',
    });
    const answers: Answer[] = [];
    let stop = false;
    const load = Promise.all(
      Array.from({ length: 16 }, async () => {
        while (!stop) answers.push(await greet(api.url));
      }),
    );
    await eventually(() => expect(answers.length).toBeGreaterThan(100));
    backend.child.kill('SIGKILL');
    await backend.exited;
    const killedAt = answers.length;
    await eventually(() =>
      expect(answers.slice(killedAt).some((a) => a.status === 503)).toBe(true),
    );
    backend = await role('backend', { PORT: String(backendPort) });
    const restartedAt = answers.length;
    await eventually(() =>
      expect(answers.slice(restartedAt).filter((a) => a.status === 200).length).toBeGreaterThan(50),
    );
    stop = true;
    await load;

    expect(countBy(answers, (a) => String(a.status))).toEqual({
      200: expect.any(Number),
      503: expect.any(Number),
    });
    expect(answers.filter((a) => a.status === 503).every((a) => a.retryAfter === '1')).toBe(true);
    expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(2_000 + 1_000);
    expect(api.child.exitCode).toBeNull();
  }, 60_000);
});

describe('backend slower than the deadline', () => {
  it('answers 504 within the deadline plus a small margin, and the backend sees the cancellation', async () => {
    const slow = await startFakeBackend(10_000);
    const api = await role('api', { BACKEND_URL: slow.url, BACKEND_TIMEOUT_MS: '500' });
    const answers = await Promise.all(Array.from({ length: 5 }, () => greet(api.url)));
    for (const answer of answers) {
      expect(answer).toMatchObject({ status: 504, code: 'deadline_exceeded' });
      expect(answer.ms).toBeGreaterThanOrEqual(450);
      expect(answer.ms).toBeLessThan(500 + 700);
    }
    expect(slow.calls()).toBe(5);
    // Each handler's signal aborts: the api's RST_STREAM CANCEL at its deadline, or Connect's
    // own timer from the grpc-timeout the api sent, whichever lands first.
    await eventually(() => {
      const aborted = Object.values(slow.aborted()).reduce((sum, n) => sum + n, 0);
      expect(aborted).toBe(5);
    }, 2_000);
  });
});

describe('the backend connection closed by the far side (GOAWAY, as Google load balancers do)', () => {
  type Closing = 'goaway' | 'close' | 'destroy';
  const closeAll = (backend: FakeBackend, how: Closing) => {
    for (const session of backend.sessions) {
      if (how === 'goaway') session.goaway();
      else if (how === 'close') session.close();
      else session.destroy();
    }
  };

  it.each([
    ['goaway', false],
    ['goaway', true],
    ['close', false],
    ['close', true],
    ['destroy', false],
    ['destroy', true],
  ] as const)(
    '%s while busy=%s: no crash, no hang, every call answered 200',
    async (how, busy) => {
      // connect-es #1768 crashed the process within a few rounds of this; a session destroyed
      // under open streams left them waiting for the whole deadline.
      const backend = await startFakeBackend(busy ? 200 : 0);
      const api = await role('api', { BACKEND_URL: backend.url, BACKEND_TIMEOUT_MS: '3000' });
      const answers: Answer[] = [];
      for (let round = 0; round < (busy ? 15 : 25); round++) {
        answers.push(await greet(api.url));
        const calls = backend.calls();
        const inFlight = busy ? Array.from({ length: 5 }, () => greet(api.url)) : [];
        // Busy: close while the five calls are inside the backend's handler.
        if (busy) await eventually(() => expect(backend.calls()).toBe(calls + 5));
        closeAll(backend, how);
        const burst = Array.from({ length: 10 }, () => greet(api.url));
        answers.push(...(await Promise.all([...inFlight, ...burst])));
        expect(api.child.exitCode).toBeNull();
      }
      expect(countBy(answers, (a) => String(a.status))).toEqual({ 200: answers.length });
      expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(2_500);
      expect(api.stderr()).not.toContain('GOAWAY');
      expect((await greet(api.url)).status).toBe(200);
    },
    60_000,
  );
});

/**
 * A test-only backend on h2c, written on node:http2 alone, whose Greet answers by the name asked
 * for: `big` with a reply over the api's read limit (4 MiB), `quota` with a RESOURCE_EXHAUSTED of
 * its own, `calm` with an ENHANCE_YOUR_CALM reset, `leak` with an INTERNAL whose message names an
 * internal host, `missing` with a NOT_FOUND meant for the caller, `garbage` with a reply that is
 * no protobuf, `denied` with a handler's PERMISSION_DENIED, `refused` with an HTTP 403 as Cloud
 * Run's front end refuses a caller without the invoker role; any other name with a greeting.
 */
const LEAKY_MESSAGE = 'connect ECONNREFUSED 10.8.0.3:5432 (db-primary.internal)';

async function startOddBackend(): Promise<{ url: string }> {
  const server = createServer();
  const sessions = new Set<Http2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('error', () => {});
    session.once('close', () => sessions.delete(session));
  });
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const request = Buffer.concat(chunks).subarray(ENVELOPE_HEADER_BYTES);
      const { name } = fromBinary(GreetRequestSchema, request);
      if (name === 'calm') {
        stream.close(constants.NGHTTP2_ENHANCE_YOUR_CALM);
        return;
      }
      const grpc = { ':status': 200, 'content-type': 'application/grpc' };
      const failures: Record<string, [Code, string]> = {
        quota: [Code.ResourceExhausted, 'quota'],
        leak: [Code.Internal, LEAKY_MESSAGE],
        missing: [Code.NotFound, 'no greeting is on file for missing'],
        cancelled: [Code.Canceled, 'the call to 10.8.0.3 was cancelled'],
        denied: [Code.PermissionDenied, 'user 42 may not be greeted'],
      };
      const failure = failures[name];
      if (failure) {
        const [code, message] = failure;
        stream.respond(
          { ...grpc, 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) },
          { endStream: true },
        );
        return;
      }
      if (name === 'refused') {
        stream.respond({ ':status': 403, 'content-type': 'text/html' }, { endStream: true });
        return;
      }
      if (name === 'garbage') {
        stream.respond(grpc, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(frame(Buffer.from([0x0a, 0x05])));
        return;
      }
      const reply = name === 'big' ? 'x'.repeat(4 * 1024 * 1024 + 1) : `Hello ${name}!!`;
      stream.respond(grpc, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(frame(toBinary(GreetResponseSchema, create(GreetResponseSchema, { reply }))));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('a backend reply over the read limit, a backend quota, a backend asking to slow down', () => {
  type Problem = { status: number; detail: string; code: string; traceId: string };
  const ask = async (apiUrl: string, name: string) => {
    const response = await fetch(`${apiUrl}/greet`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name }),
    });
    return {
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      body: (await response.json()) as Problem,
    };
  };

  it('a reply over 4 MiB: 502 without Retry-After, the CLIENT span keeps RESOURCE_EXHAUSTED; quota and ENHANCE_YOUR_CALM stay 429', async () => {
    const spans = await receiver();
    const odd = await startOddBackend();
    const api = await role('api', {
      BACKEND_URL: odd.url,
      OTEL_EXPORTER_OTLP_ENDPOINT: spans.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });

    const answer = await ask(api.url, 'big');
    expect(answer.status, JSON.stringify(answer.body)).toBe(502);
    expect(answer.retryAfter).toBeNull();
    expect(answer.body).toMatchObject({ status: 502, code: 'resource_exhausted' });
    expect(answer.body.detail).toMatch(/larger than the api accepts.*will not help/);
    // The backend's fault shows in error rates: the SERVER span is ERROR. The CLIENT span says
    // what the gRPC call ended with, as any gRPC client would.
    const { traceId } = answer.body;
    const trace = await spans.waitForSpans(
      (all) => all.filter((span) => span.traceId === traceId).length >= 2,
      { timeoutMs: 10_000 },
    );
    const server = trace.find((span) => span.traceId === traceId && span.kind === 'SERVER');
    const client = trace.find((span) => span.traceId === traceId && span.kind === 'CLIENT');
    expect(server?.status.code).toBe('ERROR');
    expect(server?.attributes['error.type']).toBe('502');
    expect(client?.status.code).toBe('ERROR');
    expect(client?.attributes['error.type']).toBe('RESOURCE_EXHAUSTED');

    // Unlike the backend's own quota, or its asking to slow down: those stay 429 + Retry-After.
    for (const name of ['quota', 'calm']) {
      const slowDown = await ask(api.url, name);
      expect(slowDown.status, `${name}: ${JSON.stringify(slowDown.body)}`).toBe(429);
      expect(slowDown.retryAfter).toBe('1');
      expect(slowDown.body).toMatchObject({ status: 429, code: 'resource_exhausted' });
    }
    // The same session still serves: the oversized stream was cancelled, not the connection.
    expect((await ask(api.url, 'Ada')).status).toBe(200);
    expect(api.stderr()).toBe('');
  });
  it("a backend's fault reaches the caller as a generic detail, its message only the logs; a 4xx keeps the backend's message", async () => {
    const odd = await startOddBackend();
    const api = await role('api', { BACKEND_URL: odd.url });
    const generic = 'The backend failed to answer. The failure was logged with this trace id.';
    const leak = await ask(api.url, 'leak');
    expect(leak.body).toMatchObject({ status: 500, code: 'internal', detail: generic });
    expect(JSON.stringify(leak.body)).not.toContain('10.8.0.3');
    // The api's own client failing to read the reply is no business of the caller's either.
    const garbage = await ask(api.url, 'garbage');
    expect(garbage.body).toMatchObject({ status: 500, code: 'internal', detail: generic });
    // The message is in the request's one log line, for whoever investigates.
    await eventually(() => {
      const line = api.logs().find((entry) => JSON.stringify(entry).includes(leak.body.traceId));
      expect(JSON.stringify(line?.error)).toContain(LEAKY_MESSAGE);
    }, 5_000);
    // CANCELLED from the backend, to a caller still waiting, is no "client closed request".
    const cancelled = await ask(api.url, 'cancelled');
    expect(cancelled.body).toMatchObject({ status: 502, code: 'canceled', detail: generic });
    const missing = await ask(api.url, 'missing');
    expect(missing.body).toMatchObject({
      status: 404,
      code: 'not_found',
      detail: 'no greeting is on file for missing',
    });
  });

  it("a refusal of the api's own credentials is the api's failure (502, ERROR); a handler's PERMISSION_DENIED is the caller's (403)", async () => {
    const odd = await startOddBackend();
    const api = await role('api', { BACKEND_URL: odd.url });
    const refusedDetail =
      "The backend refused the api's credentials. The failure was logged with this trace id.";
    // As Cloud Run's front end refuses a caller without roles/run.invoker.
    const refused = await ask(api.url, 'refused');
    expect(refused.body).toMatchObject({
      status: 502,
      code: 'permission_denied',
      detail: refusedDetail,
    });
    const denied = await ask(api.url, 'denied');
    expect(denied.body).toMatchObject({
      status: 403,
      code: 'permission_denied',
      detail: 'user 42 may not be greeted',
    });

    // As the backend's own token check refuses a call that brings no ID token.
    const checking = await role('backend', {
      AUTH_VERIFY_TOKENS: 'true',
      AUTH_AUDIENCE: 'https://greeter-backend.example',
    });
    const tokenless = await role('api', { BACKEND_URL: checking.url });
    const noToken = await ask(tokenless.url, 'Ada');
    expect(noToken.body).toMatchObject({
      status: 502,
      code: 'unauthenticated',
      detail: refusedDetail,
    });
    await eventually(() => {
      const line = tokenless
        .logs()
        .find((entry) => JSON.stringify(entry).includes(noToken.body.traceId));
      expect(line).toMatchObject({ severity: 'ERROR', httpRequest: { status: 502 } });
      expect(JSON.stringify(line?.error)).toContain('missing bearer token');
    }, 5_000);
  });

  it('sends an ID token to an h2c backend when BACKEND_AUDIENCE is set (a check off Cloud Run)', async () => {
    const audience = 'https://greeter-backend.example';
    const metadata = await startMetadataServer({
      serviceAccountEmail: 'api@p.iam.gserviceaccount.com',
    });
    cleanups.push(() => metadata.close());
    const checking = await role('backend', {
      AUTH_VERIFY_TOKENS: 'true',
      AUTH_AUDIENCE: audience,
      AUTH_CERTS_URL: metadata.certsUrl,
      AUTH_ALLOWED_CALLERS: 'api@p.iam.gserviceaccount.com',
    });
    const api = await role('api', {
      BACKEND_URL: checking.url,
      BACKEND_AUDIENCE: audience,
      GCE_METADATA_HOST: metadata.host,
    });
    expect(await ask(api.url, 'Ada')).toMatchObject({ status: 200 });
  });
});

describe('a BACKEND_URL whose server does not speak HTTP/2 (a wrong port, a backend without --use-http2)', () => {
  it('answers 503 like /readyz, and the ERROR line says what to check', async () => {
    const http1 = createHttpServer((_, response) => response.end('not gRPC'));
    await new Promise<void>((resolve) => http1.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => http1.close(() => resolve())));
    const { port } = http1.address() as AddressInfo;
    const api = await role('api', {
      BACKEND_URL: `http://127.0.0.1:${port}`,
      BACKEND_MAX_ATTEMPTS: '1',
    });
    const answer = await greet(api.url);
    expect(answer).toMatchObject({ status: 503, code: 'unavailable', retryAfter: '1' });
    expect((await fetch(`${api.url}/readyz`)).status).toBe(503);
    await eventually(() => {
      const line = api.logs().find((entry) => entry.severity === 'ERROR');
      expect(JSON.stringify(line?.error)).toContain('did not answer in HTTP/2');
      expect(JSON.stringify(line?.error)).toContain('--use-http2');
    }, 5_000);
  });
});

describe('telemetry endpoint failing', () => {
  type Mode = 'batch' | 'request';
  /** Latencies of sequential calls after a warm-up, with both roles exporting to `endpoint`. */
  async function measure(mode: Mode, endpoint: OtlpReceiver, calls = 40) {
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      OTEL_EXPORTER_OTLP_TIMEOUT: '1000',
      TELEMETRY_EXPORT_MODE: mode,
    };
    const backend = await role('backend', env);
    const api = await measuredRole('api', {
      ...env,
      BACKEND_URL: backend.url,
      // Load shedding (reliability-public.test.ts) off: these runs count on every answer.
      OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0',
    });
    for (let i = 0; i < 10; i++) await greet(api.url);
    const answers: Answer[] = [];
    for (let i = 0; i < calls; i++) answers.push(await greet(api.url));
    return { api, backend, answers, median: median(answers.map((a) => a.ms)) };
  }
  /** The healthy run each failing run is compared with, measured once per mode. */
  const healthy = new Map<Mode, Promise<number>>();
  const healthyMedian = (mode: Mode) => {
    let measured = healthy.get(mode);
    if (!measured) {
      measured = (async () => {
        const endpoint = await startOtlpReceiver();
        try {
          const run = await measure(mode, endpoint);
          await Promise.all([run.api.stop('SIGKILL'), run.backend.stop('SIGKILL')]);
          return run.median;
        } finally {
          await endpoint.close();
        }
      })();
      healthy.set(mode, measured);
    }
    return measured;
  };
  /** Not a benchmark: a generous factor over the healthy median on a shared machine. */
  const withinNoise = async (mode: Mode, observed: number) => {
    const baseline = await healthyMedian(mode);
    expect(observed).toBeLessThan(Math.max(3 * baseline, baseline + 20));
  };
  const exportLines = (process: RoleProcess) =>
    process.logs().filter((line) => String(line.message).includes('span export'));

  it.each(['down', 'slow', 'forbidden'] as const)(
    'batch mode, endpoint %s: same answers, latency within noise of a healthy run, one log line',
    async (behaviour) => {
      const failing = await receiver();
      failing.setBehaviour(behaviour, 3_000);
      const broken = await measure('batch', failing);
      expect(countBy(broken.answers, (a) => String(a.status))).toEqual({ 200: 40 });
      await withinNoise('batch', broken.median);

      if (behaviour === 'down') {
        // Memory: the span queue is bounded (2048 spans, overflow dropped).
        const warmUp = await hammer(broken.api.url, 600, 32);
        const afterWarmUp = await sampleMemory(broken.api);
        const more = await hammer(broken.api.url, 1_500, 32);
        const afterMore = await sampleMemory(broken.api);
        expect(countBy([...warmUp, ...more], (a) => String(a.status))).toEqual({ 200: 2_100 });
        expectNoLeak(afterWarmUp, afterMore);
      }

      for (const process of [broken.api, broken.backend]) {
        await eventually(() => expect(exportLines(process).length).toBeGreaterThan(0), 5_000);
        expect(exportLines(process)).toHaveLength(1);
      }
      expect(broken.api.stderr()).toBe('');
    },
    60_000,
  );

  it.each(['down', 'forbidden'] as const)(
    'request mode (flush before answering), endpoint %s: once the first export failed, latency within noise',
    async (behaviour) => {
      const failing = await receiver();
      failing.setBehaviour(behaviour);
      const broken = await measure('request', failing);
      expect(countBy(broken.answers, (a) => String(a.status))).toEqual({ 200: 40 });
      expect(exportLines(broken.api)).toHaveLength(1);
      await withinNoise('request', broken.median);
    },
    60_000,
  );

  // In request mode the first answer may wait for the slow export, up to the flush cap; once an
  // export is known to be slow, answers stop waiting for it. Compared with the cap, not with a
  // healthy run: the first calls of a fresh process are slower than a warmed-up median.
  it('request mode, endpoint slow (answers after 3 s): only the first answer waits, and at most the flush cap per role', async () => {
    const slow = await receiver();
    slow.setBehaviour('slow', 3_000);
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: slow.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      TELEMETRY_EXPORT_MODE: 'request',
    };
    const backend = await role('backend', env);
    const api = await role('api', { ...env, BACKEND_URL: backend.url });
    const first = await greet(api.url);
    expect(first.status).toBe(200);
    // Both roles may wait once, one after the other.
    expect(first.ms).toBeLessThan(2 * REQUEST_FLUSH_CAP_MS + 1_000);
    const later: Answer[] = [];
    for (let i = 0; i < 5; i++) later.push(await greet(api.url));
    expect(countBy(later, (a) => String(a.status))).toEqual({ 200: 5 });
    expect(Math.max(...later.map((a) => a.ms))).toBeLessThan(REQUEST_FLUSH_CAP_MS / 2);
  }, 60_000);
});

describe('token source (metadata server) failing, cloud mode', () => {
  it('no token yet: a slow source is cut at 3 s with a 503 saying what to check; then recovery', async () => {
    const stack = await startLocalStack({
      cloud: true,
      env: { OTEL_SDK_DISABLED: 'true' },
      startRole: (name, env) => role(name, env),
    });
    cleanups.push(() => stack.stop());
    const metadata = stack.cloud?.metadata;
    if (!metadata) throw new Error('cloud mode has a metadata server');
    const ca = await readFile(stack.cloud?.caFile ?? '', 'utf8');
    const greetThroughFrontEnd = async () => {
      const started = performance.now();
      const session = connect(stack.apiUrl, { ca });
      try {
        const stream = session.request({
          ':method': 'POST',
          ':path': '/greet',
          'content-type': 'application/json',
        });
        stream.end('{"name":"Meta"}');
        const status = await new Promise<number>((resolve, reject) => {
          stream.on('response', (headers) => resolve(Number(headers[':status'])));
          stream.on('error', reject);
        });
        let text = '';
        for await (const chunk of stream) text += chunk;
        const body = JSON.parse(text) as { detail?: string };
        return { status, detail: body.detail ?? '', ms: performance.now() - started };
      } finally {
        session.close();
      }
    };

    metadata.setDelayMs(5_000);
    const slow = await greetThroughFrontEnd();
    expect(slow.status).toBe(503);
    expect(slow.detail).toContain('ID token');
    // The operator's advice stays in the log: the caller is anyone on the internet.
    expect(slow.detail).not.toMatch(/service account|GOOGLE_|GCE_/);
    expect(slow.ms).toBeGreaterThanOrEqual(2_900);
    expect(slow.ms).toBeLessThan(3_000 + 1_500);

    // Recovery, with tokens that live 4 minutes: inside the 5-minute refresh window from the
    // start, so every call wants a fresh one, and usable for 3 more minutes.
    metadata.setDelayMs(0);
    metadata.setIdTokenLifetimeSeconds(240);
    expect((await greetThroughFrontEnd()).status).toBe(200);
    const fetched = metadata.idTokenRequests();

    // The source turns slow (2 s, within the 3 s cap): every call is answered at once with the
    // token in hand, and one refresh in the background replaces it.
    metadata.setDelayMs(2_000);
    for (let i = 0; i < 5; i++) {
      const answer = await greetThroughFrontEnd();
      expect(answer.status).toBe(200);
      expect(answer.ms).toBeLessThan(1_000);
    }
    await eventually(() => expect(metadata.idTokenRequests()).toBe(fetched + 1));
    // It hangs, then is down: still served with the token in hand, at once. The refresh is
    // given up after 3 s, and the source then left alone for 10 s.
    metadata.setDelayMs(0);
    metadata.setIdentityAnswer('hang');
    const hung = await greetThroughFrontEnd();
    expect(hung.status).toBe(200);
    expect(hung.ms).toBeLessThan(1_000);
    expect(metadata.idTokenRequests()).toBe(fetched + 2);
    metadata.setIdentityAnswer(undefined);
    metadata.setDown(true);
    for (let i = 0; i < 3; i++) {
      const answer = await greetThroughFrontEnd();
      expect(answer.status).toBe(200);
      expect(answer.ms).toBeLessThan(1_000);
    }
    expect(metadata.idTokenRequests()).toBe(fetched + 2);
    // Back up: a fresh token is fetched once the quiet 10 s are over.
    metadata.setDown(false);
    await eventually(async () => {
      expect((await greetThroughFrontEnd()).status).toBe(200);
      expect(metadata.idTokenRequests()).toBeGreaterThan(fetched + 2);
    }, 20_000);
  }, 60_000);

  it('an answer that is not a usable ID token: 503 saying so, nothing kept, no token in logs or spans', async () => {
    const otlp = await receiver();
    const roles: RoleProcess[] = [];
    const stack = await startLocalStack({
      cloud: true,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: '100' },
      startRole: async (name, env) => {
        const started = await role(name, env);
        roles.push(started);
        return started;
      },
    });
    cleanups.push(() => stack.stop());
    const metadata = stack.cloud?.metadata;
    if (!metadata) throw new Error('cloud mode has a metadata server');
    const ca = await readFile(stack.cloud?.caFile ?? '', 'utf8');
    const audience = stack.cloud?.backendFrontEnd.audience ?? '';
    const valid = metadata.mintIdToken(audience);

    const answers: [IdentityAnswer, RegExp][] = [
      [{ body: '<html><body>captive portal</body></html>' }, /not an ID token \(a JWT\)/],
      // A valid token with a header after it: before, the whole token went into the error
      // that Headers.set threw, and so into the ERROR line and the SERVER span.
      [{ body: `${valid}\r\nx-evil: 1` }, /not an ID token \(a JWT\)/],
      [
        { body: metadata.mintIdToken(audience, { expiresInSeconds: -100 }) },
        /an ID token that expired at \S+ \(this clock: \S+\): check the clock/,
      ],
    ];
    for (const [answer, reason] of answers) {
      metadata.setIdentityAnswer(answer);
      const before = metadata.idTokenRequests();
      for (let i = 0; i < 2; i++) {
        const traced = { traceparent: newTraceParent().header };
        const failed = await postGreetTls(stack.apiUrl, ca, { name: 'Bad' }, traced);
        expect(failed.status).toBe(503);
        expect(failed.body.code).toBe('unavailable');
      }
      // Nothing kept: each call asked once (not twice, as when every call fetched again).
      expect(metadata.idTokenRequests() - before).toBe(2);
      const api = roles.find((r) => r.logs().some((line) => line.role === 'api'));
      await eventually(() =>
        expect(api?.logs().some((line) => reason.test(JSON.stringify(line.error ?? '')))).toBe(
          true,
        ),
      );
    }
    metadata.setIdentityAnswer(undefined);
    expect((await postGreetTls(stack.apiUrl, ca, { name: 'Good' })).status).toBe(200);

    // The failed calls' SERVER spans are in (they record the error).
    await eventually(() =>
      expect(
        otlp.spans().filter((span) => span.name === 'POST /greet' && span.status.code === 'ERROR'),
      ).toHaveLength(6),
    );
    const jwt = /eyJ[\w-]+\.eyJ[\w-]+/;
    for (const started of roles) expect(JSON.stringify(started.logs())).not.toMatch(jwt);
    const spans = JSON.stringify(otlp.spans(), (_key, value: unknown) =>
      typeof value === 'bigint' ? String(value) : value,
    );
    expect(spans).toContain('not an ID token');
    expect(spans).not.toMatch(jwt);
    expect(spans).not.toContain(valid.split('.')[2]);
  }, 60_000);

  it('a token the front end refuses after the signing key changed: one 502, then a fresh token and 200', async () => {
    const stack = await startLocalStack({
      cloud: true,
      env: { OTEL_SDK_DISABLED: 'true' },
      // Only the front end checks tokens here: it fetches the new key set when a new kid shows up.
      backendEnv: { AUTH_VERIFY_TOKENS: 'false' },
      startRole: (name, env) => role(name, env),
    });
    cleanups.push(() => stack.stop());
    const metadata = stack.cloud?.metadata;
    if (!metadata) throw new Error('cloud mode has a metadata server');
    const ca = await readFile(stack.cloud?.caFile ?? '', 'utf8');
    const greetOnce = async () => (await postGreetTls(stack.apiUrl, ca, { name: 'Key' })).status;
    expect(await greetOnce()).toBe(200);
    const fetched = metadata.idTokenRequests();

    // A restarted metadata server signs with a new key and publishes only that one; another
    // caller's new token makes the backend's front end fetch the new set.
    await metadata.rotateSigningKey();
    const session = connect(stack.backendUrl, { ca });
    cleanups.push(() => session.close());
    const probe = session.request({
      ':method': 'POST',
      ':path': '/backend_service.v1.BackendService/Greet',
      'content-type': 'application/grpc',
      authorization: `Bearer ${metadata.mintIdToken(stack.cloud?.backendFrontEnd.audience ?? '')}`,
    });
    probe.end();
    probe.resume();
    await once(probe, 'close');

    expect(await greetOnce()).toBe(502);
    expect(await greetOnce()).toBe(200);
    expect(metadata.idTokenRequests()).toBe(fetched + 1);
  }, 60_000);

  it('sends the token in hand while the source fails, asks again after 10 s, fails clearly with none usable', async () => {
    const now = () => Math.floor(Date.now() / 1000);
    const jwt = (expiresInSeconds: number) =>
      `e30.${Buffer.from(JSON.stringify({ exp: now() + expiresInSeconds })).toString('base64url')}.sig`;
    const down = () => Promise.reject(new Error('metadata server down'));

    // 240 s left: due for refresh (from 5 minutes before expiry) but still usable.
    let answer: () => Promise<string> = async () => jwt(240);
    let fetches = 0;
    const credentials = createIdTokenCredentials('https://backend.example', () => {
      fetches += 1;
      return answer();
    });
    const token = await credentials.authorization();
    expect(fetches).toBe(1);
    answer = down;
    expect(await credentials.authorization()).toBe(token);
    expect(fetches).toBe(2);
    await new Promise((resolve) => setImmediate(resolve)); // the refresh's failure is in
    // Quiet for 10 s after a failure: the token in hand, without asking.
    expect(await credentials.authorization()).toBe(token);
    expect(fetches).toBe(2);

    // A token with a minute or less left is not taken (it could expire on the wire), and one
    // in hand that gets there is not sent: the call fails, saying what to do.
    const nearlyExpired = createIdTokenCredentials('https://backend.example', () =>
      Promise.resolve(jwt(30)),
    );
    await expect(nearlyExpired.authorization()).rejects.toThrow(
      /could not get a Google ID token .*: the token source answered an ID token that expires at .* in less than 60 s/,
    );
    let first = true;
    const expiring = createIdTokenCredentials('https://backend.example', () => {
      if (!first) return down();
      first = false;
      // exp may be fractional: 60.3 s left, usable for 0.3 s.
      const exp = Date.now() / 1000 + 60.3;
      return Promise.resolve(
        `e30.${Buffer.from(JSON.stringify({ exp })).toString('base64url')}.sig`,
      );
    });
    await expiring.authorization();
    await new Promise((resolve) => setTimeout(resolve, 400));
    await expect(expiring.authorization()).rejects.toThrow(
      /could not get a Google ID token .*: metadata server down\. On Cloud Run check the service account/,
    );
  });
});

type Outcome = {
  startedAt: number;
  traceId: string;
  status?: number;
  retryAfter?: string | undefined;
  error?: string;
};

/**
 * Steady load from `concurrency` keep-alive clients (node:http Agent), each request with its
 * own sampled trace id, until `stop()`.
 */
function keepAliveLoad(port: number, concurrency: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const outcomes: Outcome[] = [];
  let stopped = false;
  const one = () =>
    new Promise<Outcome>((resolve) => {
      const traceId = randomBytes(16).toString('hex');
      const outcome: Outcome = { startedAt: performance.now(), traceId };
      const request = httpRequest(
        {
          agent,
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/greet',
          headers: {
            'content-type': 'application/json',
            traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01`,
          },
        },
        (response) => {
          response.resume();
          response.on('end', () =>
            resolve({
              ...outcome,
              status: response.statusCode ?? 0,
              retryAfter: response.headers['retry-after'],
            }),
          );
          response.on('error', (error: NodeJS.ErrnoException) =>
            resolve({ ...outcome, error: `response ${error.code ?? error.message}` }),
          );
        },
      );
      request.on('error', (error: NodeJS.ErrnoException) =>
        resolve({ ...outcome, error: error.code ?? error.message }),
      );
      request.end('{"name":"Drain"}');
    });
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      const outcome = await one();
      outcomes.push(outcome);
      if (outcome.error) await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
  return {
    outcomes,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      agent.destroy();
      return outcomes;
    },
  };
}

/** 200, or 503 with Retry-After: what a client can act on. */
/** Response headers of a keep-alive GET, as Node's http client reads them. */
function responseHeaders(port: number, path: string): Promise<Record<string, unknown>> {
  const agent = new Agent({ keepAlive: true });
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    httpRequest({ port, host: '127.0.0.1', path, agent }, (response) => {
      response.resume().on('end', () => resolve(response.headers));
    })
      .on('error', reject)
      .end();
  }).finally(() => agent.destroy());
}

function isCleanAnswer(outcome: Outcome): boolean {
  return outcome.status === 200 || (outcome.status === 503 && outcome.retryAfter === '1');
}

/** Trace ids of the requests a role answered: its access lines. */
function answeredTraceIds(process: RoleProcess): Set<string> {
  const ids = new Set<string>();
  for (const line of process.logs()) {
    const trace = line['logging.googleapis.com/trace'];
    if (line.httpRequest && typeof trace === 'string') ids.add(trace.split('/').pop() ?? '');
  }
  return ids;
}

describe('SIGTERM with work that never ends', () => {
  /** A POST whose body never completes: in flight until the connection is closed. */
  function startStuckRequest(port: number): void {
    const socket = createConnection(port, '127.0.0.1');
    cleanups.push(() => socket.destroy());
    socket.on('error', () => {});
    socket.write(
      'POST /greet HTTP/1.1\r\nhost: api\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"na',
    );
  }

  it('a request that never completes and an export endpoint that never answers: exits 0 within SHUTDOWN_TIMEOUT_MS', async () => {
    const stuck = await receiver();
    stuck.setBehaviour('slow', 30_000);
    const api = await role('api', {
      OTEL_EXPORTER_OTLP_ENDPOINT: stuck.url,
      OTEL_BSP_SCHEDULE_DELAY: '60000',
      SHUTDOWN_TIMEOUT_MS: '3000',
      BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
    });
    // A span waiting to be flushed (400: no name), then a request whose body never completes.
    const refused = await fetch(`${api.url}/greet`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(refused.status).toBe(400);
    startStuckRequest(api.port);
    await new Promise((resolve) => setTimeout(resolve, 200));

    const signalledAt = performance.now();
    api.child.kill('SIGTERM');
    const exitCode = await api.exited;
    const stoppedAfter = performance.now() - signalledAt;

    expect(exitCode).toBe(0);
    const messages = api.logs().map((line) => String(line.message));
    expect(messages).toContain('drain timed out; closing remaining connections');
    expect(messages).toContain('SIGTERM received: draining for up to 2250 ms');
    // The drain waited its share for the stuck request; the flush got the rest, not 4 s more.
    expect(stoppedAfter).toBeGreaterThan(2_250);
    expect(stoppedAfter).toBeLessThan(3_000 + 1_000);
  }, 30_000);

  it('a request that arrives after the drain was cut cannot hold the exit (SHUTDOWN_TIMEOUT_MS=400)', async () => {
    const api = await role('api', {
      SHUTDOWN_TIMEOUT_MS: '400',
      BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
    });
    const signalledAt = performance.now();
    api.child.kill('SIGTERM');
    // The drain is cut at 300 ms, while the api still listens (it asks clients to go elsewhere
    // for 500 ms before it stops): a request that starts now and never completes.
    const cut = 'drain timed out; closing remaining connections';
    await eventually(() => expect(api.logs().map((line) => line.message)).toContain(cut), 2_000);
    startStuckRequest(api.port);
    const exitCode = await api.exited;
    expect(exitCode).toBe(0);
    expect(performance.now() - signalledAt).toBeLessThan(400 + 1_000);
  }, 30_000);
});

describe('SIGTERM with requests in flight', () => {
  const CUT = 'drain timed out; closing remaining connections';
  /** POST /greet on a connection the agent keeps open after the answer, as a pool does. */
  function greetKeptAlive(port: number, agent: Agent, headers: Record<string, string> = {}) {
    return new Promise<{ status: number | undefined; connection: string | undefined }>(
      (resolve, reject) => {
        const request = httpRequest(
          {
            port,
            host: '127.0.0.1',
            method: 'POST',
            path: '/greet',
            agent,
            headers: { 'content-type': 'application/json', ...headers },
          },
          (response) => {
            response
              .resume()
              .on('end', () =>
                resolve({ status: response.statusCode, connection: response.headers.connection }),
              );
          },
        );
        request.on('error', reject);
        request.end('{"name":"InFlight"}');
      },
    );
  }

  it('api: a request answered after the listener closed gets connection: close, and the api exits at once, not at the drain cut', async () => {
    const slow = await startFakeBackend(1_500);
    const api = await role('api', { BACKEND_URL: slow.url, SHUTDOWN_TIMEOUT_MS: '8000' });
    const agent = new Agent({ keepAlive: true });
    cleanups.push(() => agent.destroy());
    const answer = greetKeptAlive(api.port, agent);
    await eventually(() => expect(slow.calls()).toBe(1));

    const signalledAt = performance.now();
    api.child.kill('SIGTERM');
    const exitCode = await api.exited;
    const stoppedAfter = performance.now() - signalledAt;

    expect(exitCode).toBe(0);
    expect(messagesOf(api)).not.toContain(CUT);
    // Answered about 1.5 s after the signal, 1 s after the listener closed; the drain would be
    // cut at 6 s.
    expect(stoppedAfter).toBeLessThan(1_500 + 1_000);
    expect(await answer).toEqual({ status: 200, connection: 'close' });
  }, 30_000);

  it('api: a response held for its spans (request mode) across the listener closing gets connection: close too', async () => {
    const spans = await receiver();
    spans.setBehaviour('slow', 1_200);
    const fast = await startFakeBackend(0);
    const api = await role('api', {
      BACKEND_URL: fast.url,
      SHUTDOWN_TIMEOUT_MS: '8000',
      TELEMETRY_EXPORT_MODE: 'request',
      OTEL_EXPORTER_OTLP_ENDPOINT: spans.url,
    });
    const agent = new Agent({ keepAlive: true });
    cleanups.push(() => agent.destroy());
    const answer = greetKeptAlive(api.port, agent);
    // The response is decided and waits for its spans' flush: 1 s at most (the receiver takes 1.2).
    await eventually(() => expect(spans.requests()).toBe(1));

    const signalledAt = performance.now();
    api.child.kill('SIGTERM');
    const exitCode = await api.exited;
    const stoppedAfter = performance.now() - signalledAt;

    expect(exitCode).toBe(0);
    expect(messagesOf(api)).not.toContain(CUT);
    // The answer leaves about 1 s after the signal and the shutdown flush takes 1.2 s; the drain
    // would be cut at 6 s.
    expect(stoppedAfter).toBeLessThan(4_000);
    expect(await answer).toEqual({ status: 200, connection: 'close' });
  }, 30_000);

  it('backend: a call in flight when GOAWAY goes out is answered, and the backend exits at once after it', async () => {
    const backend = await role('backend', {});
    const session = connect(backend.url);
    cleanups.push(() => session.destroy());
    session.on('error', () => {});
    // A Greet whose request message is held back (the handler waits for it) until after GOAWAY.
    const message = Buffer.from([0x0a, 0x08, ...Buffer.from('InFlight')]);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
    const stream = session.request({
      ':method': 'POST',
      ':path': '/backend_service.v1.BackendService/Greet',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const answered = new Promise<string | undefined>((resolve) => {
      stream.on('trailers', (trailers) => resolve(String(trailers['grpc-status'])));
      stream.on('close', () => resolve(undefined));
    });
    stream.resume();
    stream.write(frame.subarray(0, 3));
    const goaway = new Promise((resolve) => session.once('goaway', resolve));

    const signalledAt = performance.now();
    backend.child.kill('SIGTERM');
    await goaway;
    stream.end(frame.subarray(3));
    expect(await answered).toBe('0');
    const exitCode = await backend.exited;
    const stoppedAfter = performance.now() - signalledAt;

    expect(exitCode).toBe(0);
    expect(messagesOf(backend)).not.toContain(CUT);
    expect(stoppedAfter).toBeLessThan(500 + 1_000);
  }, 30_000);

  it.each([
    ['after the listener closed', '2000'],
    ['during the 500 ms notice, before the listener closed', '400'],
  ])(
    'api: a request cut at the drain deadline (%s) still has its SERVER and CLIENT spans exported',
    async (_when, shutdownTimeoutMs) => {
      const spans = await receiver();
      const hanging = await startFakeBackend(60_000);
      const api = await role('api', {
        BACKEND_URL: hanging.url,
        BACKEND_TIMEOUT_MS: '60000',
        SHUTDOWN_TIMEOUT_MS: shutdownTimeoutMs,
        OTEL_EXPORTER_OTLP_ENDPOINT: spans.url,
        OTEL_BSP_SCHEDULE_DELAY: '60000',
      });
      const parent = newTraceParent();
      const agent = new Agent({ keepAlive: true });
      cleanups.push(() => agent.destroy());
      const answer = greetKeptAlive(api.port, agent, { traceparent: parent.header }).catch(
        (error: NodeJS.ErrnoException) => error.code,
      );
      await eventually(() => expect(hanging.calls()).toBe(1));

      api.child.kill('SIGTERM');
      expect(await api.exited).toBe(0);
      expect(await answer).toBe('ECONNRESET');
      expect(messagesOf(api)).toContain(CUT);

      // Exported by the shutdown flush (the batch delay is 60 s), before the process exited.
      const trace = spans.spans().filter((span) => span.traceId === parent.traceId);
      const server = trace.find((span) => span.kind === 'SERVER');
      const client = trace.find((span) => span.kind === 'CLIENT');
      // Nothing reached the client (ECONNRESET): no status code on the span, as for a client that
      // left; the access line says 499.
      expect(server).toBeDefined();
      expect(server?.attributes['http.response.status_code']).toBeUndefined();
      expect(
        api
          .logs()
          .find(
            (line) =>
              line['logging.googleapis.com/trace']?.toString().endsWith(parent.traceId) &&
              line.httpRequest !== undefined,
          )?.httpRequest,
      ).toMatchObject({ status: 499 });
      expect(client?.attributes['rpc.status_code']).toBe('CANCELLED');
      expect(client?.parentSpanId).toBe(server?.spanId);
    },
    30_000,
  );

  it('api: a second SIGTERM while draining is ignored: the request in flight is answered, exit 0', async () => {
    const slow = await startFakeBackend(1_000);
    const api = await role('api', { BACKEND_URL: slow.url });
    const answer = greet(api.url);
    await eventually(() => expect(slow.calls()).toBe(1));

    api.child.kill('SIGTERM');
    await eventually(() => expect(messagesOf(api).join()).toContain('SIGTERM received: draining'));
    api.child.kill('SIGTERM');

    expect((await answer).status).toBe(200);
    expect(await api.exited).toBe(0);
    expect(messagesOf(api)).toContain('SIGTERM while stopping: ignored');
  }, 30_000);

  it.each(['api', 'backend'] as const)(
    '%s: a SIGTERM while it starts is held, then it stops as on any SIGTERM: its lines, exit 0',
    async (name) => {
      // Its servers listen 400 ms late: the signal comes while it is still starting.
      const child = spawn(process.execPath, [MAIN], {
        env: {
          ...baseEnv(),
          SERVICE_ROLE: name,
          PORT: '0',
          HOST: '127.0.0.1',
          BACKEND_URL: 'http://127.0.0.1:9',
          NODE_OPTIONS: `--import ${SLOW_LISTEN}`,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      cleanups.push(() => child.kill('SIGKILL'));
      let stdout = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
      });
      const exited = once(child, 'exit');
      await eventually(() => expect(stderr).toContain('slow-listen: listen delayed'));
      child.kill('SIGTERM');
      const [code, signal] = await exited;
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      const messages = stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => (JSON.parse(line) as { message: string }).message);
      expect(messages).toEqual(
        expect.arrayContaining([
          expect.stringMatching(new RegExp(`^${name} role listening on `)),
          'SIGTERM received while starting',
          expect.stringMatching(/^SIGTERM received: draining for up to \d+ ms$/),
        ]),
      );
    },
    15_000,
  );

  it('api: a second Ctrl-C (SIGINT) while draining exits at once with 130, saying so', async () => {
    const slow = await startFakeBackend(5_000);
    const api = await role('api', { BACKEND_URL: slow.url });
    const answer = greet(api.url).catch(() => 'cut');
    await eventually(() => expect(slow.calls()).toBe(1));

    api.child.kill('SIGINT');
    await eventually(() => expect(messagesOf(api).join()).toContain('SIGINT received: draining'));
    const forcedAt = performance.now();
    api.child.kill('SIGINT');

    expect(await api.exited).toBe(130);
    expect(performance.now() - forcedAt).toBeLessThan(1_000);
    expect(await answer).toBe('cut');
    expect(messagesOf(api)).toContain(
      'SIGINT while stopping: exiting now, without the rest of the drain or the flush',
    );
  }, 30_000);
});

describe('SIGTERM under load', () => {
  /**
   * Both roles exporting to a receiver only on their shutdown flush, and the api under steady
   * load, with load shedding (reliability-public.test.ts) off: these count on every answer.
   */
  async function underLoad(apiEnv: Record<string, string> = {}) {
    const spans = await receiver();
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: spans.url, OTEL_BSP_SCHEDULE_DELAY: '60000' };
    const backend = await role('backend', env);
    const api = await role('api', {
      ...env,
      ...apiEnv,
      BACKEND_URL: backend.url,
      OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0',
    });
    const load = keepAliveLoad(api.port, 32);
    await eventually(() => expect(load.outcomes.length).toBeGreaterThan(200));
    return { spans, backend, api, load };
  }

  it('api: stops accepting, finishes in-flight requests, 503 to probes, flushes, exits 0 within 10 s, loses nothing it accepted', async () => {
    const { spans, api, load } = await underLoad();
    expect((await fetch(`${api.url}/docs/`)).status).toBe(200); // built before the signal

    const signalledAt = performance.now();
    api.child.kill('SIGTERM');
    await eventually(() => expect(JSON.stringify(api.logs())).toContain('SIGTERM received'));
    const [docsHeaders, ...probes] = await Promise.all([
      responseHeaders(api.port, '/docs/'),
      fetch(`${api.url}/healthz`),
      fetch(`${api.url}/readyz`),
    ]);
    const exitCode = await api.exited;
    const stoppedAfter = performance.now() - signalledAt;
    const outcomes = await load.stop();

    expect(exitCode).toBe(0);
    expect(stoppedAfter).toBeLessThan(10_000);
    expect(probes.map((probe) => probe.status)).toEqual([503, 503]);
    // The docs are served by an instance of their own, and still ask clients to go elsewhere.
    expect(docsHeaders.connection).toBe('close');

    const answered = answeredTraceIds(api);
    const before = outcomes.filter((o) => o.startedAt < signalledAt);
    expect(before.length).toBeGreaterThan(200);
    // Every request in flight or sent before the signal was answered, and answered 200.
    expect(countBy(before, (o) => String(o.status ?? o.error))).toEqual({ 200: before.length });
    // After it: answers are 200, and the only failures are connections the process never
    // accepted (refused, or reset in the listen backlog when it stopped listening).
    const failed = outcomes.filter((o) => o.error);
    expect(outcomes.filter((o) => o.status !== undefined && !isCleanAnswer(o))).toEqual([]);
    expect(failed.filter((o) => answered.has(o.traceId))).toEqual([]);
    expect(new Set(failed.map((o) => o.error))).toSatisfy((codes: Set<string>) =>
      [...codes].every((code) => code === 'ECONNREFUSED' || code === 'ECONNRESET'),
    );
    // Flushed on the way out: a SERVER span for every answered request.
    const exported = new Set(
      spans
        .spans()
        .filter((s) => s.kind === 'SERVER' && s.resource['service.name'] === 'greeter-api')
        .map((s) => s.traceId),
    );
    const ok = outcomes.filter((o) => o.status === 200).map((o) => o.traceId);
    expect(ok.filter((id) => !exported.has(id))).toEqual([]);
  }, 60_000);

  it('backend: NOT_SERVING to probes, in-flight calls finish, the api answers 200 or 503, flushes, exits 0 within 10 s', async () => {
    const { spans, backend, api, load } = await underLoad({ BACKEND_TIMEOUT_MS: '2000' });

    const signalledAt = performance.now();
    backend.child.kill('SIGTERM');
    await eventually(() => expect(JSON.stringify(backend.logs())).toContain('SIGTERM received'));
    const probe = createClient(Health, createGrpcTransport({ baseUrl: backend.url }));
    const { status } = await probe.check({ service: '' });
    const exitCode = await backend.exited;
    const stoppedAfter = performance.now() - signalledAt;
    // The api answers 503 for the backend that is gone; let a few of those come in.
    await eventually(() =>
      expect(load.outcomes.filter((o) => o.status === 503).length).toBeGreaterThan(5),
    );
    const outcomes = await load.stop();

    expect(status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
    expect(exitCode).toBe(0);
    expect(stoppedAfter).toBeLessThan(10_000);
    expect(countBy(outcomes, (o) => String(o.status ?? o.error))).toEqual({
      200: expect.any(Number),
      503: expect.any(Number),
    });
    expect(outcomes.filter((o) => o.status === 503).every((o) => o.retryAfter === '1')).toBe(true);
    const before = outcomes.filter((o) => o.startedAt < signalledAt);
    expect(countBy(before, (o) => String(o.status ?? o.error))).toEqual({ 200: before.length });
    // Every call the backend answered reached the receiver before it exited.
    const exported = new Set(
      spans
        .spans()
        .filter((s) => s.kind === 'SERVER' && s.resource['service.name'] === 'greeter-backend')
        .map((s) => s.traceId),
    );
    expect([...answeredTraceIds(backend)].filter((id) => !exported.has(id))).toEqual([]);
    expect(api.child.exitCode).toBeNull();
  }, 60_000);
});
