import { ConfigError, parseConfig, type Role } from '../config.js';
import { startTelemetry } from '../telemetry/start-telemetry.js';

/*
 * The one start command for both roles: `node dist/entry/main.js`. Telemetry starts before the
 * role's modules are imported, so anything that instruments on import sees the SDK in place.
 */
let config: ReturnType<typeof parseConfig>;
try {
  config = parseConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(error.message);
  process.exit(78);
}

const telemetry = await startTelemetry(config, {
  untrustedBaggageKeys: config.SERVICE_ROLE === 'api' ? config.TELEMETRY_BAGGAGE_ATTRIBUTES : [],
});

const role: Role = config.SERVICE_ROLE;
try {
  switch (role) {
    case 'api': {
      const { startApi } = await import('./start-api.js');
      await startApi(config, telemetry);
      break;
    }
    case 'backend': {
      const { startBackend } = await import('./start-backend.js');
      await startBackend(config, telemetry);
      break;
    }
    default: {
      const unknown: never = role;
      throw new Error(`unknown role ${String(unknown)}`);
    }
  }
} catch (error) {
  // One structured line (severity CRITICAL) rather than a stack spread over many log entries.
  const reason = error instanceof Error ? error.message : String(error);
  telemetry.logger.fatal({ error }, `the ${role} role could not start: ${reason}`);
  process.exit(1);
}
