import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gcpDetector } from '@opentelemetry/resource-detector-gcp';
import { detectResources, type Resource } from '@opentelemetry/resources';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
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

async function detect(env: NodeJS.ProcessEnv, timeoutMs?: number): Promise<Resource> {
  const detector = createCloudRunDetector(timeoutMs === undefined ? { env } : { env, timeoutMs });
  const resource = detectResources({ detectors: [detector] });
  await resource.waitForAsyncAttributes?.();
  return resource;
}

describe('the Cloud Run resource detector', () => {
  let metadata: MetadataServer;
  beforeAll(async () => {
    metadata = await startMetadataServer({ projectId: 'run-project', region: 'europe-west1' });
  });
  afterEach(() => {
    metadata.setDown(false);
    metadata.setDelayMs(0);
  });
  afterAll(async () => {
    await metadata?.close();
  });

  it("reports what OpenTelemetry's GCP detector reports on Cloud Run", async () => {
    const saved = { ...process.env };
    Object.assign(process.env, CLOUD_RUN_ENV, { GCE_METADATA_HOST: metadata.host });
    try {
      const upstream = detectResources({ detectors: [gcpDetector] });
      await upstream.waitForAsyncAttributes?.();
      const ours = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.host });
      expect(upstream.attributes['cloud.account.id']).toBe('run-project');
      expect(ours.attributes).toEqual(upstream.attributes);
    } finally {
      process.env = saved;
    }
  });

  it('reads the project, the region without its path, and the instance id', async () => {
    const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.url });
    expect(resource.attributes).toMatchObject({
      'cloud.provider': 'gcp',
      'cloud.platform': 'gcp_cloud_run',
      'cloud.account.id': 'run-project',
      'cloud.region': 'europe-west1',
      'faas.name': 'greeter-backend',
      'faas.version': 'greeter-backend-00007-abc',
    });
    expect(resource.attributes['faas.instance']).toMatch(/^\d{19}$/);
  });

  it('asks again when the metadata server fails for a moment', async () => {
    metadata.setDown(true);
    const detected = detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.host });
    setTimeout(() => metadata.setDown(false), 50);
    expect((await detected).attributes['cloud.account.id']).toBe('run-project');
  });

  it('gives up on a metadata server slower than its limit, keeping what the environment says', async () => {
    metadata.setDelayMs(2_000);
    const started = performance.now();
    const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: metadata.host }, 300);
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(resource.attributes).toEqual({
      'cloud.provider': 'gcp',
      'cloud.platform': 'gcp_cloud_run',
      'faas.name': 'greeter-backend',
      'faas.version': 'greeter-backend-00007-abc',
    });
  });

  it('ignores an answer that does not come from a metadata server', async () => {
    const impostor = createServer((_request, response) => response.end('not-metadata'));
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    const { port } = impostor.address() as AddressInfo;
    try {
      const resource = await detect({ ...CLOUD_RUN_ENV, GCE_METADATA_HOST: `127.0.0.1:${port}` });
      expect(resource.attributes['cloud.account.id']).toBeUndefined();
      expect(resource.attributes['cloud.region']).toBeUndefined();
      expect(resource.attributes['faas.name']).toBe('greeter-backend');
    } finally {
      await new Promise((resolve) => impostor.close(resolve));
    }
  });
});
