import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:http2';
import { promisify } from 'node:util';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../src/gen/grpc/health/v1/health_pb.js';
import { type LocalStack, startLocalStack } from '../tools/local-stack/index.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { postGreetTls } from './helpers/http.js';
import { type RoleProcess, startRole } from './helpers/roles.js';
import { newTraceParent, waitForGreetTrace } from './helpers/traces.js';

/*
 * The production path on this machine: the api mints Google ID tokens from a local metadata
 * server and calls the backend over TLS through a front end that checks them and rewrites
 * trace headers the way Google's front end does.
 */
describe('the Cloud Run path: TLS, ID tokens, front-end rewrite', () => {
  let receiver: OtlpReceiver;
  let stack: LocalStack;
  const roles: RoleProcess[] = [];
  let ca: string;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    stack = await startLocalStack({
      cloud: true,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '100' },
      async startRole(role, env) {
        const started = await startRole(role, { env });
        roles.push(started);
        return started;
      },
    });
    ca = await readFile(stack.cloud?.caFile ?? '', 'utf8');
  });
  afterAll(async () => {
    await stack?.stop();
    await receiver?.close();
  });

  const apiRole = () =>
    roles.find((role) => role.child.spawnargs && role.logs().some((l) => l.role === 'api'));

  const greetThroughFrontEnd = (headers: Record<string, string>, body: object) =>
    postGreetTls(stack.apiUrl, ca, body, headers);

  it('keeps one trace with the right parents although the front end rewrites the parent', async () => {
    const parent = newTraceParent();
    const response = await greetThroughFrontEnd({ traceparent: parent.header }, { name: 'Cloud' });
    expect(response).toEqual({ status: 200, body: { reply: 'Hello Cloud!!' } });

    const { server, client, backend } = await waitForGreetTrace(receiver, parent.traceId);
    expect(client.parentSpanId).toBe(server.spanId);
    // The backend's front end replaced the parent id with its own span; we still point at ours
    // and keep the front end's span as a link.
    const rewrite = stack.cloud?.backendFrontEnd.lastRewrite();
    expect(rewrite?.spanId).toBeDefined();
    expect(rewrite?.outgoing).not.toContain(client.spanId);
    expect(backend.parentSpanId).toBe(client.spanId);
    expect(backend.links).toEqual([
      expect.objectContaining({
        traceId: parent.traceId,
        spanId: rewrite?.spanId,
        attributes: { 'cloud_run.front_end_span': true },
      }),
    ]);
    expect(server.attributes['url.scheme']).toBe('https');
    expect(backend.attributes['caller.service_account']).toBe(stack.cloud?.apiServiceAccount);
    // Both services live in one project, so their log lines join the same trace.
    const tracePath = `projects/local-project/traces/${parent.traceId}`;
    for (const role of roles) {
      await expect
        .poll(() => role.logs().some((line) => line['logging.googleapis.com/trace'] === tracePath))
        .toBe(true);
    }
  });

  it('is ready: /readyz asks the backend through its front end, with an ID token', async () => {
    // The readiness check is the api's startup probe: refused by the front end, no deploy starts.
    const session = connect(stack.apiUrl, { ca });
    try {
      const stream = session.request({ ':path': '/readyz' });
      stream.end();
      const status = await new Promise<number>((resolve, reject) => {
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', reject);
      });
      let text = '';
      for await (const chunk of stream) text += chunk;
      expect({ status, body: JSON.parse(text) }).toEqual({
        status: 200,
        body: { status: 'ready' },
      });
    } finally {
      session.close();
    }
  });

  it('fetches the ID token once for many calls', async () => {
    const before = stack.cloud?.metadata.idTokenRequests() ?? 0;
    for (let i = 0; i < 5; i++) {
      expect((await greetThroughFrontEnd({}, { name: `n${i}` })).status).toBe(200);
    }
    expect(stack.cloud?.metadata.idTokenRequests()).toBe(before);
  });

  describe('the backend refuses callers without a valid token', () => {
    const call = async (token: string | undefined) => {
      const sessionManager = new Http2SessionManager(stack.backendUrl, {}, { ca });
      const client = createClient(
        BackendService,
        createGrpcTransport({ baseUrl: stack.backendUrl, sessionManager }),
      );
      try {
        await client.greet(
          { name: 'x' },
          token ? { headers: { authorization: `Bearer ${token}` } } : {},
        );
        return 'OK';
      } catch (error) {
        return Code[ConnectError.from(error).code];
      } finally {
        sessionManager.abort();
      }
    };
    const metadata = () => {
      if (!stack.cloud) throw new Error('cloud mode');
      return stack.cloud.metadata;
    };
    const audience = () => stack.cloud?.backendFrontEnd.audience ?? '';

    it.each([
      ['no token', () => undefined, 'Unauthenticated'],
      [
        'a token for another audience',
        () => metadata().mintIdToken('https://other.example'),
        'Unauthenticated',
      ],
      [
        'an expired token',
        () =>
          metadata().mintIdToken(audience(), {
            issuedAt: Math.floor(Date.now() / 1000) - 7200,
            expiresInSeconds: 3600,
          }),
        'Unauthenticated',
      ],
      [
        'a caller that is not allowed',
        () =>
          metadata().mintIdToken(audience(), { email: 'intruder@other.iam.gserviceaccount.com' }),
        'PermissionDenied',
      ],
      [
        'a valid token from the api service account',
        () => metadata().mintIdToken(audience()),
        'OK',
      ],
    ])('%s → %s', async (_case, token, expected) => {
      expect(await call(token())).toBe(expected);
    });
  });

  it('checks tokens in the backend itself when called around the front end', async () => {
    const sessionManager = new Http2SessionManager(stack.backendDirectUrl);
    const client = createClient(
      BackendService,
      createGrpcTransport({ baseUrl: stack.backendDirectUrl, sessionManager }),
    );
    try {
      const error = await client
        .greet({ name: 'sneaky' })
        .catch((e: unknown) => ConnectError.from(e));
      expect((error as ConnectError).code).toBe(Code.Unauthenticated);
      const other = stack.cloud?.metadata.mintIdToken(stack.cloud.backendFrontEnd.audience, {
        email: 'intruder@other.iam.gserviceaccount.com',
      });
      const denied = await client
        .greet({ name: 'sneaky' }, { headers: { authorization: `Bearer ${other}` } })
        .catch((e: unknown) => ConnectError.from(e));
      expect((denied as ConnectError).code).toBe(Code.PermissionDenied);
    } finally {
      sessionManager.abort();
    }
  });

  it('never writes tokens to the logs', async () => {
    const token = stack.cloud?.metadata.mintIdToken(stack.cloud.backendFrontEnd.audience) ?? '';
    const signature = token.split('.')[2] ?? 'missing';
    for (const role of roles) {
      expect(JSON.stringify(role.logs())).not.toContain(signature.slice(0, 20));
      expect(JSON.stringify(role.logs())).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/);
    }
    expect(apiRole()).toBeDefined();
  });
});

describe('the token source', () => {
  let stack: LocalStack;
  let ca: string;

  beforeAll(async () => {
    stack = await startLocalStack({
      cloud: true,
      env: { OTEL_SDK_DISABLED: 'true', BACKEND_TIMEOUT_MS: '1500' },
      startRole: (role, env) => startRole(role, { env }),
    });
    ca = await readFile(stack.cloud?.caFile ?? '', 'utf8');
  });
  afterAll(async () => {
    await stack?.stop();
  });

  const metadata = () => {
    if (!stack.cloud) throw new Error('cloud mode');
    return stack.cloud.metadata;
  };

  const greet = () => postGreetTls(stack.apiUrl, ca, { name: 'Meta' });

  it('is asked again once the cached token nears expiry, not before', async () => {
    // Tokens are refreshed five minutes before they expire: one that lives 302 s is due in 2 s.
    metadata().setIdTokenLifetimeSeconds(302);
    const first = metadata().idTokenRequests();
    expect((await greet()).status).toBe(200);
    expect((await greet()).status).toBe(200);
    expect(metadata().idTokenRequests()).toBe(first + 1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    // The call is answered with the token in hand; the new one is fetched in the background.
    expect((await greet()).status).toBe(200);
    await expect.poll(() => metadata().idTokenRequests()).toBe(first + 2);
    metadata().setIdTokenLifetimeSeconds(3600);
  });

  it('answers 503 saying what to check once no token is usable and the metadata server is down, and recovers', async () => {
    // The token in hand (from the test above: 302 s) is due for refresh 2 s after it was
    // fetched: the next call sends it and one of 62 s is fetched in the background. 2.5 s later that one has less than the minute a
    // token must have left to be sent, so the next call must ask the metadata server.
    metadata().setIdTokenLifetimeSeconds(62);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const before = metadata().idTokenRequests();
    expect((await greet()).status).toBe(200);
    await expect.poll(() => metadata().idTokenRequests()).toBe(before + 1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    metadata().setDown(true);
    const failed = await greet();
    expect(failed.status).toBe(503);
    expect(failed.body.detail).toContain('ID token');
    expect(failed.body.detail).not.toContain('localhost');
    metadata().setDown(false);
    metadata().setIdTokenLifetimeSeconds(3600);
    expect((await greet()).status).toBe(200);
  });

  it('is not needed for health checks and reflection, even with the token check on', async () => {
    const sessionManager = new Http2SessionManager(stack.backendDirectUrl);
    try {
      const health = createClient(
        Health,
        createGrpcTransport({ baseUrl: stack.backendDirectUrl, sessionManager }),
      );
      const { status } = await health.check({ service: '' });
      expect(status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      sessionManager.abort();
    }
    const { stdout } = await promisify(execFile)('npx', [
      'buf',
      'curl',
      '--protocol',
      'grpc',
      '--http2-prior-knowledge',
      '--list-services',
      stack.backendDirectUrl,
    ]);
    expect(stdout).toContain('backend_service.v1.BackendService');
  });
});
