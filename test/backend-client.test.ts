import { createServer } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { Code, ConnectError } from '@connectrpc/connect';
import { metrics, trace } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import { createBackendClient } from '../src/api/backend-client.js';
import { type BackendTarget, parseConfig } from '../src/config.js';
import { createIdTokenCredentials } from '../src/identity/id-token-credentials.js';
import { createHealthStatus } from '../src/rpc/health.js';
import { startGrpcServer } from './fixtures/grpc/start-grpc-server.js';
import { listenH2c } from './helpers/listen-h2c.js';

/*
 * The api's client of the backend, against real h2c servers: what its deadline covers, and when
 * it takes the backend for ready.
 */

const telemetry = { tracer: trace.getTracer('test'), meter: metrics.getMeter('test') };

function targetFor(url: string, env: Record<string, string> = {}): BackendTarget {
  const { backend } = parseConfig({ SERVICE_ROLE: 'api', BACKEND_URL: url, ...env });
  if (!backend) throw new Error('parseConfig gave the api no backend');
  return backend;
}

/** An unsigned JWT that expires an hour from now: the credentials read only its `exp`. */
function idToken(): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'none' })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600 })}.c2ln`;
}

describe('createBackendClient', () => {
  it('counts the time spent getting the first token in BACKEND_TIMEOUT_MS', async () => {
    const TIMEOUT_MS = 2_000;
    const TOKEN_MS = 1_500;
    // A backend that never answers, and keeps the deadline each call announces.
    const deadlines: string[] = [];
    const silent = await listenH2c(
      createServer().on('stream', (stream, headers) => {
        stream.on('error', () => {});
        deadlines.push(String(headers['grpc-timeout']));
      }),
    );
    // The real credentials, from a token source that is slow to answer (within its 3 s cap).
    const credentials = createIdTokenCredentials('https://backend.example', async () => {
      await sleep(TOKEN_MS);
      return idToken();
    });
    const client = createBackendClient(
      targetFor(silent.url, { BACKEND_TIMEOUT_MS: String(TIMEOUT_MS), BACKEND_MAX_ATTEMPTS: '1' }),
      { telemetry, credentials },
    );
    try {
      const started = performance.now();
      const error = await client.greet({ name: 'Ada', withError: false }).then(
        () => undefined,
        (thrown: unknown) => ConnectError.from(thrown),
      );
      const ms = performance.now() - started;
      expect(error?.code).toBe(Code.DeadlineExceeded);
      // The backend is given what is left of the deadline once the token is in: 500 ms at most.
      expect(deadlines).toHaveLength(1);
      const announced = /^(\d+)m$/.exec(deadlines[0] ?? '');
      expect(Number(announced?.[1])).toBeGreaterThan(0);
      expect(Number(announced?.[1])).toBeLessThanOrEqual(TIMEOUT_MS - TOKEN_MS);
      // So the caller has its answer at BACKEND_TIMEOUT_MS, not 1.5 s later.
      expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
      expect(ms).toBeLessThan(TIMEOUT_MS + 1_000);
    } finally {
      client.close();
      await silent.close();
    }
  });

  it('is ready only while the backend reports SERVING, not NOT_SERVING', async () => {
    const health = createHealthStatus({ '': 'NOT_SERVING' });
    const grpc = await startGrpcServer(health);
    const client = createBackendClient(targetFor(grpc.url), { telemetry });
    try {
      expect(await client.readiness()).toEqual({
        ready: false,
        reason: 'its grpc.health.v1 check answered NOT_SERVING',
      });
      health.set('', 'SERVING');
      expect((await client.readiness()).ready).toBe(true);
      // A backend draining says NOT_SERVING before it goes away.
      health.shutdown();
      expect((await client.readiness()).ready).toBe(false);
    } finally {
      client.close();
      await grpc.close();
    }
  });
});
