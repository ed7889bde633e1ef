import { once } from 'node:events';
import { createServer as createHttp2Server } from 'node:http2';
import { createServer as createTcpServer } from 'node:net';
import { resolve } from 'node:path';
import { Code, ConnectError } from '@connectrpc/connect';
import { describe, expect, it } from 'vitest';
import { grpcCodeName } from '../src/errors/status.js';
import { clientAddress } from '../src/telemetry/http-tracing.js';
import type { Logger } from '../src/telemetry/logger.js';
import { type ReceivedSpan, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { freePort } from './helpers/free-port.js';
import { grpcCallTo, postGreet, UNKNOWN_METHOD } from './helpers/http.js';
import { listenH2c } from './helpers/listen-h2c.js';
import { recordingLogger } from './helpers/recording-logger.js';
import {
  type RoleProcess,
  rolesExportingForSuite,
  runToExit,
  startRole,
  startRoles,
} from './helpers/roles.js';
import { newTraceParent } from './helpers/traces.js';

/*
 * What Cloud Logging and Error Reporting get from the roles' stdout: one entry per request, the
 * stack of a fault where Error Reporting reads it (a top-level `stack_trace`), `error` always an
 * object, and a JSON line with a severity for everything the process says, crashes included.
 */

type Line = Record<string, unknown>;

const TRACE = 'logging.googleapis.com/trace';
const FAULT_FIXTURE = resolve(import.meta.dirname, 'fixtures/process-fault.mjs');

function linesOfTrace(role: RoleProcess, traceId: string): Line[] {
  return role.logs().filter((line) => String(line[TRACE] ?? '').endsWith(`/traces/${traceId}`));
}

/** The lines of a request's trace, once its access line is there. */
async function requestLines(role: RoleProcess, traceId: string): Promise<Line[]> {
  await expect
    .poll(() => linesOfTrace(role, traceId).some((line) => line.httpRequest), { timeout: 10_000 })
    .toBe(true);
  return linesOfTrace(role, traceId);
}

function jsonLines(stdout: string): Line[] {
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Line);
}

describe('requests: one log entry each', () => {
  const roles = rolesExportingForSuite({
    OTEL_BSP_SCHEDULE_DELAY: '50',
    OTEL_METRICS_EXPORTER: 'none',
  });

  it('a 500 is one ERROR entry, the access line, with the stack at the top for Error Reporting', async () => {
    const parent = newTraceParent();
    const response = await postGreet(
      roles.api.url,
      { name: 'David', withError: true },
      { traceparent: parent.header },
    );
    expect(response.status).toBe(500);
    const { detail } = (await response.json()) as { detail: string };

    const lines = await requestLines(roles.api, parent.traceId);
    expect(lines).toHaveLength(1);
    const [line] = lines;
    expect(line).toMatchObject({
      severity: 'ERROR',
      message: 'POST /greet 500',
      httpRequest: { status: 500 },
      problem: detail,
      serviceContext: { service: 'greeter-api', version: expect.any(String) },
      // The error's name, as on spans: the bundle renames the class itself (_ConnectError).
      error: {
        type: 'ConnectError',
        message: expect.stringContaining('greeting failed on purpose'),
      },
    });
    expect(line?.stack_trace).toMatch(/^ConnectError: \[internal\] greeting failed on purpose/);
    expect(line?.stack_trace).toMatch(/\n {4}at /);

    // The backend, where the fault happened, reports it once too.
    const backendLines = await requestLines(roles.backend, parent.traceId);
    expect(backendLines.filter((entry) => entry.severity === 'ERROR')).toHaveLength(1);
    expect(backendLines.find((entry) => entry.httpRequest)?.stack_trace).toMatch(
      /^ConnectError: \[internal\] greeting failed on purpose/,
    );
  });

  it.each([
    ['400, an invalid body', { body: { name: 42 }, status: 400, path: '/greet' }],
    ['404, an unknown path', { body: { name: 'David' }, status: 404, path: '/nowhere' }],
  ])('a %s is one INFO entry, the access line, with the detail and no stack', async (_, want) => {
    const parent = newTraceParent();
    const response = await fetch(`${roles.api.url}${want.path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: parent.header },
      body: JSON.stringify(want.body),
    });
    expect(response.status).toBe(want.status);
    const { detail } = (await response.json()) as { detail: string };

    const lines = await requestLines(roles.api, parent.traceId);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      severity: 'INFO',
      httpRequest: { status: want.status },
      problem: detail,
    });
    expect(lines[0]).not.toHaveProperty('stack_trace');
    expect(lines[0]).not.toHaveProperty('error');
  });

  it.each([
    ['a message shorter than its envelope says', {}, '00000000640a0161', Code.InvalidArgument],
    ['a message that is no protobuf', {}, '00000000020a05', Code.Internal],
    [
      'a malformed grpc-timeout',
      { 'grpc-timeout': '1x' },
      '00000000030a0161',
      Code.InvalidArgument,
    ],
    [
      'an encoding the server lacks',
      { 'grpc-encoding': 'zstd' },
      '00000000030a0161',
      Code.Unimplemented,
    ],
    ['two messages to a unary method', {}, '00000000030a016100000000030a0161', Code.Unimplemented],
  ])(
    'a gRPC call refused before its handler (%s) is one access line and a span too',
    async (_, headers, hex, code) => {
      const parent = newTraceParent();
      await grpcCallTo(
        roles.backend.url,
        '/backend_service.v1.BackendService/Greet',
        { traceparent: parent.header, ...headers },
        Buffer.from(hex, 'hex'),
      );
      const [line, ...others] = await requestLines(roles.backend, parent.traceId);
      expect(others).toEqual([]);
      const status = grpcCodeName(code);
      expect(line).toMatchObject({ rpc: { grpcStatus: status, grpcStatusCode: code } });
      const spans = await roles.receiver.waitForSpans((all) =>
        all.some((span) => span.traceId === parent.traceId),
      );
      const server = spans.find((span) => span.traceId === parent.traceId);
      expect(server?.attributes).toMatchObject({ 'rpc.status_code': status });
    },
  );

  it.each([
    ['no X-Forwarded-For: the socket peer', undefined, '127.0.0.1'],
    [
      'the entry the front end appended, not the one the caller wrote',
      '203.0.113.7, 198.51.100.20',
      '198.51.100.20',
    ],
    ['a last entry that is no address: the socket peer', '203.0.113.7, unknown', '127.0.0.1'],
  ])('remoteIp and client.address agree: %s', async (_, forwardedFor, expected) => {
    const parent = newTraceParent();
    const response = await postGreet(
      roles.api.url,
      { name: 'David' },
      {
        traceparent: parent.header,
        ...(forwardedFor ? { 'x-forwarded-for': forwardedFor } : {}),
      },
    );
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    const [line] = await requestLines(roles.api, parent.traceId);
    expect(line?.httpRequest).toMatchObject({ remoteIp: expected });
    const isApiServer = (span: ReceivedSpan) =>
      span.traceId === parent.traceId &&
      span.kind === 'SERVER' &&
      span.resource['service.name'] === 'greeter-api';
    const spans = await roles.receiver.waitForSpans((all) => all.some(isApiServer));
    const server = spans.find(isApiServer);
    expect(server?.attributes).toMatchObject({
      'client.address': expected,
      'network.peer.address': '127.0.0.1',
      // The client's own port, as the backend's span has its caller's.
      'network.peer.port': expect.any(Number),
    });
    expect(server?.attributes['network.peer.port']).not.toBe(roles.api.port);
  });
});

describe("a request's own attributes", () => {
  it('are on the lines of both roles, sampled or not; forged baggage is not', async () => {
    const { backend, api } = await startRoles();
    try {
      const unsampled = newTraceParent(false);
      const headers = { traceparent: unsampled.header, 'x-user-id': 'u-7' };
      expect((await postGreet(api.url, { name: 'David' }, headers)).status).toBe(200);
      const forged = newTraceParent(false);
      const forging = { traceparent: forged.header, baggage: 'enduser.id=evil' };
      expect((await postGreet(api.url, { name: 'David' }, forging)).status).toBe(200);
      for (const role of [api, backend]) {
        const [line] = await requestLines(role, unsampled.traceId);
        expect(line).toMatchObject({
          'logging.googleapis.com/trace_sampled': false,
          attributes: { 'enduser.id': 'u-7' },
        });
        const [forgedLine] = await requestLines(role, forged.traceId);
        expect(forgedLine).not.toHaveProperty('attributes');
      }
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
    }
  });
});

describe('with the SDK disabled (OTEL_SDK_DISABLED=true)', () => {
  it("lines carry no trace without a caller's, and the caller's trace when it sends one", async () => {
    const { backend, api } = await startRoles({ OTEL_SDK_DISABLED: 'true' });
    try {
      const untraced = await fetch(`${api.url}/greet`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'no-trace' },
        body: '{"name":" "}',
      });
      expect(untraced.status).toBe(400);
      // No all-zero trace id offered as "the trace id" of a failure.
      expect(await untraced.json()).not.toHaveProperty('traceId');
      const parent = newTraceParent();
      await postGreet(api.url, { name: 'David' }, { traceparent: parent.header });
      await expect
        .poll(() => [api, backend].map((role) => linesOfTrace(role, parent.traceId).length))
        .toEqual([1, 1]);
      const lines = [...api.logs(), ...backend.logs()];
      expect(
        lines.filter((line) => String(line[TRACE] ?? '').endsWith(`/traces/${'0'.repeat(32)}`)),
      ).toEqual([]);
      const noTrace = api.logs().find((line) => line.message === 'POST /greet 400');
      expect(noTrace).toBeDefined();
      expect(noTrace).not.toHaveProperty(TRACE);
      expect(noTrace).not.toHaveProperty('logging.googleapis.com/spanId');
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
    }
  });

  it('a server fault’s detail points to the logs without naming a trace id it does not give', async () => {
    // A backend that fails every call: INTERNAL, trailers-only.
    const failing = await listenH2c(
      createHttp2Server((request, response) => {
        request.resume();
        response.stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '13' },
          { endStream: true },
        );
      }),
    );
    const api = await startRole('api', {
      env: { OTEL_SDK_DISABLED: 'true', BACKEND_URL: failing.url },
    });
    try {
      const failed = await fetch(`${api.url}/greet`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"name":"Eve"}',
      });
      expect(failed.status).toBe(500);
      const problem = (await failed.json()) as { detail: string };
      expect(problem).not.toHaveProperty('traceId');
      expect(problem.detail).toBe('The backend failed to answer. The failure was logged.');
    } finally {
      await api.stop();
      await failing.close();
    }
  });
});

describe('clientAddress', () => {
  it.each([
    [undefined, '169.254.1.1', '169.254.1.1'],
    ['', '169.254.1.1', '169.254.1.1'],
    ['198.51.100.20', '169.254.1.1', '198.51.100.20'],
    ['203.0.113.7,198.51.100.20', '169.254.1.1', '198.51.100.20'],
    ['203.0.113.7 , 2001:db8::1 ', '169.254.1.1', '2001:db8::1'],
    [['203.0.113.7', '198.51.100.20'], '169.254.1.1', '198.51.100.20'],
    ['198.51.100.20,', '169.254.1.1', '169.254.1.1'],
    ['198.51.100.20:4711', '169.254.1.1', '169.254.1.1'],
    ['203.0.113.7, forged', undefined, undefined],
  ])('X-Forwarded-For %j from %s: %s', (header, peer, expected) => {
    expect(clientAddress(header, peer)).toBe(expected);
  });

  it.each([
    // Behind an external Application Load Balancer: <caller's>,<client>,<balancer>.
    [2, '203.0.113.7,198.51.100.20,192.0.2.1', '198.51.100.20'],
    [2, '198.51.100.20, 192.0.2.1', '198.51.100.20'],
    // Round the balancer, straight to the front end: one entry, the client's.
    [2, '198.51.100.20', '198.51.100.20'],
    [3, '198.51.100.20,192.0.2.1', '198.51.100.20'],
    [2, 'forged,192.0.2.1', '169.254.1.1'],
    // No proxy trusted: the socket's peer, whatever the header says.
    [0, '198.51.100.20', '169.254.1.1'],
  ])('%i trusted hops, X-Forwarded-For %j: %s', (hops, header, expected) => {
    expect(clientAddress(header, '169.254.1.1', hops)).toBe(expected);
  });
});

describe('TRUSTED_PROXY_HOPS', () => {
  it('behind an external load balancer (2), remoteIp is the entry before the balancer', async () => {
    const api = await startRole('api', {
      env: { BACKEND_URL: 'http://127.0.0.1:1', TRUSTED_PROXY_HOPS: '2' },
    });
    try {
      const parent = newTraceParent();
      const response = await fetch(`${api.url}/no-such-route`, {
        headers: {
          traceparent: parent.header,
          'x-forwarded-for': '203.0.113.7, 198.51.100.20, 192.0.2.1',
        },
      });
      expect(response.status).toBe(404);
      await response.arrayBuffer();
      const [line] = await requestLines(api, parent.traceId);
      expect(line?.httpRequest).toMatchObject({ status: 404, remoteIp: '198.51.100.20' });
    } finally {
      await api.stop();
    }
  });
});

describe('createLogger', () => {
  const labels = { 'service.name': 'greeter-test', 'service.version': '1.2.3' };
  const failure = () => Object.assign(new TypeError('boom'), { code: 'E_BOOM' });

  it.each([
    ['error(error)', 'ERROR', (logger: Logger, error: Error) => logger.error(error)],
    ['error({ error })', 'ERROR', (logger: Logger, error: Error) => logger.error({ error }, 'm')],
    [
      "Fastify's error({ err })",
      'ERROR',
      (logger: Logger, error: Error) => logger.error({ err: error }, 'm'),
    ],
    [
      'fatal({ error })',
      'CRITICAL',
      (logger: Logger, error: Error) => logger.fatal({ error }, 'm'),
    ],
  ])('%s: severity %s, the stack as stack_trace, serviceContext', (_, severity, write) => {
    const { logger, lines } = recordingLogger(labels);
    const error = failure();
    write(logger, error);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      severity,
      stack_trace: error.stack,
      serviceContext: { service: 'greeter-test', version: '1.2.3' },
    });
  });

  it('no stack_trace below ERROR, nor without a stack', () => {
    const { logger, lines } = recordingLogger(labels);
    logger.warn({ error: failure() }, 'a warning about an error');
    logger.info({ error: failure() }, 'information about an error');
    logger.error({ error: { message: 'no stack' } }, 'an error without a stack');
    logger.error('no error at all');
    expect(lines.map((line) => line.stack_trace)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  it.each([
    ['an Error', failure(), { type: 'TypeError', message: 'boom', code: 'E_BOOM' }],
    ['a string', 'getaddrinfo ENOTFOUND', { message: 'getaddrinfo ENOTFOUND' }],
    ['a number', 13, { message: '13' }],
    ['a plain object', { code: 13 }, { code: 13 }],
  ])('error is always an object: %s', (_, error, expected) => {
    const { logger, lines } = recordingLogger(labels);
    logger.warn({ error }, 'm');
    expect(lines[0]?.error).toMatchObject(expected);
  });

  it.each([
    [
      'an Error',
      new Error('outer', { cause: failure() }),
      { type: 'TypeError', message: 'boom', code: 'E_BOOM' },
    ],
    [
      'a string',
      new Error('outer', { cause: 'the disk is full' }),
      { message: 'the disk is full' },
    ],
    [
      "a ConnectError's plain object",
      new ConnectError('outer', Code.Internal, undefined, undefined, { reason: 13 }),
      { message: '{"reason":13}' },
    ],
    ['a BigInt, which JSON cannot write', new Error('outer', { cause: 13n }), { message: '13' }],
    [
      'a symbol, which JSON writes as nothing',
      new Error('outer', { cause: Symbol('gone') }),
      { message: 'Symbol(gone)' },
    ],
  ])("an error's cause is an object of its own, read once: %s", (_, error, cause) => {
    const { logger, lines } = recordingLogger(labels);
    logger.error({ error }, 'm');
    const logged = lines[0]?.error as { message: string; stack: string; cause: unknown };
    expect(logged.message).toMatch(/outer$/);
    expect(logged.stack).toBe(error.stack);
    expect(logged.cause).toEqual(expect.objectContaining(cause));
  });

  it("names the types in a cause chain and an AggregateError's entries as the code names them", () => {
    const { logger, lines } = recordingLogger(labels);
    class BackendDown extends Error {}
    const error = new AggregateError(
      [new ConnectError('one', Code.Unavailable), new BackendDown('two')],
      'all failed',
      { cause: new ConnectError('why', Code.Internal) },
    );
    logger.error({ error }, 'm');
    expect(lines[0]?.error).toMatchObject({
      type: 'AggregateError',
      aggregateErrors: [{ type: 'ConnectError' }, { type: 'BackendDown' }],
      cause: { type: 'ConnectError', message: '[internal] why' },
    });
  });

  it('names every level by its name where that is not its class’s (a timeout’s DOMException), as errorType does', () => {
    const { logger, lines } = recordingLogger(labels);
    const timeout = () => new DOMException('The operation timed out.', 'TimeoutError');
    const error = new AggregateError([timeout()], 'all failed', {
      cause: new Error('gave up', { cause: timeout() }),
    });
    logger.error({ error }, 'm');
    expect(lines[0]?.error).toMatchObject({
      type: 'AggregateError',
      aggregateErrors: [{ type: 'TimeoutError' }],
      cause: { type: 'Error', cause: { type: 'TimeoutError' } },
    });
  });

  it("serialises Fastify's err as error: the cause an object of its own, a string as message", () => {
    const { logger, lines } = recordingLogger(labels);
    logger.error({ err: new Error('outer', { cause: failure() }) }, 'm');
    logger.warn({ err: 'socket hang up' }, 'm');
    expect(lines[0]?.err).toMatchObject({
      message: 'outer',
      cause: { type: 'TypeError', message: 'boom' },
    });
    expect(lines[1]?.err).toEqual({ message: 'socket hang up' });
  });
});

describe('the span export warning', () => {
  it('is logged outside the request that flushed, with error as an object', async () => {
    // Nothing listens there: every export fails.
    const deadEndpoint = `http://127.0.0.1:${await freePort()}`;
    const api = await startRole('api', {
      env: {
        BACKEND_URL: `http://127.0.0.1:${await freePort()}`,
        OTEL_EXPORTER_OTLP_ENDPOINT: deadEndpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT: '500',
        OTEL_METRICS_EXPORTER: 'none',
        TELEMETRY_EXPORT_MODE: 'request',
        BACKEND_MAX_ATTEMPTS: '1',
      },
    });
    try {
      const parent = newTraceParent();
      // A 404 needs no backend; its sampled span is flushed inside the request.
      const response = await fetch(`${api.url}/nowhere`, {
        headers: { traceparent: parent.header },
      });
      expect(response.status).toBe(404);
      const exportWarning = () =>
        api.logs().find((line) => String(line.message).startsWith('span export to'));
      await expect.poll(exportWarning, { timeout: 10_000 }).toBeDefined();
      const warning = exportWarning();
      expect(warning?.severity).toBe('WARNING');
      expect(warning).not.toHaveProperty(TRACE);
      expect(warning).not.toHaveProperty('logging.googleapis.com/spanId');
      expect(warning?.error).toMatchObject({ message: expect.any(String) });
      expect(warning).not.toHaveProperty('stack_trace');
      // The request's own line still joins its trace.
      expect(linesOfTrace(api, parent.traceId)).toHaveLength(1);
    } finally {
      await api.stop();
    }
  });
});

describe('a process that cannot start', () => {
  it('a bad configuration: one CRITICAL JSON line on stdout listing every problem, exit 78', async () => {
    const result = await runToExit({ SERVICE_ROLE: 'api', PORT: 'abc', LOG_FORMAT: 'json' });
    expect(result.code).toBe(78);
    expect(result.stderr).toBe('');
    const lines = jsonLines(result.stdout);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      severity: 'CRITICAL',
      message: expect.stringMatching(/^Invalid configuration \(see "Configuration" in README.md\)/),
      problems: [
        'PORT: must be a TCP port (0-65535) (got "abc")',
        expect.stringMatching(/^BACKEND_URL: required when SERVICE_ROLE=api/),
      ],
      serviceContext: { service: 'greeter-api' },
    });
    expect(typeof lines[0]?.time).toBe('string');
  });

  it('a bad configuration says so even with LOG_LEVEL=silent', async () => {
    const result = await runToExit({
      SERVICE_ROLE: 'api',
      LOG_LEVEL: 'silent',
      LOG_FORMAT: 'json',
    });
    expect(result.code).toBe(78);
    expect(jsonLines(result.stdout)).toEqual([
      expect.objectContaining({
        severity: 'CRITICAL',
        problems: [expect.stringMatching(/^BACKEND_URL: required when SERVICE_ROLE=api/)],
      }),
    ]);
  });

  it('its port taken: the CRITICAL line has the stack for Error Reporting', async () => {
    const taken = createTcpServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    try {
      const address = taken.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const result = await runToExit({
        SERVICE_ROLE: 'backend',
        HOST: '127.0.0.1',
        PORT: String(port),
      });
      expect(result.code).toBe(1);
      expect(result.stderr).toBe('');
      const [critical, ...more] = jsonLines(result.stdout).filter(
        (line) => line.severity === 'CRITICAL',
      );
      expect(more).toEqual([]);
      expect(critical?.stack_trace).toMatch(/^Error: listen EADDRINUSE/);
      expect(critical?.serviceContext).toMatchObject({ service: 'greeter-backend' });
    } finally {
      taken.close();
    }
  });
});

describe('process faults', () => {
  /** The backend with a fault fixture armed; SIGUSR2 sets it off. */
  function startWithFault(fault: string, env: Record<string, string> = {}) {
    return startRole('backend', {
      env: { NODE_OPTIONS: `--import ${FAULT_FIXTURE}`, TEST_PROCESS_FAULT: fault, ...env },
    });
  }

  it('an uncaught exception: one CRITICAL line with the stack, queued spans flushed, exit 1', async () => {
    const receiver = await startOtlpReceiver();
    try {
      const backend = await startWithFault('throw', {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        // Far longer than the test: only the crash's flush can send the span.
        OTEL_BSP_SCHEDULE_DELAY: '60000',
        OTEL_METRICS_EXPORTER: 'none',
      });
      const parent = newTraceParent();
      expect(
        await grpcCallTo(backend.url, `/${UNKNOWN_METHOD}`, { traceparent: parent.header }),
      ).toBe('12');
      await expect.poll(() => linesOfTrace(backend, parent.traceId).length).toBe(1);
      expect(receiver.spans()).toEqual([]);

      backend.child.kill('SIGUSR2');
      expect(await backend.exited).toBe(1);
      expect(backend.stderr()).toBe('');
      const critical = backend.logs().filter((line) => line.severity === 'CRITICAL');
      expect(critical).toHaveLength(1);
      expect(critical[0]).toMatchObject({
        message: 'uncaught exception: a callback failed on purpose',
        error: { type: 'TypeError', message: 'a callback failed on purpose' },
        serviceContext: { service: 'greeter-backend' },
      });
      expect(critical[0]?.stack_trace).toMatch(/^TypeError: a callback failed on purpose\n {4}at /);
      expect(receiver.spans().map((span) => span.traceId)).toContain(parent.traceId);
    } finally {
      await receiver.close();
    }
  });

  it('a crash with a request in flight: the request is cut, and its span and 499 line leave with the flush', async () => {
    const receiver = await startOtlpReceiver();
    // A backend that takes calls and never answers: the request stays in flight.
    let calls = 0;
    const silent = await listenH2c(
      createHttp2Server((request) => {
        calls++;
        request.on('error', () => {});
      }),
    );
    try {
      const api = await startRole('api', {
        env: {
          NODE_OPTIONS: `--import ${FAULT_FIXTURE}`,
          TEST_PROCESS_FAULT: 'throw',
          BACKEND_URL: silent.url,
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
          OTEL_BSP_SCHEDULE_DELAY: '60000',
          OTEL_METRICS_EXPORTER: 'none',
        },
      });
      const parent = newTraceParent();
      const answer = postGreet(api.url, { name: 'a' }, { traceparent: parent.header }).then(
        (response) => response.status,
        () => 'cut',
      );
      await expect.poll(() => calls).toBe(1);
      api.child.kill('SIGUSR2');
      expect(await api.exited).toBe(1);
      expect(await answer).toBe('cut');
      expect(linesOfTrace(api, parent.traceId).map((line) => line.httpRequest)).toEqual([
        expect.objectContaining({ status: 499 }),
      ]);
      const spans = receiver.spans().filter((span) => span.traceId === parent.traceId);
      expect(spans.map((span) => span.kind).sort()).toEqual(['CLIENT', 'SERVER']);
    } finally {
      await silent.close();
      await receiver.close();
    }
  });

  it('a SIGTERM while the crash flushes: the drain does not turn the exit into 0', async () => {
    // An endpoint that never answers keeps the crash's flush busy for its whole 2 s.
    const silent = createTcpServer((socket) => socket.on('error', () => {})).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const address = silent.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      const backend = await startWithFault('throw', {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_BSP_SCHEDULE_DELAY: '60000',
        OTEL_METRICS_EXPORTER: 'none',
      });
      expect(await grpcCallTo(backend.url, `/${UNKNOWN_METHOD}`)).toBe('12');
      backend.child.kill('SIGUSR2');
      await expect
        .poll(() => backend.logs().filter((line) => line.severity === 'CRITICAL').length)
        .toBe(1);
      backend.child.kill('SIGTERM');
      expect(await backend.exited).toBe(1);
    } finally {
      silent.close();
    }
  });

  it.each([
    [
      'an Error',
      'reject',
      'unhandled promise rejection: a promise rejected on purpose',
      /^RangeError: a promise rejected on purpose\n/,
    ],
    [
      'a string',
      'reject-string',
      'unhandled promise rejection: a bare string rejected on purpose',
      undefined,
    ],
  ])(
    'an unhandled rejection of %s: one CRITICAL line, exit 1',
    async (_, fault, message, stack) => {
      const backend = await startWithFault(fault);
      backend.child.kill('SIGUSR2');
      expect(await backend.exited).toBe(1);
      expect(backend.stderr()).toBe('');
      const critical = backend.logs().filter((line) => line.severity === 'CRITICAL');
      expect(critical).toHaveLength(1);
      expect(critical[0]?.message).toBe(message);
      // `error` is an object either way; only an Error has a stack to report.
      expect(critical[0]?.error).toMatchObject({ message: expect.stringContaining('on purpose') });
      if (stack) expect(critical[0]?.stack_trace).toMatch(stack);
      else expect(critical[0]).not.toHaveProperty('stack_trace');
    },
  );

  it('a process warning: one WARNING line, no text on stderr, the process goes on', async () => {
    const backend = await startWithFault('warn');
    try {
      backend.child.kill('SIGUSR2');
      await expect
        .poll(() => backend.logs().filter((line) => line.severity === 'WARNING'))
        .toEqual([
          expect.objectContaining({
            message:
              'MaxListenersExceededWarning: Possible EventEmitter memory leak detected. 11 close listeners added',
            warning: expect.objectContaining({ name: 'MaxListenersExceededWarning' }),
          }),
        ]);
      expect(backend.stderr()).toBe('');
      expect(await grpcCallTo(backend.url, `/${UNKNOWN_METHOD}`)).toBe('12');
    } finally {
      expect(await backend.stop()).toBe(0);
    }
  });
});
