import { createServer, type Http2Server, type Http2Session } from 'node:http2';
import type { Interceptor } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { Config } from '../config.js';
import { BackendService } from '../gen/backend_service/v1/backend_service_pb.js';
import {
  createHealthStatus,
  type HealthStatus,
  INFRASTRUCTURE_SERVICES,
  registerRpcs,
} from '../rpc/index.js';
import { createServerTracingInterceptor } from '../telemetry/rpc-tracing.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';

/** gRPC's default message size limit; larger messages get RESOURCE_EXHAUSTED. */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export type BackendDeps = {
  telemetry: Telemetry;
  /** Run after tracing, e.g. the ID-token check. */
  interceptors?: Interceptor[];
};

export type Backend = {
  /** Not yet listening: the caller listens (cleartext HTTP/2, h2c). */
  server: Http2Server;
  health: HealthStatus;
  /** Reports NOT_SERVING, sends GOAWAY, lets in-flight RPCs finish; resolves when all are closed. */
  drain(): Promise<void>;
  /** Ends every remaining session at once. */
  destroy(): void;
};

/** The private role: gRPC, gRPC-Web and Connect on one h2c port. */
export function buildBackend(config: Config, deps: BackendDeps): Backend {
  const { telemetry } = deps;
  const health = createHealthStatus({
    '': 'NOT_SERVING',
    [BackendService.typeName]: 'NOT_SERVING',
  });
  const handler = connectNodeAdapter({
    routes: (router) => registerRpcs(router, { health, reflection: config.GRPC_REFLECTION }),
    interceptors: [
      createServerTracingInterceptor(
        telemetry.serverSpans,
        telemetry.meter,
        INFRASTRUCTURE_SERVICES,
      ),
      ...(deps.interceptors ?? []),
    ],
    maxTimeoutMs: config.GRPC_MAX_TIMEOUT_MS,
    readMaxBytes: MAX_MESSAGE_BYTES,
  });
  const server = createServer(handler);
  const sessions = new Set<Http2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });

  return {
    server,
    health,
    drain() {
      health.shutdown();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      return closed;
    },
    destroy() {
      for (const session of sessions) session.destroy();
    },
  };
}
