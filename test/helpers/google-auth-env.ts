import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MetadataServer } from '../../tools/cloud-run-local/index.ts';

/**
 * Points google-auth-library in this process at a local metadata server as on Cloud Run
 * (`K_SERVICE` set, so gcp-metadata puts no time limit of its own on its requests), with an
 * empty gcloud config and no key file, so a developer's own credentials are never used.
 * Resolves with what puts the environment back.
 */
export async function useMetadataServer(metadata: MetadataServer): Promise<() => Promise<void>> {
  const saved = { ...process.env };
  const gcloudConfig = await mkdtemp(join(tmpdir(), 'gcloud-'));
  delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  Object.assign(process.env, {
    GCE_METADATA_HOST: metadata.host,
    CLOUDSDK_CONFIG: gcloudConfig,
    K_SERVICE: 'greeter-api',
  });
  return async () => {
    process.env = saved;
    await rm(gcloudConfig, { recursive: true, force: true });
  };
}
