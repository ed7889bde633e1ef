import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gcpDetector } from '@opentelemetry/resource-detector-gcp';
import { detectResources, type Resource } from '@opentelemetry/resources';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createCloudRunDetector } from '../src/telemetry/cloud-run-detector.js';
import { type MetadataServer, startMetadataServer } from '../tools/cloud-run-local/index.ts';

/*
 * The product's Cloud Run detector against the metadata server of tools/cloud-run-local, and
 * against OpenTelemetry's GCP detector, whose attributes it must report unchanged.
 */
const CLOUD_RUN_ENV = {
  K_SERVICE: 'greeter-backend',
  K_REVISION: 'greeter-backend-00007-abc',
  K_CONFIGURATION: 'greeter-backend',
};
/** What the environment alone gives, when the metadata server gives nothing. */
const FROM_ENVIRONMENT = {
  'cloud.provider': 'gcp',
  'cloud.platform': 'gcp_cloud_run',
  'faas.name': 'greeter-backend',
  'faas.version': 'greeter-backend-00007-abc',
};

async function detect(env: NodeJS.ProcessEnv, timeoutMs?: number): Promise<Resource> {
  const detector = createCloudRunDetector(timeoutMs === undefined ? { env } : { env, timeoutMs });
  const resource = detectResources({ detectors: [detector] });
  await resource.waitForAsyncAttributes?.();
  return resource;
}

type StubServer = { host: string; requests: () => number; close: () => Promise<void> };

/** A server on 127.0.0.1 whose answers `respond` writes; it counts the requests. */
async function startStubServer(
  respond: (request: IncomingMessage, response: ServerResponse, count: number) => void,
): Promise<StubServer> {
  let requests = 0;
  const server: Server = createServer((request, response) => {
    requests++;
    respond(request, response, requests);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    requests: () => requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Answers every request with `status`. */
const startCountingServer = (status: number, headers: Record<string, string>) =>
  startStubServer((_request, response) => response.writeHead(status, headers).end('some-answer'));

describe('the Cloud Run resource detector', () => {
  let metadata: MetadataServer;
  beforeAll(async () => {
    metadata = await startMetadataServer({ projectId: 'run-project', region: 'europe-west1' });
  });
  afterEach(() => {
    metadata.setDown(false);
    metadata.setDelayMs(0);
    vi.unstubAllEnvs();
  });
  afterAll(async () => {
    await metadata?.close();
  });

  it("reports what OpenTelemetry's GCP detector reports on Cloud Run", async () => {
    for (const [name, value] of Object.entries(CLOUD_RUN_ENV)) vi.stubEnv(name, value);
    vi.stubEnv('GCE_METADATA_HOST', metadata.host);
    const upstream = detectResources({ detectors: [gcpDetector] });
    await upstream.waitForAsyncAttributes?.();
    const ours = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.host });
    expect(upstream.attributes['cloud.account.id']).toBe('run-project');
    expect(ours.attributes).toEqual(upstream.attributes);
  });

  it('reads the project, the region without its path, and the instance id', async () => {
    const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.url });
    expect(resource.attributes).toMatchObject({
      ...FROM_ENVIRONMENT,
      'cloud.account.id': 'run-project',
      'cloud.region': 'europe-west1',
    });
    expect(resource.attributes['faas.instance']).toMatch(/^\d{19}$/);
  });

  it('keeps an instance id as it is sent (hex digits, leading zeros)', async () => {
    const instanceId = `0069${'c7a4e2'.repeat(12)}`;
    const hex = await startMetadataServer({ projectId: 'run-project', instanceId });
    try {
      const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: hex.host });
      expect(resource.attributes['faas.instance']).toBe(instanceId);
    } finally {
      await hex.close();
    }
  });

  it('prefers GCE_METADATA_IP to GCE_METADATA_HOST, as gcp-metadata does', async () => {
    const resource = await detect({
      ...CLOUD_RUN_ENV,
      GCE_METADATA_IP: metadata.host,
      GCE_METADATA_HOST: '127.0.0.1:9',
    });
    expect(resource.attributes['cloud.account.id']).toBe('run-project');
  });

  it('asks again when the metadata server fails for a moment', async () => {
    // Each path fails once, then is answered.
    const seen = new Set<string>();
    const flaky = await startStubServer((request, response) => {
      const path = request.url ?? '';
      if (!seen.has(path)) {
        seen.add(path);
        response.writeHead(503).end();
        return;
      }
      const value = path.endsWith('/region') ? 'projects/1/regions/asia-east1' : 'flaky-project';
      response.writeHead(200, { 'metadata-flavor': 'Google' }).end(value);
    });
    try {
      const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: flaky.host });
      expect(resource.attributes['cloud.account.id']).toBe('flaky-project');
      expect(resource.attributes['cloud.region']).toBe('asia-east1');
      expect(flaky.requests()).toBe(6);
    } finally {
      await flaky.close();
    }
  });

  it('asks three times at most after server errors or 429, and once after a 404', async () => {
    for (const [status, perAttribute] of [
      [503, 3],
      [429, 3],
      [404, 1],
    ] as const) {
      const server = await startCountingServer(status, { 'metadata-flavor': 'Google' });
      try {
        const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: server.host });
        expect(resource.attributes).toEqual(FROM_ENVIRONMENT);
        expect(server.requests(), `requests after ${status}`).toBe(3 * perAttribute);
      } finally {
        await server.close();
      }
    }
  });

  it('gives up on a metadata server slower than its limit, keeping what the environment says', async () => {
    metadata.setDelayMs(2_000);
    const started = performance.now();
    const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.host }, 300);
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(resource.attributes).toEqual(FROM_ENVIRONMENT);
  });

  it('gives up on an answer whose body stalls, within its limit', async () => {
    const stalling = await startStubServer((_request, response) => {
      response.writeHead(200, { 'metadata-flavor': 'Google' });
      response.write('run-');
    });
    try {
      const started = performance.now();
      const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: stalling.host }, 300);
      expect(performance.now() - started).toBeLessThan(1_500);
      expect(resource.attributes).toEqual(FROM_ENVIRONMENT);
    } finally {
      await stalling.close();
    }
  });

  it('ignores an answer that does not come from a metadata server', async () => {
    const impostor = await startCountingServer(200, {});
    try {
      const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: impostor.host });
      expect(resource.attributes).toEqual(FROM_ENVIRONMENT);
    } finally {
      await impostor.close();
    }
  });

  it('keeps what the environment says when the metadata address is not usable', async () => {
    for (const address of ['https://metadata.example', 'http://[not-an-address']) {
      const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: address });
      expect(resource.attributes, address).toEqual(FROM_ENVIRONMENT);
    }
  });
});
