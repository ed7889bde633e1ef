import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendService } from '../src/gen/backend_service/v1/backend_service_pb.js';
import { type MetadataServer, startMetadataServer } from '../tools/cloud-run-local/index.ts';
import { type OtlpReceiver, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { type RoleProcess, startRole } from './helpers/roles.js';
import { newTraceParent } from './helpers/traces.js';

/*
 * A role that believes it runs on Cloud Run (K_SERVICE set) beside a local metadata server:
 * GCP resource detection, the project id for log correlation, per-request flushing, and what
 * is loaded for it.
 */
/** The backend as Cloud Run starts it, beside `metadata`, exporting to `receiver`. */
function onCloudRun(metadata: MetadataServer, receiver: OtlpReceiver): Record<string, string> {
  return {
    K_SERVICE: 'greeter-backend',
    K_REVISION: 'greeter-backend-00007-abc',
    K_CONFIGURATION: 'greeter-backend',
    GCE_METADATA_HOST: metadata.host,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
  };
}

describe('on Cloud Run (K_SERVICE and a metadata server)', () => {
  let metadata: MetadataServer;
  let receiver: OtlpReceiver;
  let backend: RoleProcess;
  let sessionManager: Http2SessionManager;
  // Node names every module it compiles when a compile cache is set and this debug flag is on.
  const compileCache = mkdtempSync(join(tmpdir(), 'on-cloud-run-cache-'));

  beforeAll(async () => {
    metadata = await startMetadataServer({ projectId: 'run-project', region: 'europe-west1' });
    receiver = await startOtlpReceiver();
    backend = await startRole('backend', {
      env: {
        ...onCloudRun(metadata, receiver),
        OTEL_BSP_SCHEDULE_DELAY: '60000',
        NODE_COMPILE_CACHE: compileCache,
        NODE_DEBUG_NATIVE: 'COMPILE_CACHE',
      },
    });
    sessionManager = new Http2SessionManager(backend.url);
  });
  afterAll(async () => {
    sessionManager?.abort();
    await backend?.stop();
    await receiver?.close();
    await metadata?.close();
    rmSync(compileCache, { recursive: true, force: true });
  });

  it('labels spans with the GCP resource attributes and flushes before answering', async () => {
    const client = createClient(
      BackendService,
      createGrpcTransport({ baseUrl: backend.url, sessionManager }),
    );
    const parent = newTraceParent();
    await client.greet({ name: 'Run' }, { headers: { traceparent: parent.header } });
    // The batch delay is a minute: only the per-request flush (default on Cloud Run) delivers it.
    const spans = await receiver.waitForSpans(
      (all) => all.some((s) => s.traceId === parent.traceId),
      {
        timeoutMs: 5_000,
      },
    );
    const span = spans.find((s) => s.traceId === parent.traceId);
    expect(span?.resource).toMatchObject({
      'cloud.provider': 'gcp',
      'cloud.platform': 'gcp_cloud_run',
      'cloud.region': 'europe-west1',
      'faas.name': 'greeter-backend',
      'faas.version': 'greeter-backend-00007-abc',
      'service.name': 'greeter-backend',
    });
  });

  it('correlates logs with the project read from the metadata server, without noise', async () => {
    const client = createClient(
      BackendService,
      createGrpcTransport({ baseUrl: backend.url, sessionManager }),
    );
    const parent = newTraceParent();
    const error = await client
      .greet({ name: 'x', withError: true }, { headers: { traceparent: parent.header } })
      .catch((e: unknown) => ConnectError.from(e));
    expect((error as ConnectError).code).toBe(Code.Internal);
    await expect
      .poll(() =>
        backend
          .logs()
          .find(
            (line) =>
              line['logging.googleapis.com/trace'] ===
              `projects/run-project/traces/${parent.traceId}`,
          ),
      )
      .toMatchObject({ severity: 'ERROR', 'logging.googleapis.com/trace_sampled': true });
    expect(backend.logs().filter((line) => line.severity === 'WARNING')).toEqual([]);
  });

  it('loads google-auth-library only for an export that needs a Google token', async () => {
    const dist = resolve(import.meta.dirname, '../dist');
    const chunks = readdirSync(dist).filter(
      (file) =>
        file.endsWith('.js') &&
        readFileSync(join(dist, file), 'utf8').includes('node_modules/google-auth-library/'),
    );
    expect(chunks, 'the one bundle chunk holding google-auth-library').toHaveLength(1);
    const [chunk] = chunks;
    const client = createClient(
      BackendService,
      createGrpcTransport({ baseUrl: backend.url, sessionManager }),
    );
    const sampled = newTraceParent();
    await client.greet({ name: 'Run' }, { headers: { traceparent: sampled.header } });
    await client.greet({ name: 'Run' }, { headers: { traceparent: newTraceParent(false).header } });
    await receiver.waitForSpans((all) => all.some((s) => s.traceId === sampled.traceId));
    // The spans went to an endpoint that is not Google's, so no token was needed, and the
    // project id came from the resource detector.
    expect(backend.stderr()).toContain('start-backend-');
    expect(backend.stderr()).not.toContain(String(chunk));
  });
});

describe('on Cloud Run with a metadata server slower than the resource detector waits', () => {
  it('still learns the project id for log correlation', async () => {
    const metadata = await startMetadataServer({ projectId: 'slow-project' });
    metadata.setDelayMs(3_200);
    const receiver = await startOtlpReceiver();
    const backend = await startRole('backend', { env: onCloudRun(metadata, receiver) });
    const sessionManager = new Http2SessionManager(backend.url);
    try {
      const client = createClient(
        BackendService,
        createGrpcTransport({ baseUrl: backend.url, sessionManager }),
      );
      // The detector gives up after 3 s; the project id must still arrive.
      const traceFieldOfACall = async () => {
        const parent = newTraceParent(false);
        await client.greet({ name: 'Slow' }, { headers: { traceparent: parent.header } });
        const line = backend
          .logs()
          .find((entry) => String(entry['logging.googleapis.com/trace']).endsWith(parent.traceId));
        return line?.['logging.googleapis.com/trace'];
      };
      await expect
        .poll(traceFieldOfACall, { timeout: 15_000, interval: 500 })
        .toMatch(/^projects\/slow-project\/traces\//);
    } finally {
      sessionManager.abort();
      await backend.stop();
      await receiver.close();
      await metadata.close();
    }
  }, 30_000);
});
