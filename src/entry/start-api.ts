import { setTimeout as sleep } from 'node:timers/promises';
import { createBackendClient } from '../api/backend-client.js';
import { buildApi } from '../api/build-api.js';
import { enduserFromHeader } from '../api/request-hooks.js';
import type { Config } from '../config.js';
import { createGoogleIdTokenSource } from '../identity/google-id-token-source.js';
import { createIdTokenCredentials } from '../identity/id-token-credentials.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { logListening, stopOnSignals } from './lifecycle.js';

/** Time for callers to see `connection: close` before idle keep-alive sockets are closed. */
const DRAIN_NOTICE_MS = 500;

export async function startApi(config: Config, telemetry: Telemetry): Promise<void> {
  const target = config.backend;
  if (!target) throw new Error('BACKEND_URL is required for the api role');
  const backend = createBackendClient(target, {
    telemetry,
    ...(target.audience === undefined
      ? {}
      : {
          credentials: createIdTokenCredentials(
            target.audience,
            createGoogleIdTokenSource(),
            telemetry.logger,
          ),
        }),
  });
  const { app, startDraining } = await buildApi(config, {
    telemetry,
    // Every route plugin's options (src/routes/route-deps.ts): add what your routes need here.
    routeDeps: { backend },
    // Your hooks go here (README "Your own attributes"). This example trusts a header anyone
    // can send: replace it with the id your authentication verified.
    requestHooks: [enduserFromHeader('x-user-id')],
  });
  const address = await app.listen({ port: config.PORT, host: config.HOST });
  logListening(
    telemetry.logger,
    'api',
    `${address} (backend ${target.url.origin} over ${target.transport}${target.audience === undefined ? '' : `, ID tokens for ${target.audience}`})`,
  );
  stopOnSignals(
    {
      async drain() {
        startDraining();
        await sleep(DRAIN_NOTICE_MS);
        await app.close();
        backend.close();
      },
      destroy() {
        app.server.closeAllConnections();
        // The cut requests' backend calls end now (CANCELLED), so their spans can still be flushed.
        backend.close();
      },
    },
    telemetry,
    config.SHUTDOWN_TIMEOUT_MS,
  );
}
