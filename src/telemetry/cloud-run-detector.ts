import { request } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import type { DetectedResource, ResourceDetector } from '@opentelemetry/resources';
import {
  ATTR_CLOUD_ACCOUNT_ID,
  ATTR_CLOUD_PLATFORM,
  ATTR_CLOUD_PROVIDER,
  ATTR_CLOUD_REGION,
  ATTR_FAAS_INSTANCE,
  ATTR_FAAS_NAME,
  ATTR_FAAS_VERSION,
  CLOUD_PLATFORM_VALUE_GCP_CLOUD_RUN,
  CLOUD_PROVIDER_VALUE_GCP,
} from './semconv.js';

export interface CloudRunDetectorOptions {
  /**
   * `K_SERVICE`, `K_REVISION`, and the metadata server's address as gcp-metadata reads it
   * (`GCE_METADATA_IP`, else `GCE_METADATA_HOST`, else 169.254.169.254).
   */
  env: NodeJS.ProcessEnv;
  /** How long each attribute may take from detection, retries included (default 3 s). */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 3_000;
const ATTEMPTS = 3;
const RETRY_DELAY_MS = 100;
const METADATA_ADDRESS = '169.254.169.254';

/**
 * The resource attributes of a Cloud Run service, the same that
 * `@opentelemetry/resource-detector-gcp` reports there: the service and revision come from the
 * environment at once; the project, region and instance id from three metadata requests made
 * together. An attribute the metadata server does not give within the time limit is left out
 * (the SDK then logs that it dropped it).
 */
export function createCloudRunDetector(options: CloudRunDetectorOptions): ResourceDetector {
  const { env, timeoutMs = DEFAULT_TIMEOUT_MS } = options;
  return {
    detect(): DetectedResource {
      const read = createMetadataReader(env, Date.now() + timeoutMs);
      return {
        attributes: {
          [ATTR_CLOUD_PROVIDER]: CLOUD_PROVIDER_VALUE_GCP,
          [ATTR_CLOUD_PLATFORM]: CLOUD_PLATFORM_VALUE_GCP_CLOUD_RUN,
          ...(env.K_SERVICE ? { [ATTR_FAAS_NAME]: env.K_SERVICE } : {}),
          ...(env.K_REVISION ? { [ATTR_FAAS_VERSION]: env.K_REVISION } : {}),
          [ATTR_CLOUD_ACCOUNT_ID]: read('project/project-id'),
          // `projects/123456789/regions/europe-west1`
          [ATTR_CLOUD_REGION]: read('instance/region').then((path) => path?.split('/').pop()),
          [ATTR_FAAS_INSTANCE]: read('instance/id'),
        },
      };
    },
  };
}

/** The metadata API's root, or undefined when the address in the environment is not usable. */
function metadataBaseUrl(env: NodeJS.ProcessEnv): URL | undefined {
  const address = env.GCE_METADATA_IP || env.GCE_METADATA_HOST || METADATA_ADDRESS;
  const url = URL.parse(
    '/computeMetadata/v1/',
    /^\w+:\/\//.test(address) ? address : `http://${address}`,
  );
  return url?.protocol === 'http:' ? url : undefined;
}

type MetadataReader = (path: string) => Promise<string | undefined>;

/**
 * Reads text values, asking again after a failure (100 ms, then 200 ms later) until `deadline`;
 * resolves undefined when it gives up.
 */
function createMetadataReader(env: NodeJS.ProcessEnv, deadline: number): MetadataReader {
  const base = metadataBaseUrl(env);
  return async (path) => {
    if (!base) return undefined;
    const url = new URL(path, base);
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      if (attempt > 1) await delay(RETRY_DELAY_MS * 2 ** (attempt - 2), undefined, { ref: false });
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) return undefined;
      const answer = await getText(url, AbortSignal.timeout(remainingMs));
      if (answer.kind === 'value') return answer.value;
      if (answer.kind === 'absent') return undefined;
    }
    return undefined;
  };
}

type Answer = { kind: 'value'; value: string } | { kind: 'absent' } | { kind: 'failed' };

function getText(url: URL, signal: AbortSignal): Promise<Answer> {
  return new Promise((resolve) => {
    const call = request(url, { headers: { 'Metadata-Flavor': 'Google' }, signal });
    call.on('error', () => resolve({ kind: 'failed' }));
    call.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', () => resolve({ kind: 'failed' }));
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        const flavor = response.headers['metadata-flavor'];
        const value = Buffer.concat(chunks).toString('utf8').trim();
        if (status === 200 && flavor === 'Google' && value !== '') {
          resolve({ kind: 'value', value });
        } else {
          // A busy or failing server is worth asking again; a 404 or a stranger's answer is not.
          resolve(status >= 500 || status === 429 ? { kind: 'failed' } : { kind: 'absent' });
        }
      });
    });
    call.end();
  });
}
