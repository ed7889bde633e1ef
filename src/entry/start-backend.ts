import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Interceptor } from '@connectrpc/connect';
import { buildBackend } from '../backend/build-backend.js';
import type { Config } from '../config.js';
import { createTokenVerifier } from '../identity/token-verifier.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { logListening, stopOnSignals } from './lifecycle.js';

export async function startBackend(config: Config, telemetry: Telemetry): Promise<void> {
  const tokens = config.AUTH_VERIFY_TOKENS
    ? createTokenVerifier(config, telemetry.logger)
    : undefined;
  // Per-request hooks: Connect interceptors, run inside each call's SERVER span.
  const interceptors: Interceptor[] = [];
  if (tokens) interceptors.push(tokens.recordCaller);
  const backend = buildBackend(config, {
    telemetry,
    interceptors,
    ...(tokens ? { requestGate: tokens.requestGate } : {}),
  });
  backend.server.listen(config.PORT, config.HOST);
  // Rejects on a listen error, and leaves no listener behind to swallow a later one.
  await once(backend.server, 'listening');
  backend.serving();
  const { port } = backend.server.address() as AddressInfo;
  logListening(
    telemetry.logger,
    'backend',
    `http://${config.HOST}:${port} (h2c: gRPC, gRPC-Web, Connect)`,
  );
  stopOnSignals(
    {
      drain: () => backend.drain(),
      destroy: () => backend.destroy(),
    },
    telemetry,
    config.SHUTDOWN_TIMEOUT_MS,
  );
}
