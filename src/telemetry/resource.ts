import { randomUUID } from 'node:crypto';
import {
  type DetectedResource,
  detectResources,
  envDetector,
  type Resource,
  type ResourceDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import packageJson from '../../package.json' with { type: 'json' };
import type { Config } from '../config.js';
import {
  ATTR_CLOUD_ACCOUNT_ID,
  ATTR_DEPLOYMENT_ENVIRONMENT_NAME,
  ATTR_SERVICE_INSTANCE_ID,
  ATTR_SERVICE_NAMESPACE,
} from './semconv.js';

const GCP_DETECTION_TIMEOUT_MS = 3_000;

/**
 * The service labels every span, metric and log line carries. OTEL_SERVICE_NAME and
 * OTEL_RESOURCE_ATTRIBUTES override ours; on Google Cloud the GCP detector adds cloud.* and
 * faas.* without delaying start-up (its attributes resolve in the background, bounded).
 */
export function createResource(config: Config): Resource {
  const ours = resourceFromAttributes({
    [ATTR_SERVICE_NAME]: `${config.SERVICE_NAMESPACE}-${config.SERVICE_ROLE}`,
    [ATTR_SERVICE_NAMESPACE]: config.SERVICE_NAMESPACE,
    [ATTR_SERVICE_VERSION]: packageJson.version,
    [ATTR_SERVICE_INSTANCE_ID]: randomUUID(),
    [ATTR_DEPLOYMENT_ENVIRONMENT_NAME]: config.DEPLOYMENT_ENVIRONMENT,
  });
  const detectors: ResourceDetector[] = [envDetector];
  // Only on Cloud Run: elsewhere the detector would probe 169.254.169.254 for nothing.
  if (config.onCloudRun) detectors.push(lazyGcpDetector());
  return ours.merge(detectResources({ detectors }));
}

/**
 * The project id the GCP detector read from the metadata server (`cloud.account.id`): Cloud Run
 * does not put it in the environment. Rejects when the detector found none.
 */
export async function detectedProjectId(resource: Resource): Promise<string> {
  await resource.waitForAsyncAttributes?.();
  const id = resource.attributes[ATTR_CLOUD_ACCOUNT_ID];
  if (typeof id === 'string' && id !== '') return id;
  throw new Error('the GCP resource detector found no project id (cloud.account.id)');
}

/** The GCP detector, loaded and run in the background; its attributes resolve later. */
function lazyGcpDetector(): ResourceDetector {
  const detected = import('@opentelemetry/resource-detector-gcp').then(({ gcpDetector }) =>
    gcpDetector.detect(),
  );
  // What the detector reports on Cloud Run.
  const names = [
    'cloud.provider',
    'cloud.platform',
    'cloud.account.id',
    'cloud.region',
    'faas.name',
    'faas.version',
    'faas.instance',
  ];
  return {
    detect(): DetectedResource {
      const attributes = Object.fromEntries(
        names.map((name) => [name, withTimeout(detected.then((r) => r.attributes?.[name]))]),
      );
      return { attributes };
    },
  };
}

async function withTimeout<T>(promise: Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), GCP_DETECTION_TIMEOUT_MS);
    timer.unref();
  });
  try {
    return await Promise.race([promise.catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
