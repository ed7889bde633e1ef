import {
  DEFAULT_DEPLOYMENT_ENVIRONMENT,
  DEFAULT_SERVICE_NAMESPACE,
  LOG_FORMATS,
  LOG_LEVELS,
  ROLES,
} from '../config.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { serviceIdentity } from '../telemetry/resource.js';

/**
 * The logger for what happens before the configuration is known to be valid (a bad variable, a
 * crash while starting): the same line format as telemetry's, built from the raw environment,
 * each value taken only when it is valid. The labels are the service's own as far as they can
 * be told before the resource is: all but `service.instance.id`, which the resource draws.
 */
export function createEarlyLogger(env: Record<string, string | undefined>): Logger {
  const level = LOG_LEVELS.find((known) => known === env.LOG_LEVEL?.toLowerCase()) ?? 'info';
  const format = LOG_FORMATS.find((known) => known === env.LOG_FORMAT);
  const role = ROLES.find((known) => known === env.SERVICE_ROLE);
  const { 'service.name': ownName, ...rest } = serviceIdentity(
    env.SERVICE_NAMESPACE || DEFAULT_SERVICE_NAMESPACE,
    role ?? '',
  );
  const name = env.OTEL_SERVICE_NAME || (role && ownName);
  return createLogger({
    // A process that refuses to start says why, even when asked to be silent.
    level: level === 'silent' ? 'fatal' : level,
    format,
    labels: {
      ...(name ? { 'service.name': name } : {}),
      ...rest,
      'deployment.environment.name': env.DEPLOYMENT_ENVIRONMENT || DEFAULT_DEPLOYMENT_ENVIRONMENT,
    },
    projectId: () => env.GOOGLE_CLOUD_PROJECT || 'unknown',
  });
}
