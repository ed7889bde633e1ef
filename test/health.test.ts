import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { connect, type IncomingHttpHeaders } from 'node:http2';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fromBinary } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import {
  Health,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from '../src/gen/grpc/health/v1/health_pb.js';
import { createHealthStatus, type HealthStatus, type ServingStatus } from '../src/rpc/health.js';
import { createGrpcTestTransport } from './fixtures/grpc/create-grpc-test-transport.js';
import { spawnJsonLines } from './fixtures/grpc/spawn-json-lines.js';
import { type GrpcTestServer, startGrpcServer } from './fixtures/grpc/start-grpc-server.js';
import { waitUntil } from './fixtures/grpc/wait-until.js';
import { type GrpcioStubs, generateGrpcioStubs, PYTHON } from './helpers/grpcio.js';

const run = promisify(execFile);
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const healthClientScript = fileURLToPath(
  new URL('./fixtures/grpc/health_client.py', import.meta.url),
);
const backend = BackendService.typeName;
const { SERVING, NOT_SERVING, SERVICE_UNKNOWN } = HealthCheckResponse_ServingStatus;

/** The backend's starting point: NOT_SERVING until it listens. */
function backendHealth(): HealthStatus {
  return createHealthStatus({ '': 'NOT_SERVING', [backend]: 'NOT_SERVING' });
}

/** Wraps `status` to count open onChange subscriptions, i.e. Watch calls still running. */
function countSubscriptions(status: HealthStatus): { status: HealthStatus; active(): number } {
  let active = 0;
  return {
    status: {
      ...status,
      onChange(listener) {
        active += 1;
        const unsubscribe = status.onChange(listener);
        return () => {
          active -= 1;
          unsubscribe();
        };
      },
    },
    active: () => active,
  };
}

/**
 * A Watch of the whole server over raw HTTP/2, with `grpc-timeout` and no deadline of the
 * client's own (Connect's and grpcio's clients end the call at their deadline themselves): how
 * the server ends it. Resolves once the stream has closed.
 */
async function watchWithDeadline(
  baseUrl: string,
  grpcTimeout: string,
): Promise<{ body: Buffer; trailers: IncomingHttpHeaders }> {
  const session = connect(baseUrl);
  try {
    const stream = session.request({
      ':method': 'POST',
      ':path': `/${Health.typeName}/Watch`,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': grpcTimeout,
    });
    const chunks: Buffer[] = [];
    let trailers: IncomingHttpHeaders = {};
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('trailers', (received) => {
      trailers = received;
    });
    // HealthCheckRequest { service: "" } is the empty message.
    stream.end(Buffer.alloc(5));
    await once(stream, 'close', { signal: AbortSignal.timeout(5_000) });
    return { body: Buffer.concat(chunks), trailers };
  } finally {
    session.close();
  }
}

describe('createHealthStatus', () => {
  it('reports set statuses and nothing for unknown services', () => {
    const status = backendHealth();
    status.set(backend, 'SERVING');
    expect(status.get(backend)).toBe('SERVING');
    expect(status.get('')).toBe('NOT_SERVING');
    expect(status.get('unknown.v1.Service')).toBeUndefined();
    expect([...status.entries()]).toEqual([
      ['', 'NOT_SERVING'],
      [backend, 'SERVING'],
    ]);
  });

  it('notifies real changes only, until unsubscribed', () => {
    const status = backendHealth();
    const seen: [string, ServingStatus][] = [];
    const unsubscribe = status.onChange((service, serving) => seen.push([service, serving]));
    status.set('', 'SERVING');
    status.set('', 'SERVING');
    status.set(backend, 'SERVING');
    unsubscribe();
    status.set('', 'NOT_SERVING');
    expect(seen).toEqual([
      ['', 'SERVING'],
      [backend, 'SERVING'],
    ]);
  });

  it('shutdown sets every service NOT_SERVING, then aborts its signal, then ignores set', () => {
    const status = createHealthStatus({ '': 'SERVING', [backend]: 'SERVING' });
    const events: string[] = [];
    status.onChange((service, serving) => events.push(`${service}=${serving}`));
    status.shutdownSignal.addEventListener('abort', () => events.push('shutdown'));
    status.shutdown();
    status.shutdown();
    status.set('', 'SERVING');
    expect(events).toEqual(['=NOT_SERVING', `${backend}=NOT_SERVING`, 'shutdown']);
    expect(status.get('')).toBe('NOT_SERVING');
  });
});

describe('grpc.health.v1.Health on a real h2c server', () => {
  let stubs: GrpcioStubs | undefined;
  let generatedDir: string;
  let server: GrpcTestServer;
  let health: HealthStatus;
  let subscriptions: ReturnType<typeof countSubscriptions>;

  beforeAll(async () => {
    stubs = await generateGrpcioStubs(join(repoRoot, 'proto/grpc/health/v1'), 'health.proto');
    generatedDir = stubs.dir;
    health = backendHealth();
    subscriptions = countSubscriptions(health);
    server = await startGrpcServer(subscriptions.status);
    health.set('', 'SERVING');
    health.set(backend, 'SERVING');
  }, 30_000);

  afterAll(async () => {
    await server?.close();
    await stubs?.remove();
  });

  async function pythonCheck(service: string): Promise<Record<string, string>> {
    const { stdout } = await run(PYTHON, [
      healthClientScript,
      generatedDir,
      String(server.port),
      'check',
      service,
    ]);
    return JSON.parse(stdout) as Record<string, string>;
  }

  it.each([
    { service: '', expected: { status: 'SERVING' } },
    { service: backend, expected: { status: 'SERVING' } },
    { service: 'unknown.v1.Service', expected: { error: 'NOT_FOUND' } },
  ])('grpcio Check($service) answers $expected', async ({ service, expected }) => {
    expect(await pythonCheck(service)).toEqual(expected);
  });

  it('grpcio Check of a very long unknown name still reads NOT_FOUND: the message repeats 200 characters of it', async () => {
    expect(await pythonCheck('x'.repeat(8_000))).toEqual({ error: 'NOT_FOUND' });
  });

  it('grpcio Watch sees the current status, then a change, and ends when the client cancels', async () => {
    const watcher = spawnJsonLines(PYTHON, [
      healthClientScript,
      generatedDir,
      String(server.port),
      'watch',
      backend,
    ]);
    try {
      await watcher.waitForRecords(1);
      health.set(backend, 'NOT_SERVING');
      await watcher.waitForRecords(2);
      health.set(backend, 'SERVING');
      await watcher.waitForRecords(3);
      watcher.child.stdin.end('cancel\n');
      await watcher.waitForRecords(4);
      expect(watcher.records).toEqual([
        { status: 'SERVING' },
        { status: 'NOT_SERVING' },
        { status: 'SERVING' },
        { end: 'CANCELLED' },
      ]);
      expect(await watcher.exited).toBe(0);
      await waitUntil(
        'the server to end the cancelled Watch',
        () => subscriptions.active() === 0,
        3000,
      );
    } finally {
      watcher.child.kill();
      health.set(backend, 'SERVING');
    }
  }, 20_000);

  describe('through a Connect gRPC client', () => {
    let connection: ReturnType<typeof createGrpcTestTransport>;
    let client: ReturnType<typeof createClient<typeof Health>>;

    beforeAll(() => {
      connection = createGrpcTestTransport(server.url);
      client = createClient(Health, connection.transport);
    });
    afterAll(() => connection.close());

    it('Check answers SERVING for the server and the backend service', async () => {
      expect((await client.check({ service: '' })).status).toBe(SERVING);
      expect((await client.check({ service: backend })).status).toBe(SERVING);
    });

    it('Check of an unknown service fails with NOT_FOUND', async () => {
      const error = await client.check({ service: 'unknown.v1.Service' }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.NotFound);
      expect((error as ConnectError).rawMessage).toContain('"unknown.v1.Service"');
    });

    it('Check of a long unknown name repeats its first 200 characters, never half an emoji', async () => {
      // 199 characters, then emoji: the 200th character is the first half of one.
      const service = `${'a'.repeat(199)}${'\u{1F600}'.repeat(50_000)}`;
      const error = await client.check({ service }).catch((e: unknown) => e);
      expect((error as ConnectError).code).toBe(Code.NotFound);
      expect((error as ConnectError).rawMessage).toContain(`"${'a'.repeat(199)}..."`);
    });

    it('List answers every service', async () => {
      const { statuses } = await client.list({});
      expect(Object.fromEntries(Object.entries(statuses).map(([k, v]) => [k, v.status]))).toEqual({
        '': SERVING,
        [backend]: SERVING,
      });
    });

    it('Watch of an unknown service sends SERVICE_UNKNOWN and keeps watching until it is known', async () => {
      const service = 'later.v1.Service';
      const received: HealthCheckResponse_ServingStatus[] = [];
      // Breaking out of the loop does not cancel a Connect stream; aborting its signal does.
      const abort = new AbortController();
      const ended = await (async () => {
        for await (const { status } of client.watch({ service }, { signal: abort.signal })) {
          received.push(status);
          if (status === SERVICE_UNKNOWN) health.set(service, 'NOT_SERVING');
          if (received.length === 2) abort.abort();
        }
      })().catch((e: unknown) => e);
      expect(ConnectError.from(ended).code).toBe(Code.Canceled);
      expect(received).toEqual([SERVICE_UNKNOWN, NOT_SERVING]);
      await waitUntil(
        'the server to end the abandoned Watch',
        () => subscriptions.active() === 0,
        3000,
      );
    });
  });

  it('ends a Watch at the caller’s deadline with DEADLINE_EXCEEDED, as gRPC servers do, not OK', async () => {
    const { body, trailers } = await watchWithDeadline(server.url, '300m');
    // One message (the current status), then the deadline.
    expect(body.readUInt32BE(1)).toBe(body.length - 5);
    expect(fromBinary(HealthCheckResponseSchema, body.subarray(5)).status).toBe(SERVING);
    expect(trailers['grpc-status']).toBe(String(Code.DeadlineExceeded));
    await waitUntil('the server to end the Watch', () => subscriptions.active() === 0, 3000);
  });
});

describe('grpc.health.v1.Health List at its limit', () => {
  it('answers 100 services, the protocol’s limit, and refuses 101 with RESOURCE_EXHAUSTED', async () => {
    const services = Array.from({ length: 99 }, (_, i) => [`svc.v1.S${i}`, 'SERVING'] as const);
    const health = createHealthStatus({ '': 'SERVING', ...Object.fromEntries(services) });
    const server = await startGrpcServer(health);
    const connection = createGrpcTestTransport(server.url);
    try {
      const client = createClient(Health, connection.transport);
      expect(Object.keys((await client.list({})).statuses)).toHaveLength(100);
      health.set('svc.v1.S99', 'SERVING');
      const error = ConnectError.from(await client.list({}).catch((e: unknown) => e));
      expect(error.code).toBe(Code.ResourceExhausted);
      expect(error.rawMessage).toBe(
        '101 services exceed the List limit of 100; use Check or Watch per service',
      );
    } finally {
      connection.close();
      await server.close();
    }
  });
});

describe('HealthStatus.shutdown with open Watch streams', () => {
  it('sends NOT_SERVING to every watcher, then ends their streams', async () => {
    const health = createHealthStatus({ '': 'SERVING', [backend]: 'SERVING' });
    const server = await startGrpcServer(health);
    const connection = createGrpcTestTransport(server.url);
    try {
      const client = createClient(Health, connection.transport);
      const watch = async (service: string) => {
        const received: HealthCheckResponse_ServingStatus[] = [];
        for await (const { status } of client.watch({ service })) {
          received.push(status);
          if (received.length === 1) watching += 1;
        }
        return received;
      };
      let watching = 0;
      const watches = Promise.all([watch(''), watch(backend), watch('unknown.v1.Service')]);
      await waitUntil('three Watch streams to start', () => watching === 3);
      health.shutdown();
      expect(await watches).toEqual([
        [SERVING, NOT_SERVING],
        [SERVING, NOT_SERVING],
        [SERVICE_UNKNOWN],
      ]);
    } finally {
      connection.close();
      await server.close();
    }
  });
});
