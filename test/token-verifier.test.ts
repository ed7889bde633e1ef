import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, type KeyObject, sign, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { signRs256Jwt } from '../tools/cloud-run-local/jwt.ts';
import { createSelfSignedCertificate } from '../tools/cloud-run-local/self-signed-certificate.ts';
import { startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { eventually, type RoleProcess, startRole } from './helpers/roles.js';

/*
 * The backend's in-app ID-token check (AUTH_VERIFY_TOKENS=true) against a certs server of our
 * own whose key set, Cache-Control and failures the tests change, with the backend's wall clock
 * moved ahead (test/fixtures/shifted-clock.mjs) so that hours pass in milliseconds: a key
 * rotation, the key set's max-age, a certs outage; and what a refusal tells the caller and
 * the log.
 */

const AUDIENCE = 'https://greeter-backend-test.a.run.app';
const CALLER = 'greeter-api@local-project.iam.gserviceaccount.com';
const SHIFTED_CLOCK = resolve(import.meta.dirname, 'fixtures/shifted-clock.mjs');
const MINUTE = 60_000;

type SigningKey = { kid: string; privateKey: KeyObject; certificatePem: string };

async function createSigningKey(name: string): Promise<SigningKey> {
  const { privateKey, certificatePem } = await createSelfSignedCertificate({ commonName: name });
  const spki = new X509Certificate(certificatePem).publicKey.export({
    type: 'spki',
    format: 'der',
  });
  return { kid: createHash('sha1').update(spki).digest('hex'), privateKey, certificatePem };
}

/** A P-256 key and its self-signed certificate (openssl), as a key set could wrongly carry. */
async function createEcSigningKey(): Promise<SigningKey> {
  const dir = await mkdtemp(join(tmpdir(), 'token-verifier-ec-'));
  try {
    const [keyFile, certificateFile] = [join(dir, 'key.pem'), join(dir, 'certificate.pem')];
    await promisify(execFile)('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyFile,
      '-out',
      certificateFile,
      '-subj',
      '/CN=ec',
      '-days',
      '1',
    ]);
    const certificatePem = await readFile(certificateFile, 'utf8');
    const spki = new X509Certificate(certificatePem).publicKey.export({
      type: 'spki',
      format: 'der',
    });
    return {
      kid: createHash('sha1').update(spki).digest('hex'),
      privateKey: createPrivateKey(await readFile(keyFile, 'utf8')),
      certificatePem,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

type CertsServer = {
  url: string;
  /** The keys published, in Google's v1 shape (kid to PEM). */
  published: Set<SigningKey>;
  answer: 'keys' | 'http-500' | 'empty' | 'not-json' | 'jwk' | 'oversized';
  cacheControl: string | undefined;
  /** How long each answer waits. */
  delayMs: number;
  requests(): number;
  close(): Promise<void>;
};

async function startCertsServer(keys: SigningKey[]): Promise<CertsServer> {
  let requests = 0;
  const certs: CertsServer = {
    url: '',
    published: new Set(keys),
    answer: 'keys',
    cacheControl: 'public, max-age=20000, must-revalidate, no-transform',
    delayMs: 0,
    requests: () => requests,
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
  const server = createServer(async (_, response) => {
    requests++;
    if (certs.delayMs > 0) await new Promise((done) => setTimeout(done, certs.delayMs));
    if (certs.answer === 'http-500') {
      response.writeHead(500).end('boom');
      return;
    }
    const keys = Object.fromEntries([...certs.published].map((k) => [k.kid, k.certificatePem]));
    const bodies = {
      keys: () => JSON.stringify(keys),
      empty: () => '{}',
      'not-json': () => '<html>sign in</html>',
      jwk: () => JSON.stringify({ keys: [{ kty: 'RSA', kid: 'k', n: 'AQAB', e: 'AQAB' }] }),
      // A valid key set padded past 1 MiB, sent in chunks without a Content-Length.
      oversized: () => JSON.stringify({ ...keys, padding: 'x'.repeat(2 * 1024 * 1024) }),
    };
    response.writeHead(200, {
      'content-type': 'application/json',
      ...(certs.cacheControl ? { 'cache-control': certs.cacheControl } : {}),
    });
    const body = bodies[certs.answer]();
    if (certs.answer !== 'oversized') {
      response.end(body);
      return;
    }
    for (let at = 0; at < body.length; at += 64 * 1024)
      response.write(body.slice(at, at + 64 * 1024));
    response.end();
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  certs.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/oauth2/v1/certs`;
  return certs;
}

/** The backend's clock offset, in a file the backend reads at every `Date.now()`. */
type Clock = {
  file: string;
  offsetMs: number;
  set(ms: number): Promise<void>;
  nowSeconds(): number;
};

async function createClock(): Promise<Clock> {
  const dir = await mkdtemp(join(tmpdir(), 'token-verifier-clock-'));
  const clock: Clock = {
    file: join(dir, 'offset'),
    offsetMs: 0,
    async set(ms) {
      clock.offsetMs = ms;
      await writeFile(clock.file, String(ms));
    },
    nowSeconds: () => Math.floor((Date.now() + clock.offsetMs) / 1000),
  };
  await clock.set(0);
  return clock;
}

/** A Google-shaped ID token (as the metadata server's `format=full`), as of `clock`. */
function mint(
  key: SigningKey,
  clock: Clock,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): string {
  const iat = clock.nowSeconds();
  return signRs256Jwt(
    { alg: 'RS256', kid: key.kid, typ: 'JWT', ...header },
    {
      aud: AUDIENCE,
      azp: '1234567890',
      email: CALLER,
      email_verified: true,
      exp: iat + 3600,
      iat,
      iss: 'https://accounts.google.com',
      sub: '1234567890',
      ...claims,
    },
    key.privateKey,
  );
}

function startVerifyingBackend(
  certs: CertsServer,
  clock: Clock,
  env: Record<string, string> = {},
): Promise<RoleProcess> {
  return startRole('backend', {
    env: {
      NODE_OPTIONS: `--import ${SHIFTED_CLOCK}`,
      CLOCK_OFFSET_FILE: clock.file,
      AUTH_VERIFY_TOKENS: 'true',
      AUTH_AUDIENCE: AUDIENCE,
      AUTH_CERTS_URL: certs.url,
      AUTH_ALLOWED_CALLERS: CALLER,
      ...env,
    },
  });
}

/** 'OK', or the code and the message the caller got (which never quotes the token or a URL). */
async function greet(backend: RoleProcess, token: string): Promise<string> {
  const client = createClient(BackendService, createGrpcTransport({ baseUrl: backend.url }));
  try {
    await client.greet({ name: 'Ada' }, { headers: { authorization: `Bearer ${token}` } });
    return 'OK';
  } catch (error) {
    const { code, rawMessage } = ConnectError.from(error);
    expect(rawMessage).not.toMatch(/eyJ|@|:\/\/|AUTH_CERTS_URL/);
    return `${Code[code]}: ${rawMessage}`;
  }
}

function linesSaying(backend: RoleProcess, fragment: string): Record<string, unknown>[] {
  return backend.logs().filter((line) => String(line.message).includes(fragment));
}

/** The last line saying `fragment`, once there are `count` (lines are written after the answer). */
function lastLineSaying(
  backend: RoleProcess,
  fragment: string,
  count = 1,
): Promise<Record<string, unknown>> {
  return eventually(() => {
    const lines = linesSaying(backend, fragment);
    expect(lines.length).toBeGreaterThanOrEqual(count);
    return lines.at(-1) ?? {};
  });
}

describe('the signing keys of the token check', () => {
  let k1: SigningKey;
  let k2: SigningKey;
  let k3: SigningKey;
  let clock: Clock;
  let certs: CertsServer;
  let backend: RoleProcess | undefined;

  beforeAll(async () => {
    const keys = await Promise.all(['k1', 'k2', 'k3'].map(createSigningKey));
    [k1, k2, k3] = keys as [SigningKey, SigningKey, SigningKey];
  });
  afterEach(async () => {
    await backend?.stop();
    await certs?.close();
    await rm(join(clock.file, '..'), { recursive: true, force: true });
  });

  it('takes a key published after the last fetch at once, with one fetch; made-up key ids fetch at most every 30 s', async () => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    backend = await startVerifyingBackend(certs, clock);
    expect(await greet(backend, mint(k1, clock))).toBe('OK');
    expect(certs.requests()).toBe(1);

    // Google publishes a new key and starts signing with it (a rotation).
    certs.published.add(k2);
    expect(await greet(backend, mint(k2, clock))).toBe('OK');
    expect(certs.requests()).toBe(2);
    expect(await greet(backend, mint(k2, clock))).toBe('OK');
    expect(certs.requests()).toBe(2);

    // A key never published: refused as the caller's, without a fetch so soon after the last.
    const unknown = await Promise.all(
      Array.from({ length: 5 }, () => greet(backend as RoleProcess, mint(k3, clock))),
    );
    expect(new Set(unknown)).toEqual(
      new Set([
        'Unauthenticated: invalid ID token: signed by a key that is not in the published key set',
      ]),
    );
    expect(certs.requests()).toBe(2);
    const line = await lastLineSaying(backend, 'call refused', 5);
    expect(line).toMatchObject({ severity: 'INFO', code: 'Unauthenticated' });
    expect(line?.message).toContain(`key id "${k3.kid}" is not at AUTH_CERTS_URL`);

    // 31 s on, many calls with an unknown key at once share one fetch.
    await clock.set(31_000);
    certs.published.add(k3);
    const rotated = await Promise.all(
      Array.from({ length: 5 }, () => greet(backend as RoleProcess, mint(k3, clock))),
    );
    expect(rotated).toEqual(Array(5).fill('OK'));
    expect(certs.requests()).toBe(3);
  });

  it("keeps the keys for their answer's max-age, then an hour longer while the URL fails (one WARNING), then UNAVAILABLE without naming the URL", async () => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    certs.cacheControl = 'public, max-age=600';
    backend = await startVerifyingBackend(certs, clock);
    const running = backend;
    expect(await greet(running, mint(k1, clock))).toBe('OK');
    await clock.set(5 * MINUTE);
    expect(await greet(running, mint(k1, clock))).toBe('OK');
    expect(certs.requests()).toBe(1);

    // Past the max-age: answered with the keys in hand while they are fetched again.
    await clock.set(11 * MINUTE);
    expect(await greet(running, mint(k1, clock))).toBe('OK');
    await eventually(() => expect(certs.requests()).toBe(2));

    // The URL fails after the new set's max-age: the last good set is used for an hour more.
    certs.answer = 'http-500';
    await clock.set(22 * MINUTE);
    expect(await greet(running, mint(k1, clock))).toBe('OK');
    await eventually(() => expect(certs.requests()).toBe(3));
    await clock.set(50 * MINUTE);
    expect(await greet(running, mint(k1, clock))).toBe('OK');
    await eventually(() => expect(certs.requests()).toBe(4));
    const stale = await lastLineSaying(running, 'could not fetch the signing keys again');
    expect(stale).toMatchObject({ severity: 'WARNING' });
    expect(stale.message).toContain(`${certs.url} answered HTTP 500`);

    // Past the grace: the keys are no longer trusted, and the failure is ours, not the caller's.
    await clock.set(83 * MINUTE);
    expect(await greet(running, mint(k1, clock))).toBe(
      "Unavailable: cannot check ID tokens right now: the signing keys could not be fetched (the reason is in this service's log); call again later",
    );
    const refused = await lastLineSaying(running, 'call refused');
    expect(refused).toMatchObject({ severity: 'WARNING', code: 'Unavailable' });
    expect(refused.message).toContain(`${certs.url} answered HTTP 500 (AUTH_CERTS_URL)`);
    expect(linesSaying(running, 'could not fetch the signing keys again')).toHaveLength(1);

    certs.answer = 'keys';
    await clock.set(83 * MINUTE + 5_000);
    expect(await greet(running, mint(k1, clock))).toBe('OK');
    await lastLineSaying(running, 'signing keys fetched again');
    expect(linesSaying(running, 'signing keys fetched again')).toHaveLength(1);
  });

  it('takes an empty key set as the URL failing (UNAVAILABLE), and does not keep it', async () => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    certs.answer = 'empty';
    backend = await startVerifyingBackend(certs, clock);
    expect(await greet(backend, mint(k1, clock))).toMatch(/^Unavailable: /);
    expect((await lastLineSaying(backend, 'call refused')).message).toContain(
      `${certs.url} answered an empty key set`,
    );
    // Within 5 s of the failure, calls get it again without a fetch; then the URL is asked again.
    certs.answer = 'keys';
    expect(await greet(backend, mint(k1, clock))).toMatch(/^Unavailable: /);
    expect(certs.requests()).toBe(1);
    await clock.set(5_000);
    expect(await greet(backend, mint(k1, clock))).toBe('OK');
    expect(certs.requests()).toBe(2);
  });

  it('with no key set in hand, asks a failing URL at most every 5 s, whatever callers send', async () => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    certs.answer = 'http-500';
    backend = await startVerifyingBackend(certs, clock);
    // Shaped like a Google token, signed by nobody: nothing about it is checked before the keys.
    const forged = [{ alg: 'RS256', kid: 'made-up' }, { aud: AUDIENCE }]
      .map((part) => Buffer.from(JSON.stringify(part)).toString('base64url'))
      .concat('AAAA')
      .join('.');
    for (let call = 0; call < 10; call++) {
      expect(await greet(backend, forged)).toMatch(/^Unavailable: cannot check ID tokens/);
    }
    expect(certs.requests()).toBe(1);
    const refused = await lastLineSaying(backend, 'call refused', 10);
    expect(refused.message).toContain(`${certs.url} answered HTTP 500 (AUTH_CERTS_URL)`);

    await clock.set(5_000);
    expect(await greet(backend, forged)).toMatch(/^Unavailable: /);
    expect(certs.requests()).toBe(2);
    certs.answer = 'keys';
    await clock.set(10_000);
    expect(await greet(backend, mint(k1, clock))).toBe('OK');
    expect(certs.requests()).toBe(3);
  });

  it.each([
    ['not-json', 'did not answer with JSON'],
    ['jwk', 'answered a JWK set (v3)'],
    ['oversized', 'the answer is over 1048576 bytes: it is not a key set'],
  ] as const)('refuses a key set that is %s (UNAVAILABLE, saying why)', async (answer, why) => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    certs.answer = answer;
    backend = await startVerifyingBackend(certs, clock);
    expect(await greet(backend, mint(k1, clock))).toMatch(/^Unavailable: /);
    const refused = await lastLineSaying(backend, 'call refused');
    expect(refused.message).toContain(why);
    if (answer !== 'jwk') expect(refused.message).not.toContain('JWK');
  });

  it('takes only RSA keys: a set with an EC certificate is refused, so an ECDSA signature labelled RS256 cannot pass', async () => {
    clock = await createClock();
    const ec = await createEcSigningKey();
    certs = await startCertsServer([k1, ec]);
    backend = await startVerifyingBackend(certs, clock);
    const [header, claims] = mint(k1, clock, {}, { kid: ec.kid }).split('.');
    const signature = sign('sha256', Buffer.from(`${header}.${claims}`), ec.privateKey);
    expect(await greet(backend, `${header}.${claims}.${signature.toString('base64url')}`)).toMatch(
      /^Unavailable: /,
    );
    const refused = await lastLineSaying(backend, 'call refused');
    expect(refused.message).toContain('did not answer with RSA certificates (PEM) by key id');
    expect(await greet(backend, mint(k1, clock))).toMatch(/^Unavailable: /);
  });

  it("records the caller's email on the span only when the token says Google verified it", async () => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    const receiver = await startOtlpReceiver();
    try {
      // No allow-list: any caller gets in, so nothing else reads email_verified.
      backend = await startVerifyingBackend(certs, clock, {
        AUTH_ALLOWED_CALLERS: '',
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_BSP_SCHEDULE_DELAY: '50',
      });
      const unverified = 'someone@example.com';
      expect(
        await greet(backend, mint(k1, clock, { email: unverified, email_verified: false })),
      ).toBe('OK');
      expect(await greet(backend, mint(k1, clock, { email_verified: undefined }))).toBe('OK');
      expect(await greet(backend, mint(k1, clock))).toBe('OK');
      const spans = await receiver.waitForSpans((received) => received.length >= 3);
      expect(spans.map((span) => span.attributes['caller.service_account'])).toEqual([
        undefined,
        undefined,
        CALLER,
      ]);
    } finally {
      await backend?.stop();
      await receiver.close();
    }
  });

  it('warns at start when AUTH_CERTS_URL is plain http:// to another host, and not on loopback', async () => {
    clock = await createClock();
    certs = await startCertsServer([k1]);
    backend = await startVerifyingBackend(certs, clock, {
      AUTH_CERTS_URL: 'http://certs.example.invalid/oauth2/v1/certs',
    });
    const warning = linesSaying(backend, 'AUTH_CERTS_URL (http://certs.example.invalid');
    expect(warning).toEqual([expect.objectContaining({ severity: 'WARNING' })]);
    expect(warning[0]?.message).toContain('Use https://');
    await backend.stop();
    backend = await startVerifyingBackend(certs, clock);
    expect(linesSaying(backend, 'is plain http://')).toEqual([]);
  });
});

describe('a caller that leaves while its token is being checked', () => {
  let key: SigningKey;
  let clock: Clock;
  let certs: CertsServer;
  let backend: RoleProcess;

  beforeAll(async () => {
    key = await createSigningKey('k1');
    clock = await createClock();
    certs = await startCertsServer([key]);
    // The first token makes the check fetch the keys: long enough for the caller to leave.
    certs.delayMs = 700;
    backend = await startVerifyingBackend(certs, clock);
  });
  afterAll(async () => {
    await backend?.stop();
    await certs?.close();
    await rm(join(clock.file, '..'), { recursive: true, force: true });
  });

  /** A Connect-protocol Greet whose caller resets the stream 100 ms in, its body unsent. */
  async function leaveDuringTheCheck(token: string, traceId: string): Promise<void> {
    const session = connect(backend.url);
    session.on('error', () => {});
    const stream = session.request({
      ':method': 'POST',
      ':path': '/backend_service.v1.BackendService/Greet',
      'content-type': 'application/json',
      authorization: `Bearer ${token}`,
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
    });
    stream.on('error', () => {});
    stream.write('{"na');
    await new Promise((done) => setTimeout(done, 100));
    stream.destroy();
    session.close();
  }

  const accessLinesOf = (traceId: string) =>
    backend
      .logs()
      .filter(
        (line) =>
          String(line['logging.googleapis.com/trace']).endsWith(traceId) &&
          line.httpRequest !== undefined,
      );

  it('a refused one is logged once, as refused, and has no access line', async () => {
    const traceId = 'a1'.repeat(16);
    await leaveDuringTheCheck(mint(key, clock, { aud: 'https://elsewhere.example' }), traceId);
    const refused = await lastLineSaying(backend, 'call refused');
    expect(refused.message).toContain('for another audience');
    await new Promise((done) => setTimeout(done, 300));
    expect(accessLinesOf(traceId)).toEqual([]);
    expect(linesSaying(backend, 'call refused')).toHaveLength(1);
  });

  it('one let in is recorded as the caller’s leaving: CANCELLED, 499', async () => {
    const traceId = 'b2'.repeat(16);
    // The keys are in hand now: the check lets it in at once, and the caller leaves mid-body.
    await leaveDuringTheCheck(mint(key, clock), traceId);
    const [line] = await eventually(() => {
      const lines = accessLinesOf(traceId);
      expect(lines).toHaveLength(1);
      return lines;
    });
    expect(line).toMatchObject({ severity: 'INFO', httpRequest: { status: 499 } });
    expect(line?.message).toMatch(/ CANCELLED$/);
  });
});

describe('what a refusal tells the caller, and what it logs', () => {
  let key: SigningKey;
  let clock: Clock;
  let certs: CertsServer;
  let backend: RoleProcess;

  beforeAll(async () => {
    key = await createSigningKey('k1');
    clock = await createClock();
    certs = await startCertsServer([key]);
    // As pasted from `gcloud … get-iam-policy`, and in upper case: read as the email.
    backend = await startVerifyingBackend(certs, clock, {
      AUTH_ALLOWED_CALLERS: `serviceAccount:${CALLER.toUpperCase()}`,
    });
  });
  afterAll(async () => {
    await backend?.stop();
    await certs?.close();
    await rm(join(clock.file, '..'), { recursive: true, force: true });
  });

  const now = () => clock.nowSeconds();
  it.each([
    [
      'a token for another audience',
      () => mint(key, clock, { aud: 'https://greeter-backend-test.a.run.app/' }),
      'Unauthenticated: invalid ID token: for another audience (aud)',
      `token aud "https://greeter-backend-test.a.run.app/" is not AUTH_AUDIENCE "${AUDIENCE}"`,
    ],
    [
      'a token from another issuer',
      () => mint(key, clock, { iss: 'http://accounts.google.com' }),
      'Unauthenticated: invalid ID token: not issued by Google (wrong issuer, iss)',
      'token issuer "http://accounts.google.com" is not one of "https://accounts.google.com", "accounts.google.com"',
    ],
    [
      'a token expired beyond the 5 minutes of clock skew',
      () => mint(key, clock, { iat: now() - 4000, exp: now() - 400 }),
      'Unauthenticated: invalid ID token: expired',
      'is more than 300 s (the clock skew allowed) before this server',
    ],
    [
      'claims that are not base64url JSON',
      () => {
        const [header, , signature] = mint(key, clock).split('.');
        return `${header}.${Buffer.from('{"aud": oops').toString('base64url')}.${signature}`;
      },
      'Unauthenticated: invalid ID token: not a JWT (three base64url parts: header, claims, signature)',
      'not a JWT',
    ],
    [
      'a caller not allowed',
      () => mint(key, clock, { email: 'intruder@other.iam.gserviceaccount.com' }),
      'PermissionDenied: this caller is not allowed (AUTH_ALLOWED_CALLERS)',
      'caller "intruder@other.iam.gserviceaccount.com" is not in AUTH_ALLOWED_CALLERS',
    ],
    [
      'a token without email (format=standard)',
      () => mint(key, clock, { email: undefined, email_verified: undefined }),
      'PermissionDenied: this caller is not allowed (AUTH_ALLOWED_CALLERS)',
      'caller (token has no email: ask for format=full / includeEmail) is not in AUTH_ALLOWED_CALLERS',
    ],
    [
      'an allowed email that Google says is not verified',
      () => mint(key, clock, { email_verified: false }),
      'PermissionDenied: this caller is not allowed (AUTH_ALLOWED_CALLERS)',
      `caller "${CALLER}" is in AUTH_ALLOWED_CALLERS, but its token says email_verified false, not true`,
    ],
    [
      'an allowed email without email_verified',
      () => mint(key, clock, { email_verified: undefined }),
      'PermissionDenied: this caller is not allowed (AUTH_ALLOWED_CALLERS)',
      'email_verified undefined, not true',
    ],
    [
      'an allowed email in upper case',
      () => mint(key, clock, { email: CALLER.toUpperCase() }),
      'OK',
      '',
    ],
    [
      'a token expired 200 s ago (within the clock skew)',
      () => mint(key, clock, { iat: now() - 3800, exp: now() - 200 }),
      'OK',
      '',
    ],
  ])('%s → %s', async (_case, token, expected, logged) => {
    const before = linesSaying(backend, 'call refused').length;
    expect(await greet(backend, token())).toBe(expected);
    if (expected === 'OK') {
      expect(linesSaying(backend, 'call refused')).toHaveLength(before);
      return;
    }
    const refused = await lastLineSaying(backend, 'call refused', before + 1);
    expect(linesSaying(backend, 'call refused')).toHaveLength(before + 1);
    expect(refused).toMatchObject({ severity: 'INFO' });
    expect(refused.message).toContain(logged);
    expect(JSON.stringify(refused)).not.toMatch(/eyJ/);
  });
});
