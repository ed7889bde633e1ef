import { randomUUID } from 'node:crypto';
import {
  defaultResource,
  detectResources,
  envDetector,
  type Resource,
  type ResourceDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import packageJson from '../../package.json' with { type: 'json' };
import type { Config } from '../config.js';
import { createCloudRunDetector } from './cloud-run-detector.js';
import {
  ATTR_CLOUD_ACCOUNT_ID,
  ATTR_DEPLOYMENT_ENVIRONMENT_NAME,
  ATTR_SERVICE_INSTANCE_ID,
  ATTR_SERVICE_NAMESPACE,
} from './semconv.js';

/**
 * The service labels every span, metric and log line carries. OTEL_SERVICE_NAME and
 * OTEL_RESOURCE_ATTRIBUTES override ours; on Cloud Run, cloud.* and faas.* are added without
 * delaying start-up (those from the metadata server resolve in the background, bounded).
 */
export function createResource(config: Config): Resource {
  const ours = resourceFromAttributes({
    ...serviceIdentity(config.SERVICE_NAMESPACE, config.SERVICE_ROLE),
    [ATTR_SERVICE_INSTANCE_ID]: randomUUID(),
    [ATTR_DEPLOYMENT_ENVIRONMENT_NAME]: config.DEPLOYMENT_ENVIRONMENT,
  });
  const detectors: ResourceDetector[] = [envDetector];
  if (config.onCloudRun) detectors.push(createCloudRunDetector({ env: process.env }));
  // The SDK's own (telemetry.sdk.*) first: ours and the detected override its service.name.
  return defaultResource().merge(ours).merge(detectResources({ detectors }));
}

/** The service's name (`greeter-api`), namespace and version, before OTEL_* overrides. */
export function serviceIdentity(namespace: string, role: string): Record<string, string> {
  return {
    [ATTR_SERVICE_NAME]: `${namespace}-${role}`,
    [ATTR_SERVICE_NAMESPACE]: namespace,
    [ATTR_SERVICE_VERSION]: packageJson.version,
  };
}

/**
 * The project id read from the metadata server (`cloud.account.id`): Cloud Run does not put it
 * in the environment. Rejects when the detector found none.
 */
export async function detectedProjectId(resource: Resource): Promise<string> {
  await resource.waitForAsyncAttributes?.();
  const id = resource.attributes[ATTR_CLOUD_ACCOUNT_ID];
  if (typeof id === 'string' && id !== '') return id;
  throw new Error('the Cloud Run resource detector found no project id (cloud.account.id)');
}
