import { execFile } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { connect, constants } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../src/gen/grpc/health/v1/health_pb.js';
import { type MetadataServer, startMetadataServer } from '../tools/cloud-run-local/index.ts';
import { freePort } from './helpers/free-port.js';
import { eventually, type RoleProcess, startRole } from './helpers/roles.js';

/*
 * The private role under bad input, as a real process from the production build with the
 * in-app token check on (AUTH_VERIFY_TOKENS=true): bytes that are not a gRPC message, messages
 * over the size limit, unknown methods, bad deadlines and bad tokens. Every answer is a gRPC
 * status (no hang, no crash), and the process is still serving at the end.
 */

const run = promisify(execFile);
const GREET = '/backend_service.v1.BackendService/Greet';
const AUDIENCE = 'https://greeter-backend-test.a.run.app';
const CALLER = 'greeter-api@local-project.iam.gserviceaccount.com';
const MAX_TIMEOUT_MS = 700;
const FOUR_MIB = 4 * 1024 * 1024;

type RawAnswer = {
  httpStatus: number;
  grpcStatus: string | undefined;
  grpcMessage: string;
  body: string;
  /** RST_STREAM code the stream closed with (0 = NO_ERROR). */
  rstCode: number | undefined;
  ms: number;
};

/** One request over a fresh h2c connection, sent byte for byte as given. */
async function rawCall(
  url: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer | undefined,
  timeoutMs = 5_000,
): Promise<RawAnswer> {
  const started = performance.now();
  const session = connect(url);
  session.on('error', () => {});
  try {
    const stream = session.request({ ':method': 'POST', ':path': path, ...headers });
    const answer = { httpStatus: 0, grpcStatus: undefined as string | undefined, message: '' };
    const chunks: Buffer[] = [];
    const closed = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no answer to ${path} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      stream.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    const take = (fields: Record<string, unknown>) => {
      if (fields['grpc-status'] !== undefined) answer.grpcStatus = String(fields['grpc-status']);
      if (fields['grpc-message'] !== undefined) answer.message = String(fields['grpc-message']);
    };
    stream.on('response', (fields) => {
      answer.httpStatus = Number(fields[':status']);
      take(fields);
    });
    stream.on('trailers', take);
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', () => {});
    if (body) writeAll(stream, body);
    else stream.end();
    await closed;
    return {
      httpStatus: answer.httpStatus,
      grpcStatus: answer.grpcStatus,
      grpcMessage: decodeURIComponent(answer.message),
      body: Buffer.concat(chunks).toString('utf8'),
      rstCode: stream.rstCode,
      ms: performance.now() - started,
    };
  } finally {
    session.destroy();
  }
}

/** Writes in 64 KiB chunks, respecting flow control, until done or the stream closes. */
function writeAll(stream: ReturnType<ReturnType<typeof connect>['request']>, body: Buffer) {
  let offset = 0;
  const next = () => {
    while (offset < body.length && !stream.closed) {
      const chunk = body.subarray(offset, offset + 64 * 1024);
      offset += chunk.length;
      if (!stream.write(chunk)) {
        stream.once('drain', next);
        return;
      }
    }
    if (!stream.closed) stream.end();
  };
  next();
}

/** The 5-byte gRPC message prefix (flags, big-endian length) and the message. */
function envelope(message: Buffer, declaredLength = message.length, flags = 0): Buffer {
  const prefix = Buffer.alloc(5);
  prefix[0] = flags;
  prefix.writeUInt32BE(declaredLength, 1);
  return Buffer.concat([prefix, message]);
}

/** GreetRequest { name: "Ada" } in the protobuf wire format. */
const GREET_ADA = Buffer.from([0x0a, 0x03, 0x41, 0x64, 0x61]);

function base64url(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

describe('the private role under bad input (token check on)', () => {
  let metadata: MetadataServer;
  let stranger: MetadataServer;
  let backend: RoleProcess;
  let token: string;
  let grpc: Record<string, string>;

  beforeAll(async () => {
    metadata = await startMetadataServer({ serviceAccountEmail: CALLER });
    stranger = await startMetadataServer({ serviceAccountEmail: CALLER });
    backend = await startRole('backend', {
      env: {
        AUTH_VERIFY_TOKENS: 'true',
        AUTH_AUDIENCE: AUDIENCE,
        AUTH_CERTS_URL: metadata.certsUrl,
        AUTH_ALLOWED_CALLERS: CALLER,
        GRPC_MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
      },
    });
    token = metadata.mintIdToken(AUDIENCE);
    grpc = {
      'content-type': 'application/grpc',
      te: 'trailers',
      authorization: `Bearer ${token}`,
    };
  });
  afterAll(async () => {
    await backend?.stop();
    await metadata?.close();
    await stranger?.close();
  });

  describe('bytes that are not what they claim, with a valid token', () => {
    it.each([
      // Connect-ES decides these codes; gRPC itself (grpc-go) also answers INTERNAL for a
      // message it cannot unmarshal.
      [
        'bytes that are not protobuf',
        GREET,
        envelope(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])),
        '13',
        'parse binary',
      ],
      [
        'a string field that is not UTF-8',
        GREET,
        envelope(Buffer.from([0x0a, 0x02, 0xc3, 0x28])),
        '13',
        'parse binary',
      ],
      [
        'a prefix promising more bytes than sent',
        GREET,
        envelope(GREET_ADA, 100),
        '3',
        'incomplete envelope',
      ],
      [
        'a compressed flag without grpc-encoding',
        GREET,
        envelope(GREET_ADA, GREET_ADA.length, 1),
        '13',
        'compressed',
      ],
      [
        'a prefix declaring 2 GiB',
        GREET,
        envelope(GREET_ADA, 0x7fffffff),
        '8',
        'larger than configured readMaxBytes 4194304',
      ],
      [
        'two messages to a unary method',
        GREET,
        Buffer.concat([envelope(GREET_ADA), envelope(GREET_ADA)]),
        '12',
        'extra input message',
      ],
      ['no message at all', GREET, Buffer.alloc(0), '12', 'missing input message'],
      [
        'an unknown method',
        '/backend_service.v1.BackendService/NoSuchMethod',
        envelope(GREET_ADA),
        '12',
        'unknown method /backend_service.v1.BackendService/NoSuchMethod',
      ],
      [
        'an unknown service',
        '/nope.v1.Nope/Greet',
        envelope(GREET_ADA),
        '12',
        'unknown method /nope.v1.Nope/Greet',
      ],
      ['a valid message with an empty name', GREET, envelope(Buffer.alloc(0)), '3', 'name'],
    ] as const)('%s → grpc-status %s', async (_case, path, body, status, message) => {
      const answer = await rawCall(backend.url, path, grpc, body);
      expect(answer.httpStatus).toBe(200);
      expect(answer.grpcStatus).toBe(status);
      expect(answer.grpcMessage).toContain(message);
    });

    it('keeps the access line of a 30,000-character path and user agent small, naming their start', async () => {
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4738';
      // Together under the 64 KiB header list the backend takes.
      const path = `/nope.v1.Nope/${'M'.repeat(30_000)}`;
      const answer = await rawCall(
        backend.url,
        path,
        {
          ...grpc,
          'user-agent': `ua-${'u'.repeat(30_000)}`,
          traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        },
        envelope(GREET_ADA),
      );
      expect(answer.grpcStatus).toBe('12');
      const line = await eventually(() => {
        const found = backend
          .logs()
          .find((entry) => String(entry['logging.googleapis.com/trace']).endsWith(traceId));
        expect(found).toBeDefined();
        return found as Record<string, unknown>;
      });
      const httpRequest = line.httpRequest as { requestUrl: string; userAgent: string };
      expect(httpRequest.requestUrl).toBe(`${path.slice(0, 4_096)}...`);
      expect(httpRequest.userAgent).toBe(`ua-${'u'.repeat(1_021)}...`);
      expect(line.message).toBe(`POST ${path.slice(0, 4_096)}... UNIMPLEMENTED`);
      expect(JSON.stringify(line).length).toBeLessThan(16_000);
    });

    it.each([
      ['before sending the message', Buffer.alloc(0), '4bf92f3577b34da6a3ce929d0e0e4736'],
      [
        'part way through it',
        envelope(GREET_ADA).subarray(0, 7),
        '4bf92f3577b34da6a3ce929d0e0e4737',
      ],
    ])(
      'takes a call its client cancels %s as CANCELLED, not as one sent without it',
      async (_case, sent, traceId) => {
        // Node's clients end the stream, then reset it: the server first sees a call that ended
        // with no message (a refusal, UNIMPLEMENTED), then the reset that says why.
        const session = connect(backend.url);
        session.on('error', () => {});
        try {
          const stream = session.request({
            ':method': 'POST',
            ':path': GREET,
            ...grpc,
            traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
          });
          stream.on('error', () => {});
          if (sent.length > 0) stream.write(sent);
          await new Promise((resolve) => setTimeout(resolve, 50));
          stream.close(constants.NGHTTP2_CANCEL);
          const line = await eventually(() => {
            const found = backend
              .logs()
              .find((entry) => String(entry['logging.googleapis.com/trace']).endsWith(traceId));
            expect(found).toBeDefined();
            return found;
          });
          // Nothing was sent: 499, as the api logs a caller that left.
          expect(line).toMatchObject({
            severity: 'INFO',
            message: `POST ${GREET} CANCELLED`,
            httpRequest: { status: 499 },
          });
        } finally {
          session.destroy();
        }
      },
    );

    it('answers a message over 4 MiB with RESOURCE_EXHAUSTED at once and stops the upload', async () => {
      const answer = await rawCall(
        backend.url,
        GREET,
        grpc,
        envelope(Buffer.alloc(FOUR_MIB + 1, 0x41)),
      );
      expect(answer.grpcStatus).toBe('8');
      expect(answer.grpcMessage).toContain('larger than configured readMaxBytes');
      // The server resets the stream with NO_ERROR once it has answered (RFC 9113 §8.1):
      // the client does not stall on flow control with the rest of its 4 MiB.
      expect(answer.rstCode).toBe(constants.NGHTTP2_NO_ERROR);
      expect(answer.ms).toBeLessThan(2_000);
    });

    it('accepts a message of exactly 4 MiB (then refuses the name, a field rule)', async () => {
      const name = Buffer.alloc(FOUR_MIB - 5, 0x41);
      const message = Buffer.concat([Buffer.from([0x0a, 0xfb, 0xff, 0xff, 0x01]), name]);
      expect(message.length).toBe(FOUR_MIB);
      const answer = await rawCall(backend.url, GREET, grpc, envelope(message));
      expect(answer.grpcStatus).toBe('3');
      expect(answer.grpcMessage).toContain('name');
    });

    it.each([
      ['soon', 'a word'],
      ['123456789m', 'nine digits'],
      ['-1S', 'a negative value'],
      ['1s', 'a unit in the wrong case'],
    ])('refuses grpc-timeout %s (%s) with INVALID_ARGUMENT', async (value) => {
      const answer = await rawCall(
        backend.url,
        GREET,
        { ...grpc, 'grpc-timeout': value },
        envelope(GREET_ADA),
      );
      expect(answer.grpcStatus).toBe('3');
      expect(answer.grpcMessage).toContain('invalid grpc timeout');
    });

    it('answers the Connect protocol with its own codes: bad JSON 400, bad binary 500', async () => {
      const connectHeaders = { authorization: `Bearer ${token}` };
      const json = await rawCall(
        backend.url,
        GREET,
        { ...connectHeaders, 'content-type': 'application/json' },
        Buffer.from('{"name":'),
      );
      expect(json.httpStatus).toBe(400);
      expect(JSON.parse(json.body)).toMatchObject({ code: 'invalid_argument' });
      const binary = await rawCall(
        backend.url,
        GREET,
        { ...connectHeaders, 'content-type': 'application/proto' },
        Buffer.from([0xff, 0xff, 0xff]),
      );
      expect(binary.httpStatus).toBe(500);
      expect(JSON.parse(binary.body)).toMatchObject({ code: 'internal' });
      // Errors from the handler are logged with the status they went out with, as Cloud Logging
      // shows it (bytes that do not parse never reach the handler, nor its access line).
      for (const [body, status] of [
        ['{"name":" "}', 400],
        ['{"name":"Ada","withError":true}', 500],
      ] as const) {
        const answer = await rawCall(
          backend.url,
          GREET,
          { ...connectHeaders, 'content-type': 'application/json' },
          Buffer.from(body),
        );
        expect(answer.httpStatus).toBe(status);
      }
      await expect
        .poll(() =>
          backend
            .logs()
            .map((line) => line.httpRequest as { requestUrl: string; status: number } | undefined)
            .filter((access) => access?.requestUrl === GREET)
            .map((access) => access?.status),
        )
        .toEqual(expect.arrayContaining([400, 500]));
      const unknown = await rawCall(
        backend.url,
        '/nope.v1.Nope/Greet',
        { ...connectHeaders, 'content-type': 'application/json' },
        Buffer.from('{}'),
      );
      expect(unknown.httpStatus).toBe(404);
    });

    it('answers a malformed :authority with HTTP 400 on every protocol, and keeps serving', async () => {
      for (const authority of ['localhost:99999', '[']) {
        // application/grpc is the unary fast path's: it refuses the same way.
        for (const contentType of [
          'application/json',
          'application/grpc-web+proto',
          'application/grpc',
        ]) {
          const answer = await rawCall(
            backend.url,
            GREET,
            { ':authority': authority, 'content-type': contentType },
            Buffer.from('{}'),
          );
          expect(answer.httpStatus, `${authority} ${contentType}`).toBe(400);
          expect(answer.body).toContain(':authority (Host) header must be a host');
        }
        const watch = await rawCall(
          backend.url,
          '/grpc.health.v1.Health/Watch',
          { ':authority': authority, ...grpc },
          envelope(Buffer.alloc(0)),
        );
        expect(watch.httpStatus).toBe(400);
      }
      const health = createClient(Health, createGrpcTransport({ baseUrl: backend.url }));
      expect((await health.check({ service: '' })).status).toBe(
        HealthCheckResponse_ServingStatus.SERVING,
      );
    });

    it('answers an unsupported content type with HTTP 415', async () => {
      const answer = await rawCall(
        backend.url,
        GREET,
        { 'content-type': 'text/plain' },
        Buffer.from('hi'),
      );
      expect(answer.httpStatus).toBe(415);
    });

    it('gives Python grpcio UNIMPLEMENTED for an unknown method and INTERNAL for bad bytes', async () => {
      const script = `
import grpc, json, sys
with grpc.insecure_channel(sys.argv[1]) as channel:
    call = channel.unary_unary(sys.argv[2])
    try:
        call(bytes.fromhex(sys.argv[3]), timeout=5, metadata=[("authorization", sys.argv[4])])
        print(json.dumps({"code": "OK"}))
    except grpc.RpcError as error:
        print(json.dumps({"code": error.code().name, "details": error.details()}))
`;
      const python = async (path: string, hex: string) =>
        JSON.parse(
          (
            await run('/usr/bin/python3', [
              '-c',
              script,
              `127.0.0.1:${backend.port}`,
              path,
              hex,
              `Bearer ${token}`,
            ])
          ).stdout,
        ) as { code: string; details: string };
      expect(await python('/nope.v1.Nope/Greet', GREET_ADA.toString('hex'))).toEqual({
        code: 'UNIMPLEMENTED',
        details: 'unknown method /nope.v1.Nope/Greet',
      });
      expect((await python(GREET, 'ffffffff0f')).code).toBe('INTERNAL');
      expect((await python(GREET, GREET_ADA.toString('hex'))).code).toBe('OK');
    });
  });

  describe(`deadlines over GRPC_MAX_TIMEOUT_MS (${MAX_TIMEOUT_MS} ms) are capped, not refused`, () => {
    it('a Greet with a 2-hour deadline is served', async () => {
      const answer = await rawCall(
        backend.url,
        GREET,
        { ...grpc, 'grpc-timeout': '2H' },
        envelope(GREET_ADA),
      );
      expect(answer.grpcStatus).toBe('0');
      const connectAnswer = await rawCall(
        backend.url,
        GREET,
        {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'connect-timeout-ms': '7200000',
        },
        Buffer.from('{"name":"Ada"}'),
      );
      expect(connectAnswer.httpStatus).toBe(200);
    });

    it('a health Watch (a call that runs until its deadline) with a 2-hour deadline ends at the cap', async () => {
      const client = createClient(Health, createGrpcTransport({ baseUrl: backend.url }));
      const started = performance.now();
      const received: number[] = [];
      const outcome = await (async () => {
        for await (const { status } of client.watch(
          { service: '' },
          { timeoutMs: 2 * 60 * 60_000 },
        )) {
          received.push(status);
        }
        return 'ended';
      })().catch((error: unknown) => Code[ConnectError.from(error).code]);
      const elapsed = performance.now() - started;
      expect(received.length).toBeGreaterThan(0);
      // The server ends the stream at its cap (the handler's signal aborts); the status it
      // ends with is the Watch handler's choice (see docs/reliability.md).
      expect(['ended', 'DeadlineExceeded']).toContain(outcome);
      expect(elapsed).toBeGreaterThanOrEqual(MAX_TIMEOUT_MS - 50);
      expect(elapsed).toBeLessThan(MAX_TIMEOUT_MS + 1_500);
    });
  });

  describe('tokens', () => {
    const greetWith = async (authorization: string | undefined) => {
      const transport = createGrpcTransport({ baseUrl: backend.url });
      const client = createClient(BackendService, transport);
      try {
        await client.greet(
          { name: 'Ada' },
          authorization === undefined ? {} : { headers: { authorization } },
        );
        return 'OK';
      } catch (error) {
        const connectError = ConnectError.from(error);
        // The reason, never the token or its claims quoted back.
        expect(connectError.rawMessage).not.toMatch(/eyJ|"aud"|@/);
        return `${Code[connectError.code]}: ${connectError.rawMessage}`;
      }
    };
    const valid = () => metadata.mintIdToken(AUDIENCE);

    it.each([
      ['no authorization header', () => undefined, 'Unauthenticated: missing bearer token'],
      [
        'the Basic scheme',
        () => `Basic ${Buffer.from('api:secret').toString('base64')}`,
        'Unauthenticated: missing bearer token',
      ],
      ['the token without a scheme', () => valid(), 'Unauthenticated: missing bearer token'],
      ['Bearer with nothing after it', () => 'Bearer ', 'Unauthenticated: missing bearer token'],
      ['two tokens', () => `Bearer ${valid()} ${valid()}`, 'Unauthenticated: missing bearer token'],
      ['a string that is not a JWT', () => 'Bearer not-a-jwt', 'Unauthenticated: invalid ID token'],
      [
        'three parts that are not base64 JSON',
        () => 'Bearer a.b.c',
        'Unauthenticated: invalid ID token',
      ],
      [
        'alg "none" with a valid payload and no signature',
        () => `Bearer ${base64url({ alg: 'none', typ: 'JWT' })}.${valid().split('.')[1]}.`,
        'Unauthenticated: invalid ID token',
      ],
      [
        'a valid header and payload with a forged signature',
        () => {
          const [header, payload] = valid().split('.');
          return `Bearer ${header}.${payload}.${Buffer.from('forged').toString('base64url')}`;
        },
        'Unauthenticated: invalid ID token',
      ],
      [
        'a payload swapped under a valid signature',
        () => {
          const [header, , signature] = valid().split('.');
          const other = metadata.mintIdToken(AUDIENCE, {
            email: 'other@x.iam.gserviceaccount.com',
          });
          return `Bearer ${header}.${other.split('.')[1]}.${signature}`;
        },
        'Unauthenticated: invalid ID token',
      ],
      [
        'a token signed by another key',
        () => `Bearer ${stranger.mintIdToken(AUDIENCE)}`,
        'Unauthenticated: invalid ID token',
      ],
      [
        'an expired token',
        () =>
          `Bearer ${metadata.mintIdToken(AUDIENCE, {
            issuedAt: Math.floor(Date.now() / 1000) - 7200,
            expiresInSeconds: 3600,
          })}`,
        'Unauthenticated: invalid ID token',
      ],
      [
        'a token issued in the future',
        () =>
          `Bearer ${metadata.mintIdToken(AUDIENCE, { issuedAt: Math.floor(Date.now() / 1000) + 7200 })}`,
        'Unauthenticated: invalid ID token',
      ],
      [
        'a token for another audience',
        () => `Bearer ${metadata.mintIdToken('https://other.a.run.app')}`,
        'Unauthenticated: invalid ID token',
      ],
      [
        'a 9 KiB token',
        () => `Bearer ${'a'.repeat(9 * 1024)}`,
        'Unauthenticated: invalid ID token: too long',
      ],
      [
        'a valid token of a caller not allowed',
        () =>
          `Bearer ${metadata.mintIdToken(AUDIENCE, { email: 'intruder@other.iam.gserviceaccount.com' })}`,
        'PermissionDenied: this caller is not allowed',
      ],
      [
        // The identity endpoint's default format, and IAM's generateIdToken by default.
        'a valid token that names no email',
        () => `Bearer ${metadata.mintIdToken(AUDIENCE, { includeEmail: false })}`,
        'PermissionDenied: this caller is not allowed',
      ],
      ['a valid token', () => `Bearer ${valid()}`, 'OK'],
      ['a valid token with a lower-case scheme', () => `bearer ${valid()}`, 'OK'],
    ])('%s → %s', async (_case, authorization, expected) => {
      expect(await greetWith(authorization())).toContain(expected);
    });

    it('checks the token before reading the body: no token and a bad body is UNAUTHENTICATED', async () => {
      const noToken = { 'content-type': 'application/grpc', te: 'trailers' };
      const garbage = await rawCall(
        backend.url,
        GREET,
        noToken,
        envelope(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])),
      );
      expect(garbage.grpcStatus).toBe('16');
      // 5 MiB without a token: refused on the headers, the upload stopped, nothing buffered.
      const big = await rawCall(
        backend.url,
        GREET,
        noToken,
        envelope(Buffer.alloc((5 * FOUR_MIB) / 4)),
      );
      expect(big.grpcStatus).toBe('16');
      expect(big.rstCode).toBe(constants.NGHTTP2_NO_ERROR);
      expect(big.ms).toBeLessThan(2_000);
    });

    it('needs no token for health and reflection', async () => {
      const client = createClient(
        Health,
        createConnectTransport({ baseUrl: backend.url, httpVersion: '2' }),
      );
      expect((await client.check({ service: '' })).status).toBe(
        HealthCheckResponse_ServingStatus.SERVING,
      );
    });

    it('logs each refused call once at info, without the token', () => {
      const refused = backend
        .logs()
        .filter((line) => String(line.message).startsWith('call refused'));
      expect(refused.length).toBeGreaterThanOrEqual(15);
      expect(refused.every((line) => line.severity === 'INFO')).toBe(true);
      expect(JSON.stringify(backend.logs())).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/);
    });
  });

  it('is still serving after all of it, and wrote nothing to stderr', async () => {
    expect(backend.child.exitCode).toBeNull();
    const answer = await rawCall(backend.url, GREET, grpc, envelope(GREET_ADA));
    expect(answer.grpcStatus).toBe('0');
    expect(answer.body).toContain('Hello Ada!!');
    expect(backend.stderr()).toBe('');
  });
});

describe('the token check when the signing certificates cannot be fetched or used', () => {
  /** An AUTH_CERTS_URL serving Google's v3 format (JWK), which the check cannot use. */
  async function jwkCertsUrl(): Promise<{ url: string; close(): Promise<void> }> {
    const server = createHttpServer((_, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ keys: [{ kid: 'k1', kty: 'RSA', n: 'xyz', e: 'AQAB' }] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}/oauth2/v3/certs`,
      close: () => new Promise((resolve) => server.close(() => resolve())),
    };
  }

  it.each([
    ['unreachable', undefined, 'ECONNREFUSED'],
    ['answering JWK (v3), not PEM (v1)', jwkCertsUrl, 'oauth2/v1/certs'],
  ])(
    '%s: answers UNAVAILABLE (our fault, retryable), not UNAUTHENTICATED; the WARNING line, not the caller, says what to fix',
    async (_, serve, fix) => {
      const metadata = await startMetadataServer({ serviceAccountEmail: CALLER });
      const served = await serve?.();
      const certsUrl = served?.url ?? `http://127.0.0.1:${await freePort()}/certs`;
      const backend = await startRole('backend', {
        env: { AUTH_VERIFY_TOKENS: 'true', AUTH_AUDIENCE: AUDIENCE, AUTH_CERTS_URL: certsUrl },
      });
      try {
        const client = createClient(BackendService, createGrpcTransport({ baseUrl: backend.url }));
        const error = await client
          .greet(
            { name: 'Ada' },
            { headers: { authorization: `Bearer ${metadata.mintIdToken(AUDIENCE)}` } },
          )
          .catch((e: unknown) => ConnectError.from(e));
        expect(error).toBeInstanceOf(ConnectError);
        expect((error as ConnectError).code).toBe(Code.Unavailable);
        // Anyone may send a token: where the keys are and why they failed stays in the log.
        expect((error as ConnectError).rawMessage).toMatch(/^cannot check ID tokens right now/);
        expect((error as ConnectError).rawMessage).not.toMatch(/127\.0\.0\.1|AUTH_CERTS_URL/);
        const line = await eventually(() => {
          const found = backend
            .logs()
            .find((entry) => String(entry.message).startsWith('call refused'));
          expect(found).toBeDefined();
          return found;
        });
        expect(line).toMatchObject({ severity: 'WARNING', code: 'Unavailable' });
        expect(line?.message).toContain(certsUrl);
        expect(line?.message).toContain('(AUTH_CERTS_URL)');
        expect(line?.message).toContain(fix);
      } finally {
        await backend.stop();
        await metadata.close();
        await served?.close();
      }
    },
  );
});
