import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BODY_LIMIT_BYTES } from '../src/api/build-api.js';
import { freePort } from './helpers/free-port.js';
import { eventually, type RoleProcess, runToExit, startRole, startRoles } from './helpers/roles.js';

/*
 * The public role under hostile input, as real processes from the production build: every bad
 * request gets a 4xx RFC 9457 problem body (never a 500, never a crash) and the process keeps
 * serving. docs/reliability.md lists each case with the test that proves it.
 */

type Answer = { status: number; headers: Record<string, string>; body: string };

const JSON_TYPE = 'application/json';
const PROBLEM_TYPE = /^application\/problem\+json/;
const VALID_TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

/** Every error response this file received; the last test checks what they reveal. */
const errorAnswers: Answer[] = [];

let backend: RoleProcess;
let api: RoleProcess;

beforeAll(async () => {
  ({ backend, api } = await startRoles());
});
afterAll(async () => {
  await Promise.all([api?.stop(), backend?.stop()]);
});

type CallOptions = {
  method?: string;
  /** The content-type header; none when undefined. */
  type?: string;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
};

/** A request with fetch. Bodies go as bytes, so fetch adds no content-type of its own. */
async function call(target: RoleProcess, path: string, options: CallOptions = {}): Promise<Answer> {
  const headers = new Headers(options.headers);
  if (options.type !== undefined) headers.set('content-type', options.type);
  const body = typeof options.body === 'string' ? Buffer.from(options.body) : options.body;
  const response = await fetch(`${target.url}${path}`, {
    method: options.method ?? 'POST',
    headers,
    ...(body !== undefined ? { body } : {}),
  });
  return record({
    status: response.status,
    headers: Object.fromEntries(response.headers),
    body: await response.text(),
  });
}

const greet = (options: CallOptions) => call(api, '/greet', options);
const greetJson = (body: unknown) => greet({ type: JSON_TYPE, body: JSON.stringify(body) });

/** Writes bytes on a fresh connection and reads until the server closes it. */
async function raw(port: number, bytes: string | Buffer, timeoutMs = 5_000): Promise<Answer> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(bytes);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  await closed;
  clearTimeout(timer);
  return record(parseResponse(Buffer.concat(chunks).toString('utf8')));
}

function parseResponse(text: string): Answer {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: text };
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: text.slice(end + 4) };
}

function record(answer: Answer): Answer {
  if (answer.status >= 400) errorAnswers.push(answer);
  return answer;
}

/** The access line of `role`'s request whose trace id is `traceId`, once it is written. */
function accessLine(role: RoleProcess, traceId: string) {
  return eventually(() => {
    const line = role
      .logs()
      .find((entry) => String(entry['logging.googleapis.com/trace']).endsWith(traceId));
    expect(line?.httpRequest).toBeDefined();
    return line;
  }, 5_000);
}

/** The documented error shape: RFC 9457 problem details, with the status repeated. */
function expectProblem(answer: Answer, status: number): Record<string, unknown> {
  expect(answer.status, answer.body).toBe(status);
  expect(answer.headers['content-type']).toMatch(PROBLEM_TYPE);
  const body = JSON.parse(answer.body) as Record<string, unknown>;
  expect(body).toMatchObject({
    type: 'about:blank',
    title: expect.any(String),
    status,
    detail: expect.any(String),
  });
  return body;
}

function fieldsOf(problem: Record<string, unknown>): string[] {
  return ((problem.errors ?? []) as { field: string }[]).map((error) => error.field);
}

async function expectServing(target: RoleProcess = api): Promise<void> {
  const answer = await call(target, '/greet', {
    type: JSON_TYPE,
    body: JSON.stringify({ name: 'still here' }),
  });
  expect(answer.status, `${answer.body}\n${target.stderr()}`).toBe(200);
  expect(JSON.parse(answer.body)).toEqual({ reply: 'Hello still here!!' });
}

/** What an error response must never carry: stack frames, internal addresses, tokens. */
function expectNothingRevealed(answer: Answer, internalPorts: number[]): void {
  const text = `${JSON.stringify(answer.headers)}\n${answer.body}`;
  for (const pattern of [
    /\bat \S+ \(/,
    /\n\s+at /,
    /\.[cm]?[jt]s:\d+/,
    /node_modules|\/work\/|\/dist\//,
    /127\.0\.0\.1|localhost|::1/i,
    /bearer/i,
  ]) {
    expect(text, `${pattern} in ${text}`).not.toMatch(pattern);
  }
  for (const port of internalPorts) expect(text).not.toContain(`:${port}`);
  expect(answer.headers['x-powered-by']).toBeUndefined();
  expect(answer.headers.server).toBeUndefined();
}

describe('bad bodies on POST /greet', () => {
  afterEach(() => expectServing());

  it.each<[string, number, CallOptions]>([
    ['malformed JSON', 400, { type: JSON_TYPE, body: '{"name":' }],
    ['JSON with a trailing comma', 400, { type: JSON_TYPE, body: '{"name":"a",}' }],
    ['single-quoted pseudo-JSON', 400, { type: JSON_TYPE, body: "{'name':'a'}" }],
    ['a text/plain body', 415, { type: 'text/plain', body: '{"name":"a"}' }],
    ['an XML body', 415, { type: 'application/xml', body: '<name>a</name>' }],
    ['a form body', 415, { type: 'application/x-www-form-urlencoded', body: 'name=a' }],
    ['a look-alike type (application/jsonx)', 415, { type: 'application/jsonx', body: '{}' }],
    ['a body without a content type', 415, { body: '{"name":"a"}' }],
    ['an empty JSON body', 400, { type: JSON_TYPE, body: '' }],
    ['no body and no content type', 400, {}],
    ['JSON null', 400, { type: JSON_TYPE, body: 'null' }],
    ['a JSON array', 400, { type: JSON_TYPE, body: '[{"name":"a"}]' }],
    ['a JSON string', 400, { type: JSON_TYPE, body: '"David"' }],
    ['a JSON number', 400, { type: JSON_TYPE, body: '42' }],
    ['a __proto__ key', 400, { type: JSON_TYPE, body: '{"name":"a","__proto__":{"x":1}}' }],
    [
      'a constructor.prototype key',
      400,
      { type: JSON_TYPE, body: '{"name":"a","constructor":{"prototype":{"x":1}}}' },
    ],
  ])('%s: %i problem', async (_label, status, options) => {
    expectProblem(await greet(options), status);
  });

  it.each<[string, string, unknown]>([
    ['missing name', 'body.name', {}],
    ['null name', 'body.name', { name: null }],
    ['numeric name', 'body.name', { name: 42 }],
    ['boolean name', 'body.name', { name: true }],
    ['array name', 'body.name', { name: ['a'] }],
    ['object name', 'body.name', { name: { first: 'a' } }],
    ['string withError', 'body.withError', { name: 'a', withError: 'true' }],
    ['null withError', 'body.withError', { name: 'a', withError: null }],
    ['numeric withError', 'body.withError', { name: 'a', withError: 1 }],
    ['an extra field', 'body', { name: 'a', admin: true }],
    ['a snake_case typo', 'body', { name: 'a', with_error: true }],
    ['an empty name', 'body.name', { name: '' }],
    ['a whitespace name', 'body.name', { name: ' \t\n\u00a0\u3000\u2028 ' }],
    ['257 characters', 'body.name', { name: 'x'.repeat(257) }],
    ['257 emoji', 'body.name', { name: '😀'.repeat(257) }],
    ['a NUL character', 'body.name', { name: 'Da\u0000vid' }],
    ['a bell character', 'body.name', { name: 'Da\u0007vid' }],
    ['an ANSI escape', 'body.name', { name: '\u001b[31mred' }],
    ['an inner newline', 'body.name', { name: 'Da\nvid' }],
    ['DEL', 'body.name', { name: 'David\u007f' }],
    ['a C1 control (NEL)', 'body.name', { name: 'David\u0085' }],
    ['a lone surrogate', 'body.name', { name: 'Da\ud800vid' }],
  ])('%s: 400 naming %s', async (_label, field, body) => {
    const problem = expectProblem(await greetJson(body), 400);
    expect(fieldsOf(problem)).toContain(field);
  });

  it.each<[string, string]>([
    ['256 ASCII characters', 'x'.repeat(256)],
    ['256 emoji (one character each)', '😀'.repeat(256)],
    ['256 CJK extension B characters', '𠀀'.repeat(256)],
    ['Hebrew (RTL)', 'שלום עולם'],
    ['Arabic (RTL)', 'مرحبا بالعالم'],
    ['RTL marks and an override character', '\u200fדוד\u200f \u202eabc'],
    ['surrounding whitespace, trimmed', '  \t Ada\r\n '],
    ['a ZWJ emoji sequence', '👩‍👩‍👧‍👦'],
  ])('accepts %s', async (_label, name) => {
    const answer = await greetJson({ name });
    expect(answer.status, answer.body).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ reply: `Hello ${name.trim()}!!` });
  });

  it('takes the last of duplicate keys, as JSON.parse does', async () => {
    const answer = await greet({ type: JSON_TYPE, body: '{"name":"first","name":"last"}' });
    expect(JSON.parse(answer.body)).toEqual({ reply: 'Hello last!!' });
  });
});

describe('bodies the api cannot take as sent: a problem that says what to send', () => {
  afterEach(() => expectServing());

  const bytes = (...parts: (string | number[])[]) =>
    Buffer.concat(
      parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : Buffer.from(part))),
    );

  it('a body that is not UTF-8: 400 saying so, instead of U+FFFD in the data; UTF-8 is kept as sent', async () => {
    for (const [label, body] of [
      ['Latin-1 é', bytes('{"name":"Jos', [0xe9], '"}')],
      ['an overlong "/"', bytes('{"name":"a', [0xc0, 0xaf], '"}')],
      ['a surrogate in UTF-8 form', bytes('{"name":"a', [0xed, 0xa0, 0x80], '"}')],
      ['a truncated emoji', bytes('{"name":"a', [0xf0, 0x9f, 0x98], '"}')],
    ] as const) {
      const problem = expectProblem(await greet({ type: JSON_TYPE, body }), 400);
      // The bundle carries the § escaped (charset: ascii); the answer has it as written.
      expect(problem.detail, label).toBe(
        'The body is not valid UTF-8: send JSON in UTF-8 (RFC 8259 section 8.1).',
      );
    }
    // A U+FFFD the client really sent is data like any other.
    const sent = await greet({
      type: JSON_TYPE,
      body: bytes('{"name":"a', [0xef, 0xbf, 0xbd], '"}'),
    });
    expect(JSON.parse(sent.body)).toEqual({ reply: 'Hello a\ufffd!!' });
    // A character split between two chunks of a chunked body is whole once the body is.
    const emoji = Buffer.from('😀');
    const first = bytes('{"name":"a', [...emoji.subarray(0, 2)]);
    const second = bytes([...emoji.subarray(2)], '"}');
    const chunked = await raw(
      api.port,
      Buffer.concat([
        Buffer.from(
          `POST /greet HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: ${JSON_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n`,
        ),
        Buffer.from(`${first.length.toString(16)}\r\n`),
        first,
        Buffer.from(`\r\n${second.length.toString(16)}\r\n`),
        second,
        Buffer.from('\r\n0\r\n\r\n'),
      ]),
    );
    expect(chunked.status, chunked.body).toBe(200);
    expect(JSON.parse(chunked.body)).toEqual({ reply: 'Hello a😀!!' });
  });

  it('a charset other than UTF-8: 415 saying the api takes UTF-8 JSON only; utf-8 in any case is fine', async () => {
    for (const type of [
      'application/json; charset=iso-8859-1',
      'application/json;charset=utf-16',
      'application/json; charset="windows-1252"',
      'application/json; charset=utf-8; charset=latin1',
    ]) {
      const answer = await greet({ type, body: '{"name":"a"}' });
      expect(expectProblem(answer, 415).detail, type).toMatch(/UTF-8 JSON only/);
      expect(answer.headers.accept).toBe(JSON_TYPE);
    }
    for (const type of [
      'application/json; charset=utf-8',
      'application/json; charset=UTF-8',
      'Application/JSON;Charset="Utf-8"',
    ]) {
      const answer = await greet({ type, body: '{"name":"a"}' });
      expect(answer.status, `${type}: ${answer.body}`).toBe(200);
    }
  });

  it('a content-encoding: 415 saying compressed bodies are not accepted, with Accept-Encoding: identity (RFC 9110 §15.5.16)', async () => {
    for (const [encoding, body] of [
      ['gzip', gzipSync('{"name":"a"}')],
      ['gzip', Buffer.from('{"name":"a"}')],
      ['br', Buffer.from('{"name":"a"}')],
      ['identity, gzip', Buffer.from('{"name":"a"}')],
    ] as const) {
      const answer = await greet({
        type: JSON_TYPE,
        body,
        headers: { 'content-encoding': encoding },
      });
      expect(expectProblem(answer, 415).detail, encoding).toMatch(
        /Compressed bodies are not accepted/,
      );
      expect(answer.headers['accept-encoding']).toBe('identity');
    }
    // Content codings are case-insensitive (RFC 9110 §8.4.1): identity is no coding at all.
    for (const encoding of ['identity', 'Identity', 'IDENTITY']) {
      const identity = await greet({
        type: JSON_TYPE,
        body: '{"name":"a"}',
        headers: { 'content-encoding': encoding },
      });
      expect(identity.status, `${encoding}: ${identity.body}`).toBe(200);
    }
  });

  it('a transfer coding other than chunked alone: 415, never the compressed bytes read as the body', async () => {
    const json = '{"name":"a"}';
    for (const [coding, body] of [
      ['gzip, chunked', gzipSync(json)],
      ['deflate, chunked', Buffer.from(json)],
      ['identity, chunked', Buffer.from(json)],
    ] as const) {
      const answer = await raw(
        api.port,
        Buffer.concat([
          Buffer.from(
            `POST /greet HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: ${JSON_TYPE}\r\nTransfer-Encoding: ${coding}\r\n\r\n${body.length.toString(16)}\r\n`,
          ),
          body,
          Buffer.from('\r\n0\r\n\r\n'),
        ]),
      );
      expect(expectProblem(answer, 415).detail, coding).toMatch(
        /Compressed bodies are not accepted.*Transfer-Encoding: chunked alone/,
      );
      expect(answer.headers['accept-encoding']).toBe('identity');
    }
    // Transfer codings are case-insensitive too (RFC 9112 section 7).
    const chunked = await raw(
      api.port,
      `POST /greet HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: ${JSON_TYPE}\r\nTransfer-Encoding: Chunked\r\n\r\n${json.length.toString(16)}\r\n${json}\r\n0\r\n\r\n`,
    );
    expect(chunked.status, chunked.body).toBe(200);
  });

  it('another media type: 415 naming application/json, with Accept: application/json', async () => {
    for (const options of [
      { type: 'text/plain', body: '{"name":"a"}' },
      { type: 'application/jsonx', body: '{}' },
      { body: '{"name":"a"}' },
    ]) {
      const answer = await greet(options);
      expect(expectProblem(answer, 415).detail).toContain('content-type: application/json');
      expect(answer.headers.accept).toBe(JSON_TYPE);
    }
  });

  it('an empty body: 400 saying it is empty, not "not valid JSON"', async () => {
    const problem = expectProblem(await greet({ type: JSON_TYPE, body: '' }), 400);
    expect(problem.detail).toBe('The body is empty: send a JSON object.');
    // Nothing to parse, so no parser sees it: the schema's check says the same, and the type.
    for (const options of [{}, { body: '' }]) {
      const answer = await greet(options);
      expect(expectProblem(answer, 400).detail).toBe(
        'The body is empty: send a JSON object, with content-type: application/json.',
      );
      expect(answer.headers.accept).toBe(JSON_TYPE);
    }
  });

  it('a __proto__ or constructor.prototype key: 400 saying the key is not allowed, not "not valid JSON"', async () => {
    for (const body of [
      '{"name":"a","__proto__":{"x":1}}',
      '{"name":"a","\\u005f_proto__":{"x":1}}',
      '{"name":"a","x":{"constructor":{"prototype":{"x":1}}}}',
    ]) {
      const problem = expectProblem(await greet({ type: JSON_TYPE, body }), 400);
      expect(problem.detail, body).toMatch(/"__proto__".*not allowed/);
    }
    // Bad JSON still says so.
    const problem = expectProblem(await greet({ type: JSON_TYPE, body: '{"name":' }), 400);
    expect(problem.detail).toMatch(/not valid JSON/);
  });
});

describe('body size and nesting', () => {
  afterEach(() => expectServing());

  const padded = (size: number) => {
    const json = '{"name":"David"}';
    return json + ' '.repeat(size - json.length);
  };

  it(`accepts a body of exactly ${BODY_LIMIT_BYTES} bytes`, async () => {
    const answer = await greet({ type: JSON_TYPE, body: padded(BODY_LIMIT_BYTES) });
    expect(answer.status).toBe(200);
  });

  /** The 413 says what the limit is, from the configured one. */
  const expectLimitNamed = (answer: Answer) =>
    expect(expectProblem(answer, 413).detail).toContain(
      `limit of ${BODY_LIMIT_BYTES / 1024} KiB (${BODY_LIMIT_BYTES} bytes)`,
    );

  it('answers 413 to one byte more', async () => {
    expectLimitNamed(await greet({ type: JSON_TYPE, body: padded(BODY_LIMIT_BYTES + 1) }));
  });

  it('answers 413 to a chunked body that grows past the limit', async () => {
    // One write, read to the end: Fastify closes the connection after a body error, so a client
    // still uploading may be reset before it reads the 413 (Node has no lingering close).
    const chunk = `${(10_000).toString(16)}\r\n${' '.repeat(10_000)}\r\n`;
    const answer = await raw(
      api.port,
      `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.repeat(10)}0\r\n\r\n`,
    );
    expectLimitNamed(answer);
  });

  it('answers 413 from the content-length alone, without reading a 1 GB body', async () => {
    const started = performance.now();
    const answer = await raw(
      api.port,
      `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${2 ** 30}\r\n\r\n{"name":`,
    );
    expectProblem(answer, 413);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it.each<[string, number, string]>([
    [
      '100k nested arrays (over the size limit)',
      413,
      `${'['.repeat(100_000)}${']'.repeat(100_000)}`,
    ],
    ['30k nested arrays (within the limit)', 400, `${'['.repeat(30_000)}${']'.repeat(30_000)}`],
    [
      'a name nested 30k arrays deep',
      400,
      `{"name":${'['.repeat(30_000)}"a"${']'.repeat(30_000)}}`,
    ],
    ['10k nested objects', 400, `{"name":"a","x":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`],
    [
      '4k nested __proto__ keys',
      400,
      `{"name":"a","x":${'{"__proto__":'.repeat(4_000)}1${'}'.repeat(4_000)}}`,
    ],
  ])('%s: %i within a second, no stack overflow', async (_label, status, body) => {
    const started = performance.now();
    expectProblem(await greet({ type: JSON_TYPE, body }), status);
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});

describe('query strings, methods and URLs', () => {
  afterEach(() => expectServing());

  it('rejects a query string on /greet like an unknown field (400)', async () => {
    for (const query of ['?withError=true', '?name=x', '?a[b]=1&a[b]=2', `?${'q'.repeat(4_000)}`]) {
      const problem = expectProblem(
        await call(api, `/greet${query}`, { type: JSON_TYPE, body: '{"name":"a"}' }),
        400,
      );
      expect(fieldsOf(problem)).toContain('querystring');
    }
    // The problem names the path alone: a query may carry what the logs redact.
    const signed = await call(api, '/greet?X-Goog-Signature=secret', {
      type: JSON_TYPE,
      body: '{"name":"a"}',
    });
    expect(expectProblem(signed, 400).instance).toBe('/greet');
  });

  it('accepts an empty query string', async () => {
    const answer = await call(api, '/greet?', { type: JSON_TYPE, body: '{"name":"a"}' });
    expect(answer.status).toBe(200);
  });

  it.each(['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PROPFIND', 'QUERY'])(
    '%s /greet: 405 with Allow: POST',
    async (method) => {
      const answer = await call(api, '/greet', { method });
      expectProblem(answer, 405);
      expect(answer.headers.allow).toBe('POST');
    },
  );

  it('HEAD /greet: 405 with Allow: POST and no body, and its access line counts no body', async () => {
    const traceId = 'ace0e9a56015fec5aadfa328ae39811a';
    const answer = await call(api, '/greet', {
      method: 'HEAD',
      headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` },
    });
    expect(answer.status).toBe(405);
    expect(answer.headers.allow).toBe('POST');
    expect(answer.body).toBe('');
    const line = await accessLine(api, traceId);
    expect(line?.httpRequest).toMatchObject({ requestMethod: 'HEAD', status: 405 });
    expect(line?.httpRequest).not.toHaveProperty('responseSize');
  });

  it('TRACE /greet: 405 (fetch refuses to send TRACE, so a raw socket does)', async () => {
    const answer = await raw(
      api.port,
      'TRACE /greet HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n',
    );
    expectProblem(answer, 405);
    expect(answer.headers.allow).toBe('POST');
  });

  it('POST /healthz: 405 with Allow: GET, HEAD', async () => {
    const answer = await call(api, '/healthz', { method: 'POST' });
    expectProblem(answer, 405);
    expect(answer.headers.allow).toBe('GET, HEAD');
  });

  it('an unknown path: 404 problem', async () => {
    expectProblem(await call(api, '/wp-login.php', { method: 'GET' }), 404);
  });

  it('a long path: 404 or 405 naming at most 200 characters of it', async () => {
    const long = `/${'a'.repeat(15_000)}`;
    const notFound = expectProblem(await call(api, long, { method: 'GET' }), 404);
    expect(notFound.detail).toBe(`No route GET ${long.slice(0, 200)}...`);
    const wrongMethod = await call(api, `/healthz?${'q'.repeat(15_000)}`, { method: 'PUT' });
    expect(String(expectProblem(wrongMethod, 405).detail).length).toBeLessThan(300);
    // The access line names the first 4,096 characters of it, and of the user agent 1,024
    // (together within the 16 KiB of headers the api takes).
    const traceId = '9ce0e9a56015fec5aadfa328ae398120';
    const longer = `/${'a'.repeat(12_000)}`;
    await call(api, longer, {
      method: 'GET',
      headers: {
        traceparent: `00-${traceId}-b7ad6b7169203331-01`,
        'user-agent': `ua-${'u'.repeat(2_000)}`,
      },
    });
    const line = await accessLine(api, traceId);
    expect(line?.httpRequest).toMatchObject({
      requestUrl: `${longer.slice(0, 4_096)}...`,
      userAgent: `ua-${'u'.repeat(1_021)}...`,
    });
    expect(line?.message).toBe(`GET ${longer.slice(0, 4_096)}... 404`);
  });

  it('a body to an unknown path or the wrong method: 404 or 405, whatever the body', async () => {
    const text = { type: 'text/plain', body: 'hello' };
    expectProblem(await call(api, '/wp-login.php', { method: 'POST', ...text }), 404);
    expectProblem(await call(api, '/healthz', { method: 'PUT', ...text }), 405);
    expectProblem(await call(api, '/healthz', { method: 'POST', type: JSON_TYPE, body: '{' }), 405);
  });

  it('a URL that cannot be decoded: 400 problem saying why, without repeating its query', async () => {
    const traceId = '9ce0e9a56015fec5aadfa328ae398119';
    const body = expectProblem(
      await raw(
        api.port,
        `POST /greet%zz?sig=SECRET HTTP/1.1\r\nHost: api\r\ntraceparent: 00-${traceId}-b7ad6b7169203331-01\r\nConnection: close\r\n\r\n`,
      ),
      400,
    );
    expect(body.detail).toMatch(
      /^The path cannot be decoded: a % must be followed by two hex digits/,
    );
    const line = await accessLine(api, traceId);
    expect(JSON.stringify(line)).not.toContain('SECRET');
    expect(line).toMatchObject({ httpRequest: { requestUrl: '/greet%zz?sig=REDACTED' } });
  });

  it('path traversal under /docs: 403 problem', async () => {
    for (const path of [
      '/docs/static/../../../../etc/passwd',
      '/docs/static/%2e%2e/%2e%2e/package.json',
    ]) {
      const answer = await raw(
        api.port,
        `GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`,
      );
      expectProblem(answer, 403);
    }
  });
});

describe('headers and malformed HTTP', () => {
  afterEach(() => expectServing());

  it('a 20 KB header: 431 problem', async () => {
    const answer = await raw(
      api.port,
      `GET /healthz HTTP/1.1\r\nHost: api\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    );
    expectProblem(answer, 431);
  });

  it('a 20 KB URL: 431 problem', async () => {
    const answer = await raw(
      api.port,
      `GET /healthz?${'a'.repeat(20_000)} HTTP/1.1\r\nHost: api\r\n\r\n`,
    );
    expectProblem(answer, 431);
  });

  it.each<[string, string | Buffer]>([
    ['bytes that are not HTTP: words', 'HELLO THERE\r\n\r\n'],
    ['bytes that are not HTTP: an SSH banner', 'SSH-2.0-OpenSSH_9.6\r\n'],
    ['bytes that are not HTTP: a TLS ClientHello', Buffer.from('16030100a5010000a10303', 'hex')],
    ['an HTTP/2 preface on the HTTP/1.1 port', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['a NUL byte in a header', 'GET /healthz HTTP/1.1\r\nHost: api\r\nX-A: a\u0000b\r\n\r\n'],
    [
      'Content-Length and Transfer-Encoding together (smuggling)',
      `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    ],
    [
      'two different Content-Length headers',
      `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Length: 12\r\nContent-Length: 13\r\n\r\n{"name":"a"}`,
    ],
    [
      'a Content-Length that is not a number',
      'POST /greet HTTP/1.1\r\nHost: api\r\nContent-Length: abc\r\n\r\n',
    ],
    ['an HTTP/1.1 request without Host', 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'],
    [
      'two Host headers (RFC 9112 §3.2)',
      'GET /healthz HTTP/1.1\r\nHost: api\r\nhost: elsewhere\r\nConnection: close\r\n\r\n',
    ],
    ['two Host headers in HTTP/1.0', 'GET /healthz HTTP/1.0\r\nHost: api\r\nHost: api\r\n\r\n'],
    [
      'CONNECT (this is not a proxy)',
      'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n',
    ],
  ])('%s: 400 problem', async (_label, bytes) => {
    expectProblem(await raw(api.port, bytes), 400);
  });

  it.each<[string, string]>([
    ['a method Node does not know', 'BREW /greet HTTP/1.1\r\nHost: api\r\n\r\n'],
    ['a known method in lower case', 'get /healthz HTTP/1.1\r\nHost: api\r\n\r\n'],
  ])('%s: 501 problem, not implemented (RFC 9110 §9.1)', async (_label, bytes) => {
    const body = expectProblem(await raw(api.port, bytes), 501);
    expect(body.detail).toContain('case-sensitive');
  });

  it('a target in absolute form (RFC 9112 §3.2.2) is served, and logged by its path', async () => {
    const traceId = '7ce0e9a56015fec5aadfa328ae398117';
    const answer = await raw(
      api.port,
      `POST http://api.example:9/greet HTTP/1.1\r\nHost: elsewhere\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 12\r\ntraceparent: 00-${traceId}-b7ad6b7169203331-01\r\nConnection: close\r\n\r\n{"name":"a"}`,
    );
    expect(answer.status, answer.body).toBe(200);
    expect((await accessLine(api, traceId))?.httpRequest).toMatchObject({
      requestUrl: '/greet',
      status: 200,
    });
  });

  it('an absolute-form target routes as its path in origin form would: `..` is not resolved', async () => {
    const absolute = await raw(
      api.port,
      'GET http://api.example/docs/../healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n',
    );
    const origin = await raw(
      api.port,
      'GET /docs/../healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n',
    );
    expect(absolute.status).toBe(origin.status);
    expect(absolute.status).not.toBe(200);
  });

  it('an absolute-form target without a Host line: 400 problem (RFC 9112 §3.2)', async () => {
    const answer = await raw(
      api.port,
      'GET http://api.example/healthz HTTP/1.1\r\nConnection: close\r\n\r\n',
    );
    expectProblem(answer, 400);
  });

  it('keeps an idle connection 65 s, longer than a load balancer in front keeps it (60 s), and says so', async () => {
    // Node's default is 5 s: a proxy would then reuse connections the api is closing.
    const answer = await call(api, '/healthz', { method: 'GET' });
    expect(answer.status).toBe(200);
    expect(answer.headers).toMatchObject({ connection: 'keep-alive', 'keep-alive': 'timeout=65' });
  });

  it('an Expect other than 100-continue: 417 problem, traced and logged like any request', async () => {
    const traceId = '9ce0e9a56015fec5aadfa328ae398121';
    const answer = await raw(
      api.port,
      `POST /greet HTTP/1.1\r\nHost: api\r\nExpect: teapot\r\nConnection: close\r\ntraceparent: 00-${traceId}-b7ad6b7169203331-01\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 12\r\n\r\n{"name":"a"}`,
    );
    expect(expectProblem(answer, 417).detail).toBe('Only "Expect: 100-continue" is supported.');
    expect(answer.headers['x-frame-options']).toBe('DENY');
    expect(await accessLine(api, traceId)).toMatchObject({
      severity: 'INFO',
      httpRequest: { status: 417 },
      problem: 'Only "Expect: 100-continue" is supported.',
    });
  });

  it('Expect: 100-continue is honoured', async () => {
    const answer = await raw(
      api.port,
      `POST /greet HTTP/1.1\r\nHost: api\r\nExpect: 100-continue\r\nConnection: close\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 12\r\n\r\n{"name":"a"}`,
    );
    expect(answer.status).toBe(100);
    expect(answer.body).toContain('HTTP/1.1 200 OK');
    expect(answer.body).toContain('{"reply":"Hello a!!"}');
  });

  it('Expect: 100-continue with a body declared over the limit: 413 at once, no 100', async () => {
    const answer = await raw(
      api.port,
      `POST /greet HTTP/1.1\r\nHost: api\r\nExpect: 100-continue\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${BODY_LIMIT_BYTES + 1}\r\n\r\n`,
    );
    expectProblem(answer, 413);
  });

  const manyMembers = (count: number, member: (i: number) => string) =>
    Array.from({ length: count }, (_, i) => member(i)).join(',');

  it.each<[string, Record<string, string>]>([
    ['a traceparent that is not one', { traceparent: 'not-a-traceparent' }],
    ['an all-zero trace id', { traceparent: `00-${'0'.repeat(32)}-${'1'.repeat(16)}-01` }],
    ['an all-zero span id', { traceparent: `00-${'1'.repeat(32)}-${'0'.repeat(16)}-01` }],
    ['upper-case hex', { traceparent: `00-${'A'.repeat(32)}-${'B'.repeat(16)}-01` }],
    ['version ff', { traceparent: `ff-${'a'.repeat(32)}-${'b'.repeat(16)}-01` }],
    ['a truncated traceparent', { traceparent: VALID_TRACEPARENT.slice(0, 40) }],
    ['an 8 KB traceparent', { traceparent: `00-${'a'.repeat(8_000)}` }],
    ['a traceparent with spaces', { traceparent: ` ${VALID_TRACEPARENT.replaceAll('-', ' - ')} ` }],
    ['a tracestate of garbage', { traceparent: VALID_TRACEPARENT, tracestate: ',,,=,==,a=,=b,' }],
    [
      'a tracestate with 500 members',
      { traceparent: VALID_TRACEPARENT, tracestate: manyMembers(500, (i) => `k${i}=v`) },
    ],
    ['baggage of garbage', { baggage: ';;;===,,,%%%' }],
    ['baggage with broken percent-encoding', { baggage: 'k=%E0%A4%A,x=%ZZ,y=%' }],
    ['an 8 KB baggage', { baggage: `k=${'v'.repeat(8_000)}` }],
    ['baggage with 1000 members', { baggage: manyMembers(1_000, (i) => `k${i}=v${i}`) }],
    ['x-cloud-trace-context of garbage', { 'x-cloud-trace-context': 'garbage' }],
    [
      'x-cloud-trace-context with a 30-digit span id',
      { 'x-cloud-trace-context': `${'a'.repeat(32)}/${'9'.repeat(30)};o=1` },
    ],
    [
      'x-cloud-trace-context with a zero trace id',
      { 'x-cloud-trace-context': `${'0'.repeat(32)}/1;o=1` },
    ],
    [
      'x-cloud-trace-context with a negative span id',
      { 'x-cloud-trace-context': `${'a'.repeat(32)}/-1;o=9` },
    ],
    ['x-client-traceparent of garbage', { 'x-client-traceparent': 'zzz' }],
  ])('%s: ignored, the request is served (200)', async (_label, headers) => {
    const answer = await greet({ type: JSON_TYPE, body: '{"name":"a"}', headers });
    expect(answer.status, answer.body).toBe(200);
  });

  it('non-ASCII bytes in trace headers: ignored, the request is served (200)', async () => {
    const answer = await raw(
      api.port,
      Buffer.concat([
        Buffer.from(
          `POST /greet HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 12\r\n`,
        ),
        Buffer.from('traceparent: '),
        Buffer.from([0xff, 0xfe, 0x80]),
        Buffer.from(
          '\r\nbaggage: k=\u00e9\u00e8\r\nx-cloud-trace-context: \u00e9/\u00e9\r\n\r\n',
          'utf8',
        ),
        Buffer.from('{"name":"a"}'),
      ]),
    );
    expect(answer.status).toBe(200);
  });
});

describe('security headers', () => {
  const REQUESTS: [string, () => Promise<Answer>][] = [
    ['a greeting', () => greetJson({ name: 'a' })],
    ['a validation problem', () => greetJson({ name: '' })],
    ['a 404', () => call(api, '/nope', { method: 'GET' })],
    ['a 405', () => call(api, '/greet', { method: 'GET' })],
    ['a 415', () => greet({ type: 'text/plain', body: 'a' })],
    ['/healthz', () => call(api, '/healthz', { method: 'GET' })],
    ['/openapi.json', () => call(api, '/openapi.json', { method: 'GET' })],
  ];

  it.each(REQUESTS)('on %s', async (_label, send) => {
    const { headers } = await send();
    expect(headers['content-security-policy']).toContain("default-src 'none'");
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['x-content-type-options']).toBe('nosniff');
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['referrer-policy']).toBe('no-referrer');
    expect(headers['strict-transport-security']).toMatch(/^max-age=\d+/);
    expect(headers['cross-origin-resource-policy']).toBe('same-origin');
    expect(headers['x-powered-by']).toBeUndefined();
  });

  it('/docs gets a policy that allows its own scripts and styles, and nothing inline', async () => {
    const { status, headers } = await call(api, '/docs/', { method: 'GET' });
    expect(status).toBe(200);
    const policy = headers['content-security-policy'] ?? '';
    expect(policy).toMatch(/script-src 'self'/);
    expect(policy).not.toMatch(/script-src[^;]*'unsafe-(inline|eval)'/);
    expect(policy).toMatch(/object-src 'none'/);
    expect(headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('slow clients (slowloris)', () => {
  const HEADERS_TIMEOUT_MS = 2_000;
  const REQUEST_TIMEOUT_MS = 4_000;
  let slow: RoleProcess;

  beforeAll(async () => {
    slow = await startRole('api', {
      env: {
        BACKEND_URL: backend.url,
        HTTP_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
        HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      },
    });
  });
  afterAll(async () => {
    await slow?.stop();
  });

  type Drip = { elapsedMs: number; sent: number; received: string };

  /** A client that sends `text` one byte every `intervalMs`, until the server hangs up. */
  function drip(text: string, intervalMs: number, upfront = 0) {
    const started = performance.now();
    const socket = connect(slow.port, '127.0.0.1');
    let sent = upfront;
    let received = '';
    if (upfront > 0) socket.write(text.slice(0, upfront));
    const timer = setInterval(() => {
      if (sent < text.length && socket.writable) socket.write(text.charAt(sent++));
    }, intervalMs);
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      received += chunk;
    });
    socket.on('error', () => {});
    const closed = new Promise<Drip>((resolve) =>
      socket.once('close', () => {
        clearInterval(timer);
        resolve({ elapsedMs: performance.now() - started, sent, received });
      }),
    );
    return { socket, closed, total: text.length };
  }

  /** Sends good requests back to back until `done` settles; returns their latencies. */
  async function serveMeanwhile(done: Promise<unknown>, deadlineMs: number): Promise<number[]> {
    let finished = false;
    void done.finally(() => {
      finished = true;
    });
    const latencies: number[] = [];
    const deadline = performance.now() + deadlineMs;
    while (!finished && performance.now() < deadline) {
      const started = performance.now();
      await expectServing(slow);
      latencies.push(performance.now() - started);
    }
    return latencies;
  }

  it('refuses to start with a headers timeout longer than the request timeout (exit 78)', async () => {
    const { code, stdout } = await runToExit({
      SERVICE_ROLE: 'api',
      BACKEND_URL: backend.url,
      HTTP_HEADERS_TIMEOUT_MS: '5000',
      HTTP_REQUEST_TIMEOUT_MS: '4000',
    });
    expect(code).toBe(78);
    expect(stdout).toContain('HTTP_HEADERS_TIMEOUT_MS: must not exceed HTTP_REQUEST_TIMEOUT_MS');
  });

  it('closes 200 connections that send their headers byte by byte with 408, serving others meanwhile', async () => {
    const request = `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nX-Padding: ${'a'.repeat(100)}\r\n\r\n`;
    const clients = Array.from({ length: 200 }, () => drip(request, 100));
    try {
      const all = Promise.all(clients.map((client) => client.closed));
      const latencies = await serveMeanwhile(all, 20_000);
      const results = await all;
      expect(latencies.length).toBeGreaterThan(5);
      expect(Math.max(...latencies)).toBeLessThan(1_500);
      for (const result of results) {
        expect(result.sent).toBeLessThan(request.length);
        expect(result.elapsedMs).toBeGreaterThan(HEADERS_TIMEOUT_MS - 100);
        expect(result.elapsedMs).toBeLessThan(HEADERS_TIMEOUT_MS + 3_000);
        expectProblem(record(parseResponse(result.received)), 408);
      }
    } finally {
      for (const client of clients) client.socket.destroy();
    }
    await expectServing(slow);
  }, 30_000);

  it('closes a connection that sends nothing after HTTP_HEADERS_TIMEOUT_MS', async () => {
    const idle = drip('', 100);
    const result = await idle.closed;
    expect(result.elapsedMs).toBeGreaterThan(HEADERS_TIMEOUT_MS - 100);
    expect(result.elapsedMs).toBeLessThan(HEADERS_TIMEOUT_MS + 3_000);
    await expectServing(slow);
  });

  it('closes a request whose body trickles in with 408 after HTTP_REQUEST_TIMEOUT_MS, and logs the 408', async () => {
    const traceId = '5ce0e9a56015fec5aadfa328ae398115';
    const head = `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 200\r\ntraceparent: 00-${traceId}-b7ad6b7169203331-01\r\n\r\n`;
    const client = drip(`${head}{"name":"${'a'.repeat(200)}`, 100, head.length);
    try {
      const result = await client.closed;
      expect(result.elapsedMs).toBeGreaterThan(REQUEST_TIMEOUT_MS - 100);
      expect(result.elapsedMs).toBeLessThan(REQUEST_TIMEOUT_MS + 3_000);
      const body = expectProblem(record(parseResponse(result.received)), 408);
      // What the client got, not a caller that left (499).
      expect(await accessLine(slow, traceId)).toMatchObject({
        httpRequest: { status: 408 },
        problem: body.detail,
      });
    } finally {
      client.socket.destroy();
    }
    await expectServing(slow);
  }, 15_000);

  it("a whole request followed by bytes that are not HTTP keeps its own status, not the parser's answer to those bytes", async () => {
    const traceId = '8ce0e9a56015fec5aadfa328ae398118';
    const result = await drip(
      `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 12\r\ntraceparent: 00-${traceId}-b7ad6b7169203331-01\r\n\r\n{"name":"a"}XX\r\n\r\n`,
      0,
      1_000,
    ).closed;
    // HTTP/1.1 clients match answers to requests in order: the request's own comes first.
    expect(result.received.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400']);
    expect(result.received).toContain('{"reply":"Hello a!!"}');
    expect(await accessLine(slow, traceId)).toMatchObject({ httpRequest: { status: 200 } });
  });

  it.each<[string, string, string]>([
    ['a method it does not know', 'BREW /greet HTTP/1.1\r\nHost: api\r\n\r\n', 'HTTP/1.1 501'],
    ['bytes that are not HTTP', '\u0001\r\n', 'HTTP/1.1 400'],
  ])(
    'pipelined requests followed by %s: each answered in order, then the refusal',
    async (_label, after, refusal) => {
      const greet = `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: 12\r\n\r\n{"name":"a"}`;
      const health = 'GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n';
      const result = await drip(`${greet}${health}${after}`, 0, 2_000).closed;
      expect(result.received.match(/HTTP\/1\.1 \d{3}/g)).toEqual([
        'HTTP/1.1 200',
        'HTTP/1.1 200',
        refusal,
      ]);
    },
  );

  it('answers a broken chunk in the body with 400 and logs the 400', async () => {
    const traceId = '6ce0e9a56015fec5aadfa328ae398116';
    const client = drip(
      `POST /greet HTTP/1.1\r\nHost: api\r\nContent-Type: ${JSON_TYPE}\r\nTransfer-Encoding: chunked\r\ntraceparent: 00-${traceId}-b7ad6b7169203331-01\r\n\r\n5\r\n{"nam\r\nZZ\r\n`,
      0,
      1_000,
    );
    try {
      const result = await client.closed;
      expectProblem(record(parseResponse(result.received)), 400);
      expect(await accessLine(slow, traceId)).toMatchObject({ httpRequest: { status: 400 } });
    } finally {
      client.socket.destroy();
    }
  });
});

describe('overload', () => {
  let busy: RoleProcess;

  beforeAll(async () => {
    busy = await startRole('api', {
      env: {
        BACKEND_URL: backend.url,
        // Any real load exceeds 1 ms of mean event-loop delay; measured every 100 ms.
        OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '1',
        OVERLOAD_SAMPLE_INTERVAL_MS: '100',
      },
    });
  });
  afterAll(async () => {
    await busy?.stop();
  });

  type Outcome = { path: string; status: number; headers: Record<string, string>; body: string };

  it('sheds load with 503 + Retry-After past capacity, keeps answering /healthz, and recovers', async () => {
    const workers = 64;
    const outcomes: Outcome[][] = Array.from({ length: workers }, () => []);
    const deadline = performance.now() + 15_000;
    const enough = () =>
      outcomes.flat().filter((o) => o.status === 503).length >= 50 &&
      outcomes.some(healthzAnsweredWhileShedding);
    await Promise.all(
      outcomes.map(async (mine) => {
        for (let i = 0; !enough() && performance.now() < deadline; i++) {
          const path = i % 4 === 3 ? '/healthz' : '/greet';
          const response = await fetch(`${busy.url}${path}`, {
            method: path === '/greet' ? 'POST' : 'GET',
            headers: { 'content-type': JSON_TYPE },
            ...(path === '/greet' ? { body: '{"name":"load"}' } : {}),
          });
          mine.push({
            path,
            status: response.status,
            headers: Object.fromEntries(response.headers),
            body: await response.text(),
          });
        }
      }),
    );

    const all = outcomes.flat();
    const shed = all.filter((o) => o.status === 503);
    expect(shed.length).toBeGreaterThanOrEqual(50);
    for (const outcome of shed) {
      expect(outcome.path).toBe('/greet');
      expect(outcome.headers['retry-after']).toBe('1');
      const answer = record({ status: 503, headers: outcome.headers, body: outcome.body });
      expect(expectProblem(answer, 503).detail).toMatch(/over capacity/);
    }
    expect(all.filter((o) => o.status !== 200 && o.status !== 503)).toEqual([]);
    expect(all.filter((o) => o.path === '/healthz' && o.status !== 200)).toEqual([]);
    expect(outcomes.some(healthzAnsweredWhileShedding)).toBe(true);
    // A 503 like any other (the one rule), but without a stack: the load is the cause, and it is
    // not an Error Reporting event per shed request.
    const shedLines = busy
      .logs()
      .filter((line) => (line.httpRequest as { status?: number } | undefined)?.status === 503);
    expect(shedLines.length).toBeGreaterThan(0);
    for (const line of shedLines) {
      expect(line).toMatchObject({
        severity: 'ERROR',
        problem: expect.stringMatching(/over capacity/),
        error: { type: 'ApiOverloaded', message: 'The api is over capacity' },
      });
      expect(line).not.toHaveProperty('stack_trace');
    }

    await eventually(() => expectServing(busy), 10_000);
  }, 30_000);

  /** A /healthz 200 between two shed requests of the same client: asked while shedding. */
  function healthzAnsweredWhileShedding(sequence: Outcome[]): boolean {
    return sequence.some(
      (o, i) =>
        o.path === '/healthz' &&
        o.status === 200 &&
        sequence[i - 1]?.status === 503 &&
        sequence[i + 1]?.status === 503,
    );
  }
});

describe('what error responses reveal', () => {
  let deadBackend: RoleProcess;
  let deadPort: number;

  beforeAll(async () => {
    deadPort = await freePort();
    deadBackend = await startRole('api', {
      env: {
        BACKEND_URL: `http://127.0.0.1:${deadPort}`,
        BACKEND_TIMEOUT_MS: '1000',
        BACKEND_MAX_ATTEMPTS: '2',
      },
    });
  });
  afterAll(async () => {
    await deadBackend?.stop();
  });

  it('an unreachable backend: 503 + Retry-After, no address of it', async () => {
    const answer = await call(deadBackend, '/greet', { type: JSON_TYPE, body: '{"name":"a"}' });
    expectProblem(answer, 503);
    expect(answer.headers['retry-after']).toBe('1');
  });

  it('no stack frames, internal host names or tokens in any error response', async () => {
    // Provoked here too, so this test stands alone; the earlier tests' answers are added.
    expectProblem(await greetJson({ name: 'a', withError: true }), 500);
    expectProblem(await greetJson({ name: 'a', extra: 1 }), 400);
    expectProblem(await greet({ type: 'text/plain', body: 'a' }), 415);
    expectProblem(await call(api, '/nope', { method: 'GET' }), 404);
    expectProblem(await call(api, '/greet', { method: 'DELETE' }), 405);
    expectProblem(await raw(api.port, 'GET / HTTP/1.1\r\nX: \u0000\r\n\r\n'), 400);
    expectProblem(
      await call(deadBackend, '/greet', { type: JSON_TYPE, body: '{"name":"a"}' }),
      503,
    );
    expect(errorAnswers.length).toBeGreaterThanOrEqual(7);
    const internalPorts = [backend.port, deadPort];
    for (const answer of errorAnswers) expectNothingRevealed(answer, internalPorts);
  });

  it('no process crashed or wrote to stderr', () => {
    for (const role of [api, backend, deadBackend]) {
      expect(role.child.exitCode).toBeNull();
      expect(role.stderr()).toBe('');
    }
  });
});
