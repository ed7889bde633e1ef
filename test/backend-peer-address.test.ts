import { execFile } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import {
  createServer,
  type Http2ServerRequest,
  type Http2Session,
  connect as http2Connect,
} from 'node:http2';
import { connect as netConnect, Socket } from 'node:net';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createClient } from '@connectrpc/connect';
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { createNetworkPeers } from '../src/telemetry/network-peer.js';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { type GrpcioStubs, generateGreeterStubs, PYTHON } from './helpers/grpcio.js';
import { UNKNOWN_METHOD } from './helpers/http.js';
import { listenH2c } from './helpers/listen-h2c.js';
import { eventually, type RoleProcess, startRole } from './helpers/roles.js';
import { newTraceParent } from './helpers/traces.js';

/*
 * The backend's SERVER span carries its caller's socket, `network.peer.address` and
 * `network.peer.port`, and its access line the address as `httpRequest.remoteIp`: on both of its
 * paths (unary gRPC served directly, everything else by Connect's adapter) and for an unknown
 * method. The backend role as it runs, exporting to a local OTLP receiver; real clients, whose
 * own end of the connection gives the port to expect.
 */

const run = promisify(execFile);

let receiver: OtlpReceiver;
let backend: RoleProcess;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
  backend = await startRole('backend', {
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      GOOGLE_CLOUD_PROJECT: 'test-project',
    },
  });
});
afterAll(async () => {
  await backend?.stop();
  await receiver?.close();
});

async function serverSpanOf(traceId: string) {
  const spans = await receiver.waitForSpans((all) =>
    all.some((span) => span.traceId === traceId && span.kind === 'SERVER'),
  );
  const span = spans.find((found) => found.traceId === traceId && found.kind === 'SERVER');
  if (!span) throw new Error(`no SERVER span in trace ${traceId}`);
  return span;
}

function accessLineOf(traceId: string): Promise<Record<string, unknown>> {
  return eventually(() => {
    const line = backend
      .logs()
      .find(
        (found) =>
          found['logging.googleapis.com/trace'] === `projects/test-project/traces/${traceId}` &&
          found.httpRequest !== undefined,
      );
    if (!line) throw new Error(`no access line in trace ${traceId}`);
    return line;
  });
}

async function expectPeer(traceId: string, port: number | undefined): Promise<void> {
  expect(port).toBeTypeOf('number');
  const span = await serverSpanOf(traceId);
  expect(span.attributes['network.peer.address']).toBe('127.0.0.1');
  expect(span.attributes['network.peer.port']).toBe(port);
  const line = await accessLineOf(traceId);
  expect(line.httpRequest).toMatchObject({ remoteIp: '127.0.0.1' });
}

/** Connect's transports, each on a connection of its own whose local port is kept. */
const TRANSPORTS = {
  'gRPC (the unary fast path)': createGrpcTransport,
  'gRPC-Web (Connect’s adapter)': createGrpcWebTransport,
  'the Connect protocol (Connect’s adapter)': createConnectTransport,
};

describe.each(Object.entries(TRANSPORTS))('a Greet over %s', (_name, createTransport) => {
  it('records the client’s address and port', async () => {
    const sockets: Socket[] = [];
    const transport = createTransport({
      baseUrl: backend.url,
      httpVersion: '2',
      nodeOptions: {
        createConnection: () => {
          const socket = netConnect(backend.port, '127.0.0.1');
          sockets.push(socket);
          return socket;
        },
      },
    });
    const parent = newTraceParent();
    const reply = await createClient(BackendService, transport).greet(
      { name: 'Peer' },
      { headers: { traceparent: parent.header } },
    );
    expect(reply.reply).toContain('Peer');
    expect(sockets).toHaveLength(1);
    await expectPeer(parent.traceId, sockets[0]?.localPort);
    for (const socket of sockets) socket.destroy();
  });
});

describe('a gRPC call to a method the backend does not have', () => {
  it('records the client’s address and port', async () => {
    const session = http2Connect(backend.url);
    try {
      await once(session, 'connect');
      const parent = newTraceParent();
      const stream = session.request({
        ':method': 'POST',
        ':path': `/${UNKNOWN_METHOD}`,
        'content-type': 'application/grpc',
        te: 'trailers',
        traceparent: parent.header,
      });
      stream.end(Buffer.alloc(5));
      const [headers] = (await once(stream, 'response')) as [Record<string, string>];
      stream.resume();
      expect(headers['grpc-status']).toBe('12');
      await expectPeer(parent.traceId, session.socket.localPort);
    } finally {
      session.close();
    }
  });
});

describe('a Greet from Python’s grpcio', () => {
  let stubs: GrpcioStubs;
  beforeAll(async () => {
    stubs = await generateGreeterStubs();
  });
  afterAll(() => stubs?.remove());

  it('records the client’s address and port', async () => {
    const parent = newTraceParent();
    const { stdout } = await run(
      PYTHON,
      [
        'test/fixtures/python/greet_peer_client.py',
        stubs.dir,
        `127.0.0.1:${backend.port}`,
        parent.header,
      ],
      { timeout: 20_000 },
    );
    const { reply, localPort } = JSON.parse(stdout) as { reply: string; localPort: number };
    expect(reply).toContain('Python');
    await expectPeer(parent.traceId, localPort);
  });
});

describe('the peers of the backend’s connections', () => {
  it('are known while a connection is open, and not kept once it closes', async () => {
    // The session, once closed, can only be found by the garbage collector if nothing keeps it.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const peers = createNetworkPeers();
    const seen: unknown[] = [];
    let closed: WeakRef<Http2Session> | undefined;
    const server = createServer((request, response) => {
      seen.push(peers.of(request));
      response.end();
    });
    server.on('session', (session) => {
      peers.add(session);
      closed = new WeakRef(session);
    });
    const listening = await listenH2c(server);
    const session = http2Connect(listening.url);
    try {
      await once(session, 'connect');
      const stream = session.request({ ':path': '/' });
      stream.end();
      stream.resume();
      await once(stream, 'end');
      expect(seen).toEqual([{ address: '127.0.0.1', port: session.socket.localPort }]);
      session.close();
      await once(session, 'close');
      await eventually(async () => {
        gc();
        await new Promise((resolve) => setImmediate(resolve));
        expect(closed?.deref()).toBeUndefined();
      });
    } finally {
      session.destroy();
      await listening.close();
    }
  });

  it('are unknown for a connection whose socket closed before its session was seen', () => {
    const peers = createNetworkPeers();
    // A socket that is not connected (any more) has no remote address or port.
    const session = Object.assign(new EventEmitter(), { socket: new Socket() });
    peers.add(session as unknown as Http2Session);
    const request = { stream: { session } } as unknown as Http2ServerRequest;
    expect(peers.of(request)).toBeUndefined();
  });
});
