import { ConfigError, parseConfig, type Role } from '../config.js';
import { startTelemetry } from '../telemetry/start-telemetry.js';
import { createEarlyLogger } from './early-logger.js';
import { cutOnCrash, holdSignalsWhileStarting } from './lifecycle.js';
import { handleProcessFaults } from './process-faults.js';

/*
 * The one start command for both roles: `node dist/entry/main.js`. Telemetry starts before the
 * role's modules are imported, so anything that instruments on import sees the SDK in place.
 * Everything the process says is a log line, a bad configuration and a crash included.
 */
const early = createEarlyLogger(process.env);
const faults = handleProcessFaults(early);
holdSignalsWhileStarting();

let config: ReturnType<typeof parseConfig>;
try {
  config = parseConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  early.fatal({ problems: error.problems }, error.message);
  process.exit(78);
}

const telemetry = await startTelemetry(config, {
  untrustedBaggageKeys: config.SERVICE_ROLE === 'api' ? config.TELEMETRY_BAGGAGE_ATTRIBUTES : [],
});
faults.use({
  logger: telemetry.logger,
  shutdown: (withinMs) => telemetry.shutdown(withinMs),
  cut: cutOnCrash,
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
  const reason = error instanceof Error ? error.message : String(error);
  const hint =
    (error as { code?: unknown }).code === 'EADDRINUSE'
      ? ': another process has that address; set PORT (or HOST) to a free one'
      : '';
  await faults.crash(error, `the ${role} role could not start: ${reason}${hint}`);
}
