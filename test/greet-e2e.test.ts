import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Http2Server } from 'node:http2';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { promisify } from 'node:util';
import { Code, ConnectError, createClient, type Transport } from '@connectrpc/connect';
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { freePort } from './helpers/free-port.js';
import { generateGreeterStubs, grpcioGreet } from './helpers/grpcio.js';
import { postGreet } from './helpers/http.js';
import { type RoleProcess, runToExit, startRole, startRoles } from './helpers/roles.js';

const run = promisify(execFile);

describe('REST → gRPC greeting, both roles from the production build', () => {
  let backend: RoleProcess;
  let api: RoleProcess;
  const sessions: Http2SessionManager[] = [];

  beforeAll(async () => {
    ({ backend, api } = await startRoles());
  });
  afterAll(async () => {
    for (const session of sessions) session.abort();
    await Promise.all([api?.stop(), backend?.stop()]);
  });

  const greet = (body: unknown, headers: Record<string, string> = {}) =>
    postGreet(api.url, body, headers);

  it('answers POST /greet with the backend greeting', async () => {
    const response = await greet({ name: 'David', withError: false });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ reply: 'Hello David!!' });
  });

  it('answers curl the same way', async () => {
    const { stdout } = await run('curl', [
      '-sS',
      '-X',
      'POST',
      `${api.url}/greet`,
      '-H',
      'content-type: application/json',
      '-d',
      '{"name":"  Ada  "}',
    ]);
    expect(JSON.parse(stdout)).toEqual({ reply: 'Hello Ada!!' });
  });

  it('turns the on-purpose backend failure into a 500 problem without a stack', async () => {
    const response = await greet({ name: 'David', withError: true });
    expect(response.status).toBe(500);
    expect(response.headers.get('content-type')).toContain('application/problem+json');
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      code: 'internal',
      // The backend's own message stays in the logs and the trace.
      detail: 'The backend failed to answer. The failure was logged with this trace id.',
      instance: '/greet',
    });
    expect(JSON.stringify(body)).not.toMatch(/\bat .*\.js:\d+/);
  });

  it.each([
    [{ name: '' }, 'body.name'],
    [{ name: '   ' }, 'body.name'],
    [{ name: 'x'.repeat(257) }, 'body.name'],
    [{}, 'body.name'],
    [{ name: 42 }, 'body.name'],
    [{ name: 'ok', withError: 'yes' }, 'body.withError'],
    [{ name: 'ok', extra: true }, 'body'],
  ])('rejects %j with a 400 naming %s', async (body, field) => {
    const response = await greet(body);
    expect(response.status).toBe(400);
    const problem = (await response.json()) as { errors: { field: string; message: string }[] };
    expect(problem.errors.map((error) => error.field)).toContain(field);
  });

  it('counts characters, not UTF-16 units: 256 emoji are a valid name', async () => {
    const response = await greet({ name: '😀'.repeat(256) });
    expect(response.status).toBe(200);
  });

  function transports(): [string, Transport][] {
    const session = new Http2SessionManager(backend.url);
    sessions.push(session);
    return [
      ['gRPC', createGrpcTransport({ baseUrl: backend.url, sessionManager: session })],
      [
        'gRPC-Web',
        createGrpcWebTransport({ baseUrl: backend.url, httpVersion: '2', sessionManager: session }),
      ],
      [
        'Connect',
        createConnectTransport({ baseUrl: backend.url, httpVersion: '2', sessionManager: session }),
      ],
    ];
  }

  it('serves gRPC, gRPC-Web and Connect on one h2c port', async () => {
    for (const [protocol, transport] of transports()) {
      const client = createClient(BackendService, transport);
      const response = await client.greet({ name: protocol });
      expect(response.reply).toBe(`Hello ${protocol}!!`);
      const invalid = await client
        .greet({ name: ' ' })
        .catch((error: unknown) => ConnectError.from(error));
      expect(invalid).toBeInstanceOf(ConnectError);
      expect((invalid as ConnectError).code).toBe(Code.InvalidArgument);
    }
  });

  it('is wire-compatible with a Python grpcio client', async () => {
    const stubs = await generateGreeterStubs();
    try {
      const call = (name: string, withError: boolean) =>
        grpcioGreet(stubs, `127.0.0.1:${backend.port}`, name, withError);
      expect(await call('Guido', false)).toEqual({ reply: 'Hello Guido!!' });
      expect(await call('Guido', true)).toEqual({
        code: 'INTERNAL',
        details: 'greeting failed on purpose (with_error=true)',
      });
      expect((await call(' ', false)).code).toBe('INVALID_ARGUMENT');
    } finally {
      await stubs.remove();
    }
  });

  it('answers buf curl over gRPC with the proto schema', async () => {
    const { stdout } = await run('npx', [
      'buf',
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      '--schema',
      'proto',
      '-d',
      '{"name":"Buf"}',
      `${backend.url}/backend_service.v1.BackendService/Greet`,
    ]);
    expect(JSON.parse(stdout)).toEqual({ reply: 'Hello Buf!!' });
  });

  it('serves health endpoints', async () => {
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${api.url}/readyz`);
    expect(ready.status).toBe(200);
  });

  it('serves the OpenAPI 3.1 document generated from the zod schemas', async () => {
    type Response = { description: string; content: Record<string, unknown> };
    const document = (await (await fetch(`${api.url}/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<
        string,
        Record<string, { operationId?: string; responses: Record<string, Response> }>
      >;
      components: {
        schemas: Record<
          string,
          { properties?: Record<string, { description?: string }>; required?: string[] }
        >;
      };
    };
    expect(document.openapi).toBe('3.1.0');
    const greet = document.paths['/greet']?.post;
    expect(greet?.operationId).toBe('greet');
    expect(Object.keys(document.paths)).not.toContain('/healthz');
    // The media types and reasons the api really answers with.
    const responses = Object.entries(greet?.responses ?? {});
    expect(responses.length).toBeGreaterThan(3);
    for (const [status, response] of responses) {
      expect(Object.keys(response.content), status).toEqual([
        Number(status) >= 400 ? 'application/problem+json' : 'application/json',
      ]);
      expect(response.description, status).not.toBe('Default Response');
    }
    expect(greet?.responses['503']?.description).toBe('Service Unavailable');
    // Every status the route can answer with, documented.
    expect(Object.keys(greet?.responses ?? {}).sort()).toEqual(
      ['200', '400', '413', '415', '429', '500', '501', '502', '503', '504'].sort(),
    );
    const invalid = await postGreet(api.url, { name: ' ' });
    expect(invalid.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(document.components.schemas.GreetRequest?.properties?.name?.description).toMatch(
      /1 to 256 characters after trimming, no control characters/,
    );
    // Each schema once, under its own name, and only those the paths use: the request's is what
    // a request may send (a defaulted field is optional).
    const referenced = new Set(
      [...JSON.stringify(document).matchAll(/"#\/components\/schemas\/([^"]+)"/g)].map(
        (match) => match[1],
      ),
    );
    expect(Object.keys(document.components.schemas).sort()).toEqual(
      ['GreetReply', 'GreetRequest', 'ProblemDetails'].sort(),
    );
    expect([...referenced].sort()).toEqual(Object.keys(document.components.schemas).sort());
    expect(document.components.schemas.GreetRequest?.required).toEqual(['name']);
  });

  it('answers unknown routes with a 404 problem', async () => {
    const response = await fetch(`${api.url}/nope`);
    expect(response.status).toBe(404);
    expect(((await response.json()) as { status: number }).status).toBe(404);
  });
});

describe('backend failures seen through the api role', () => {
  it('answers 503 with retry-after when the backend is unreachable', async () => {
    const deadPort = await freePort();
    const api = await startRole('api', {
      env: { BACKEND_URL: `http://127.0.0.1:${deadPort}`, BACKEND_TIMEOUT_MS: '2000' },
    });
    try {
      const started = Date.now();
      const response = await postGreet(api.url);
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).toBe('1');
      const body = (await response.json()) as { detail: string; code: string };
      expect(body.code).toBe('unavailable');
      expect(body.detail).not.toContain(String(deadPort));
      expect(Date.now() - started).toBeLessThan(2_500);
      expect((await fetch(`${api.url}/readyz`)).status).toBe(503);
    } finally {
      await api.stop();
    }
  });

  it('answers 504 when the backend does not answer within the deadline', async () => {
    const silent: Http2Server = createServer(() => {
      /* never answers */
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const api = await startRole('api', {
      env: { BACKEND_URL: `http://127.0.0.1:${port}`, BACKEND_TIMEOUT_MS: '300' },
    });
    try {
      const started = Date.now();
      const response = await postGreet(api.url);
      expect(response.status).toBe(504);
      expect(((await response.json()) as { code: string }).code).toBe('deadline_exceeded');
      expect(Date.now() - started).toBeLessThan(1_500);
    } finally {
      await api.stop();
      silent.close();
    }
  });
});

describe('a caller that goes away', () => {
  it('takes the backend call with it: the stream is cancelled at once, not at the deadline', async () => {
    let received: () => void = () => {};
    const callArrived = new Promise<void>((resolve) => {
      received = resolve;
    });
    let cancelled: (code: number) => void = () => {};
    const callClosed = new Promise<number>((resolve) => {
      cancelled = resolve;
    });
    const silent: Http2Server = createServer((request) => {
      received();
      request.stream.once('close', () => cancelled(request.stream.rstCode ?? -1));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const api = await startRole('api', {
      env: { BACKEND_URL: `http://127.0.0.1:${port}`, BACKEND_TIMEOUT_MS: '20000' },
    });
    try {
      const caller = new AbortController();
      const answered = postGreet(api.url, { name: 'David' }, {}, caller.signal).catch(
        (error: unknown) => error,
      );
      await callArrived;
      const leftAt = Date.now();
      caller.abort();
      await answered;
      expect(await callClosed).toBe(8); // RST_STREAM CANCEL
      expect(Date.now() - leftAt).toBeLessThan(2_000);
      await expect
        .poll(() => api.logs().find((line) => line.httpRequest !== undefined))
        .toMatchObject({ httpRequest: { status: 499 } });
      // The access line is the request's one line: the cancelled call adds none after it. A
      // probe's round trip is the barrier (probes write no line).
      expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
      const traceOf = (line: Record<string, unknown>) => line['logging.googleapis.com/trace'];
      const accessLine = api.logs().find((line) => line.httpRequest !== undefined);
      expect(api.logs().filter((line) => traceOf(line) === traceOf(accessLine ?? {}))).toEqual([
        accessLine,
      ]);
    } finally {
      await api.stop();
      silent.close();
    }
  });
});

describe('a server fault that comes after the caller left', () => {
  it('is still logged, with its stack, beside the 499 access line', async () => {
    // A metadata server that never answers: the ID token for the (https) backend fails seconds
    // after the caller, who gave up first, has gone.
    let asked = 0;
    const metadata = createTcpServer((socket) => {
      asked++;
      socket.on('error', () => {});
    }).listen(0, '127.0.0.1');
    await once(metadata, 'listening');
    const { port } = metadata.address() as AddressInfo;
    const api = await startRole('api', {
      env: { BACKEND_URL: 'https://127.0.0.1:9', GCE_METADATA_HOST: `127.0.0.1:${port}` },
    });
    try {
      // The listening line says where calls go, how, and for which audience tokens are asked.
      expect(api.logs().find((line) => line.role === 'api')?.address).toMatch(
        /\(backend https:\/\/127\.0\.0\.1:9 over tls, ID tokens for https:\/\/127\.0\.0\.1\)$/,
      );
      const caller = new AbortController();
      const answered = postGreet(api.url, { name: 'David' }, {}, caller.signal).catch(
        (error: unknown) => error,
      );
      await expect.poll(() => asked, { timeout: 5_000 }).toBeGreaterThan(0);
      caller.abort();
      await answered;
      await expect
        .poll(() => api.logs().find((line) => line.httpRequest !== undefined))
        .toMatchObject({ severity: 'INFO', httpRequest: { status: 499 } });
      await expect
        .poll(() => api.logs().find((line) => line.severity === 'ERROR'), { timeout: 15_000 })
        .toMatchObject({ stack_trace: expect.any(String) });
    } finally {
      await api.stop();
      metadata.close();
    }
  }, 30_000);
});

describe('start-up configuration', () => {
  it('refuses a missing or unknown SERVICE_ROLE, naming the valid roles', async () => {
    for (const env of [{}, { SERVICE_ROLE: 'frontend' }]) {
      const result = await runToExit(env);
      expect(result.code).toBe(78);
      expect(result.stdout).toContain('SERVICE_ROLE');
      expect(result.stdout).toContain('api, backend');
    }
  });

  it('lists every bad variable in one message', async () => {
    const result = await runToExit({
      SERVICE_ROLE: 'api',
      PORT: 'eighty',
      BACKEND_TIMEOUT_MS: '-5',
      GRPC_REFLECTION: 'maybe',
      BACKEND_MAX_ATTEMPTS: 'x',
    });
    expect(result.code).toBe(78);
    expect(result.stderr).toBe('');
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const { problems } = JSON.parse(lines[0] ?? '') as { problems: string[] };
    for (const name of ['PORT', 'BACKEND_TIMEOUT_MS', 'GRPC_REFLECTION', 'BACKEND_URL']) {
      expect(problems.some((problem) => problem.startsWith(`${name}: `))).toBe(true);
    }
    expect(problems).toContain(
      'BACKEND_MAX_ATTEMPTS: must be a whole number of attempts, 1 to 10 (got "x")',
    );
  });

  it('a role that cannot start (its port taken) says why in one CRITICAL log line and exits 1', async () => {
    const taken = createTcpServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    try {
      const { port } = taken.address() as AddressInfo;
      const result = await runToExit({
        SERVICE_ROLE: 'backend',
        HOST: '127.0.0.1',
        PORT: String(port),
      });
      expect(result.code).toBe(1);
      const failures = result.stdout
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.severity === 'CRITICAL');
      expect(failures).toHaveLength(1);
      expect(failures[0]?.message).toMatch(
        /^the backend role could not start: .*EADDRINUSE.*: another process has that address; set PORT \(or HOST\) to a free one$/,
      );
      expect(result.stderr).toBe('');
    } finally {
      taken.close();
    }
  });
});
