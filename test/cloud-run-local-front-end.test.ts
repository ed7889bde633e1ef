import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from 'node:http';
import {
  type ClientHttp2Session,
  connect,
  constants,
  createServer as createH2cServer,
  type Http2Server,
} from 'node:http2';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type FrontEnd,
  type MetadataServer,
  startFrontEnd,
  startMetadataServer,
} from '../tools/cloud-run-local/index.js';
import { waitUntil } from './fixtures/grpc/wait-until.js';

const CALLER = 'api@demo-project.iam.gserviceaccount.com';
const CLIENT_TRACE_PARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

interface Echo {
  headers: Record<string, string>;
  body: string;
}

interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  /** The response was a single HEADERS frame with END_STREAM (gRPC trailers-only). */
  headersOnly: boolean;
  body: string;
  trailers: IncomingHttpHeaders | undefined;
}

/** An h2c container that echoes request headers and body as JSON and ends with trailers. */
async function startH2cEcho() {
  const server: Http2Server = createH2cServer();
  const stats = { sessions: 0, requests: 0 };
  /** RST_STREAM codes of closed `/hang` streams. */
  const hangs: (number | undefined)[] = [];
  server.on('session', () => stats.sessions++);
  server.on('stream', (stream, headers) => {
    stats.requests++;
    if (headers[':path'] === '/hang') {
      stream.respond({ ':status': 200 });
      stream.write('started');
      stream.on('close', () => hangs.push(stream.rstCode));
      return;
    }
    if (headers[':path'] === '/trailers-only') {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '7' },
        { endStream: true },
      );
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/json' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => {
        stream.sendTrailers({ 'grpc-status': '0', 'x-echo-trailer': 'done' });
      });
      const echo: Echo = { headers: { ...headers } as Record<string, string>, body: '' };
      echo.body = Buffer.concat(chunks).toString('utf8');
      stream.end(JSON.stringify(echo));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { server, stats, hangs, url };
}

/** An HTTP/1.1 container that echoes request headers and body as JSON. */
async function startHttp1Echo() {
  const server: Server = createHttpServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const echo: Echo = {
        headers: request.headers as Record<string, string>,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(echo));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { server, url };
}

function h2Request(
  session: ClientHttp2Session,
  headers: Record<string, string>,
  body?: string,
): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': body ? 'POST' : 'GET', ...headers });
    const answer: H2Answer = {
      status: 0,
      headers: {},
      headersOnly: false,
      body: '',
      trailers: undefined,
    };
    stream.on('response', (received, flags) => {
      answer.status = Number(received[':status']);
      answer.headers = received;
      answer.headersOnly = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on('trailers', (trailers) => {
      answer.trailers = trailers;
    });
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      answer.body += chunk;
    });
    stream.on('end', () => resolve(answer));
    stream.on('error', reject);
    stream.end(body);
  });
}

function echoOf(answer: { body: string }): Echo {
  return JSON.parse(answer.body) as Echo;
}

describe('front end with IAM (h2c upstream)', () => {
  let metadata: MetadataServer;
  let echo: Awaited<ReturnType<typeof startH2cEcho>>;
  let frontEnd: FrontEnd;
  let client: ClientHttp2Session;

  beforeAll(async () => {
    metadata = await startMetadataServer({ serviceAccountEmail: CALLER });
    echo = await startH2cEcho();
    frontEnd = await startFrontEnd({
      upstream: echo.url,
      upstreamProtocol: 'h2c',
      auth: { certsUrl: metadata.certsUrl, allowedEmails: [CALLER] },
    });
    client = connect(frontEnd.url, { ca: frontEnd.caCertPem });
    await once(client, 'connect');
  });

  afterAll(async () => {
    client.close();
    await frontEnd.close();
    await metadata.close();
    await new Promise((resolve) => echo.server.close(resolve));
  });

  const bearer = (token: string) => ({ ':path': '/echo', authorization: `Bearer ${token}` });

  it('serves HTTP/2 over TLS on localhost, with the audience defaulting to its URL', () => {
    expect(frontEnd.url).toMatch(/^https:\/\/localhost:\d+$/);
    expect(frontEnd.audience).toBe(frontEnd.url);
    expect(client.alpnProtocol).toBe('h2');
  });

  it.each([
    ['no token', () => ({ ':path': '/echo' }), /Bearer/],
    ['a malformed token', () => bearer('not-a-jwt'), /not a JWT/],
    [
      'an expired token',
      () =>
        bearer(
          metadata.mintIdToken(frontEnd.audience, {
            issuedAt: Math.floor(Date.now() / 1000) - 3700,
          }),
        ),
      /expired/,
    ],
    [
      'another audience',
      () => bearer(metadata.mintIdToken('https://other-service-xyz-uc.a.run.app')),
      /audience/,
    ],
    [
      'a tampered payload',
      () => {
        const [header, , signature] = metadata.mintIdToken(frontEnd.audience).split('.');
        const forged = metadata.mintIdToken(frontEnd.audience, { expiresInSeconds: 7200 });
        return bearer(`${header}.${forged.split('.')[1]}.${signature}`);
      },
      /signature/,
    ],
  ])('answers 401 to %s without reaching the container', async (_, headers, reason) => {
    const before = echo.stats.requests;
    const answer = await h2Request(client, headers());
    expect(answer.status).toBe(401);
    expect(answer.headers['www-authenticate']).toBe('Bearer');
    expect(answer.body).toMatch(reason);
    expect(echo.stats.requests).toBe(before);
  });

  it('answers 401 to a token signed by another key', async () => {
    const stranger = await startMetadataServer({ serviceAccountEmail: CALLER });
    try {
      const answer = await h2Request(client, bearer(stranger.mintIdToken(frontEnd.audience)));
      expect(answer.status).toBe(401);
    } finally {
      await stranger.close();
    }
  });

  it('answers 403 to a valid token of a caller that may not invoke', async () => {
    const before = echo.stats.requests;
    const token = metadata.mintIdToken(frontEnd.audience, {
      email: 'intruder@demo-project.iam.gserviceaccount.com',
    });
    const answer = await h2Request(client, bearer(token));
    expect(answer.status).toBe(403);
    expect(answer.body).toContain('intruder@');
    expect(echo.stats.requests).toBe(before);
  });

  it('forwards a valid call with its authorization header and Cloud Run forwarding headers', async () => {
    const token = metadata.mintIdToken(frontEnd.audience);
    const answer = await h2Request(client, bearer(token));
    expect(answer.status).toBe(200);
    const { headers } = echoOf(answer);
    expect(headers.authorization).toBe(`Bearer ${token}`);
    expect(headers[':authority']).toBe(new URL(frontEnd.url).host);
    expect(headers['x-forwarded-proto']).toBe('https');
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('replaces the traceparent parent id with its own span and adds x-cloud-trace-context', async () => {
    const answer = await h2Request(client, {
      ...bearer(metadata.mintIdToken(frontEnd.audience)),
      traceparent: CLIENT_TRACE_PARENT,
      'x-client-traceparent': CLIENT_TRACE_PARENT,
      tracestate: 'vendor=opaque',
      baggage: 'tenant=blue',
    });
    const { headers } = echoOf(answer);
    const match = /^00-0af7651916cd43dd8448eb211c80319c-([0-9a-f]{16})-01$/.exec(
      headers.traceparent ?? '',
    );
    const frontEndSpan = match?.[1] ?? '';
    expect(frontEndSpan).not.toBe('');
    expect(frontEndSpan).not.toBe('b7ad6b7169203331');
    expect(headers['x-cloud-trace-context']).toBe(
      `0af7651916cd43dd8448eb211c80319c/${BigInt(`0x${frontEndSpan}`).toString(10)};o=1`,
    );
    expect(headers['x-client-traceparent']).toBe(CLIENT_TRACE_PARENT);
    expect(headers.tracestate).toBe('vendor=opaque');
    expect(headers.baggage).toBe('tenant=blue');
    expect(frontEnd.lastRewrite()).toMatchObject({
      incoming: CLIENT_TRACE_PARENT,
      outgoing: headers.traceparent,
    });
  });

  it('starts a new unsampled trace when the call has no valid traceparent', async () => {
    const answer = await h2Request(client, {
      ...bearer(metadata.mintIdToken(frontEnd.audience)),
      traceparent: '00-00000000000000000000000000000000-b7ad6b7169203331-01',
    });
    const { headers } = echoOf(answer);
    const match = /^00-([0-9a-f]{32})-([0-9a-f]{16})-00$/.exec(headers.traceparent ?? '');
    expect(match).not.toBeNull();
    const [, traceId = '', spanId = ''] = match ?? [];
    expect(traceId).not.toBe('0'.repeat(32));
    expect(headers['x-cloud-trace-context']).toBe(`${traceId}/${BigInt(`0x${spanId}`)};o=0`);
  });

  it('streams the body up and relays response trailers over one reused upstream session', async () => {
    const token = metadata.mintIdToken(frontEnd.audience);
    const payload = 'x'.repeat(256 * 1024);
    const answers = await Promise.all([
      h2Request(client, { ...bearer(token), te: 'trailers' }, payload),
      h2Request(client, { ...bearer(token), te: 'trailers' }, 'second'),
    ]);
    expect(answers.map((answer) => echoOf(answer).body)).toEqual([payload, 'second']);
    for (const answer of answers) {
      expect(answer.trailers).toMatchObject({ 'grpc-status': '0', 'x-echo-trailer': 'done' });
    }
    expect(echoOf(answers[0] ?? { body: '' }).headers.te).toBe('trailers');
    expect(echo.stats.sessions).toBe(1);
  });

  it('cancels the container stream when the client cancels', async () => {
    const stream = client.request({
      ...bearer(metadata.mintIdToken(frontEnd.audience)),
      ':path': '/hang',
    });
    stream.end();
    const [chunk] = (await once(stream, 'data')) as [Buffer];
    expect(chunk.toString()).toBe('started');
    stream.close(constants.NGHTTP2_CANCEL);
    await waitUntil('the container stream to close', () => echo.hangs.length > 0, 3000);
    expect(echo.hangs).toEqual([constants.NGHTTP2_CANCEL]);
  });

  it('keeps a trailers-only response a single HEADERS frame', async () => {
    const token = metadata.mintIdToken(frontEnd.audience);
    const answer = await h2Request(client, { ...bearer(token), ':path': '/trailers-only' });
    expect(answer).toMatchObject({ status: 200, headersOnly: true, body: '' });
    expect(answer.headers['grpc-status']).toBe('7');
  });

  it('counts every request it received, rejected ones too', async () => {
    const before = frontEnd.requests();
    await h2Request(client, { ':path': '/echo' });
    await h2Request(client, bearer(metadata.mintIdToken(frontEnd.audience)));
    expect(frontEnd.requests() - before).toBe(2);
  });
});

describe('front end without IAM', () => {
  const open: { close(): Promise<void> | void }[] = [];
  afterEach(async () => {
    for (const item of open.splice(0).reverse()) await item.close();
  });

  it('serves an HTTP/1.1 client in front of an HTTP/1.1 container', async () => {
    const echo = await startHttp1Echo();
    open.push({ close: () => new Promise<void>((resolve) => echo.server.close(() => resolve())) });
    const frontEnd = await startFrontEnd({ upstream: echo.url, upstreamProtocol: 'http1' });
    open.push(frontEnd);
    const answer = await new Promise<{ status: number; alpn: unknown; body: string }>(
      (resolve, reject) => {
        const request = httpsRequest(
          `${frontEnd.url}/items?page=2`,
          {
            method: 'POST',
            ca: frontEnd.caCertPem,
            agent: false,
            headers: { traceparent: CLIENT_TRACE_PARENT, 'content-type': 'text/plain' },
          },
          (response) => {
            let body = '';
            response.setEncoding('utf8');
            response.on('data', (chunk: string) => {
              body += chunk;
            });
            response.on('end', () =>
              resolve({
                status: response.statusCode ?? 0,
                alpn: (response.socket as TLSSocket).alpnProtocol,
                body,
              }),
            );
          },
        );
        request.on('error', reject);
        request.end('hello over http/1.1');
      },
    );
    expect(answer.status).toBe(200);
    expect(answer.alpn).toBe(false);
    const { headers, body } = echoOf(answer);
    expect(body).toBe('hello over http/1.1');
    expect(headers.host).toBe(new URL(frontEnd.url).host);
    expect(headers.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(headers.traceparent).not.toBe(CLIENT_TRACE_PARENT);
    expect(headers['x-forwarded-proto']).toBe('https');
  });

  it.each(['h2c', 'http1'] as const)(
    'answers 503 when the %s container is down',
    async (protocol) => {
      const echo = await startH2cEcho();
      await new Promise((resolve) => echo.server.close(resolve));
      const frontEnd = await startFrontEnd({ upstream: echo.url, upstreamProtocol: protocol });
      open.push(frontEnd);
      const client = connect(frontEnd.url, { ca: frontEnd.caCertPem });
      open.push({ close: () => void client.close() });
      const answer = await h2Request(client, { ':path': '/' });
      expect(answer.status).toBe(503);
      expect(answer.body).toContain('unavailable');
    },
  );

  it('reconnects after the container closes its session', async () => {
    const echo = await startH2cEcho();
    const sessions = new Set<import('node:http2').ServerHttp2Session>();
    echo.server.on('session', (session) => sessions.add(session));
    open.push({ close: () => new Promise<void>((resolve) => echo.server.close(() => resolve())) });
    const frontEnd = await startFrontEnd({ upstream: echo.url, upstreamProtocol: 'h2c' });
    open.push(frontEnd);
    const client = connect(frontEnd.url, { ca: frontEnd.caCertPem });
    open.push({ close: () => void client.close() });

    expect((await h2Request(client, { ':path': '/' })).status).toBe(200);
    await Promise.all(
      [...sessions].map(
        (session) => new Promise<void>((resolve) => session.close(() => resolve())),
      ),
    );
    expect((await h2Request(client, { ':path': '/' })).status).toBe(200);
    expect(echo.stats.sessions).toBe(2);
  });

  it('refuses an upstream that is not a cleartext http:// URL', async () => {
    await expect(
      startFrontEnd({ upstream: 'https://127.0.0.1:9000', upstreamProtocol: 'h2c' }),
    ).rejects.toThrow(/http:\/\/127\.0\.0\.1/);
  });
});
