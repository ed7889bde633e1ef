import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { connectNodeAdapter, createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import {
  type FrontEnd,
  type MetadataServer,
  startFrontEnd,
  startMetadataServer,
} from '../tools/cloud-run-local/index.js';

const CALLER = 'api@demo-project.iam.gserviceaccount.com';
const execFileAsync = promisify(execFile);

/** Greet on the real grpcio stack over TLS, raw protobuf bytes: name = 1, with_error = 2. */
const PYTHON_GREET = `
import json, sys, grpc
port, ca_file, token, name, with_error = sys.argv[1:6]
credentials = grpc.ssl_channel_credentials(root_certificates=open(ca_file, 'rb').read())
with grpc.secure_channel(f'127.0.0.1:{port}', credentials) as channel:
    greet = channel.unary_unary('/backend_service.v1.BackendService/Greet')
    request = b'\\x0a' + bytes([len(name)]) + name.encode()
    if with_error == 'true':
        request += b'\\x10\\x01'
    metadata = [('authorization', 'Bearer ' + token)] if token else None
    try:
        reply = greet(request, metadata=metadata, timeout=10)
        print(json.dumps({'reply': reply[2:].decode()}))
    except grpc.RpcError as error:
        print(json.dumps({'code': error.code().name}))
`;

describe('a Connect gRPC call through the local Cloud Run front end', () => {
  let metadata: MetadataServer;
  let backend: Http2Server;
  let frontEnd: FrontEnd;
  const seen: { traceparent: string | null; authorization: string | null }[] = [];

  beforeAll(async () => {
    metadata = await startMetadataServer({ serviceAccountEmail: CALLER });
    backend = createServer(
      connectNodeAdapter({
        routes: (router) =>
          router.service(BackendService, {
            greet(request, context) {
              seen.push({
                traceparent: context.requestHeader.get('traceparent'),
                authorization: context.requestHeader.get('authorization'),
              });
              if (request.withError) throw new ConnectError('failed on purpose', Code.Internal);
              return { reply: `Hello ${request.name}!!` };
            },
          }),
      }),
    );
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    frontEnd = await startFrontEnd({
      upstream: `http://127.0.0.1:${(backend.address() as AddressInfo).port}`,
      upstreamProtocol: 'h2c',
      auth: { certsUrl: metadata.certsUrl, allowedEmails: [CALLER] },
    });
  });

  afterAll(async () => {
    await frontEnd.close();
    await metadata.close();
    await new Promise((resolve) => backend.close(resolve));
  });

  function client(baseUrl = frontEnd.url) {
    return createClient(
      BackendService,
      createGrpcTransport({ baseUrl, nodeOptions: { ca: frontEnd.caCertPem } }),
    );
  }

  async function codeOf(call: Promise<unknown>): Promise<Code | undefined> {
    try {
      await call;
      return undefined;
    } catch (error) {
      return ConnectError.from(error).code;
    }
  }

  it('succeeds with a valid ID token, which the backend receives with a rewritten traceparent', async () => {
    const token = metadata.mintIdToken(frontEnd.audience);
    const response = await client().greet(
      { name: 'Ada' },
      {
        headers: {
          authorization: `Bearer ${token}`,
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        },
      },
    );
    expect(response.reply).toBe('Hello Ada!!');
    expect(seen.at(-1)?.authorization).toBe(`Bearer ${token}`);
    expect(seen.at(-1)?.traceparent).toBe(frontEnd.lastRewrite()?.outgoing);
    expect(seen.at(-1)?.traceparent).not.toContain('b7ad6b7169203331');
  });

  it('carries a gRPC error status from the backend to the caller', async () => {
    const headers = { authorization: `Bearer ${metadata.mintIdToken(frontEnd.audience)}` };
    expect(await codeOf(client().greet({ name: 'Ada', withError: true }, { headers }))).toBe(
      Code.Internal,
    );
  });

  it('is UNAUTHENTICATED without a token and PERMISSION_DENIED for a caller not allowed', async () => {
    expect(await codeOf(client().greet({ name: 'Ada' }))).toBe(Code.Unauthenticated);
    const intruder = metadata.mintIdToken(frontEnd.audience, { email: 'intruder@example.com' });
    const headers = { authorization: `Bearer ${intruder}` };
    expect(await codeOf(client().greet({ name: 'Ada' }, { headers }))).toBe(Code.PermissionDenied);
  });

  it('serves a Python grpcio client over TLS: reply, error status, no token', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cloud-run-local-grpcio-'));
    try {
      const caFile = join(dir, 'ca.pem');
      await writeFile(caFile, frontEnd.caCertPem);
      const port = new URL(frontEnd.url).port;
      const greet = async (token: string, withError = false) => {
        const { stdout } = await execFileAsync(
          '/usr/bin/python3',
          ['-c', PYTHON_GREET, port, caFile, token, 'Grace', String(withError)],
          { timeout: 20_000 },
        );
        return JSON.parse(stdout) as { reply?: string; code?: string };
      };
      expect(await greet(metadata.mintIdToken(frontEnd.audience))).toEqual({
        reply: 'Hello Grace!!',
      });
      expect(await greet(metadata.mintIdToken(frontEnd.audience), true)).toEqual({
        code: 'INTERNAL',
      });
      expect(await greet('')).toEqual({ code: 'UNAUTHENTICATED' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('is UNAVAILABLE when the backend is down', async () => {
    const down = await startFrontEnd({ upstream: 'http://127.0.0.1:1', upstreamProtocol: 'h2c' });
    try {
      const transport = createGrpcTransport({
        baseUrl: down.url,
        nodeOptions: { ca: down.caCertPem },
      });
      expect(await codeOf(createClient(BackendService, transport).greet({ name: 'Ada' }))).toBe(
        Code.Unavailable,
      );
    } finally {
      await down.close();
    }
  });
});
