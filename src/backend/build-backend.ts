import {
  createServer,
  type Http2Server,
  type Http2ServerResponse,
  type Http2Session,
} from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DescMethod } from '@bufbuild/protobuf';
import type { HandlerContext, Interceptor } from '@connectrpc/connect';
import { compressionBrotli, compressionGzip, connectNodeAdapter } from '@connectrpc/connect-node';
import type { Config } from '../config.js';
import { BackendService } from '../gen/backend_service/v1/backend_service_pb.js';
import {
  createHealthStatus,
  type HealthStatus,
  INFRASTRUCTURE_SERVICES,
  registerRpcs,
} from '../rpc/index.js';
import { createServerTracingInterceptor, traceUnknownMethods } from '../telemetry/rpc-tracing.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { advertiseCompression } from './advertise-compression.js';
import { capDeadline } from './deadline-cap.js';
import { expireUnfinishedRequest } from './expire-unfinished-request.js';
import { createGrpcUnaryFastPath } from './grpc-unary-fast-path.js';
import { releaseUnreadRequest } from './release-unread-request.js';
import { answerUnknownMethod } from './unknown-method.js';

/** gRPC's default message size limit; larger messages get RESOURCE_EXHAUSTED. */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** How long probes and load balancers see NOT_SERVING before connections are told to go away. */
const DRAIN_NOTICE_MS = 500;

export type BackendDeps = {
  telemetry: Telemetry;
  /** Run after tracing, e.g. recording the verified caller. */
  interceptors?: Interceptor[];
  /** Run on the headers before the body is read, e.g. the ID-token check. */
  requestGate?: (context: HandlerContext) => Promise<void>;
};

export type Backend = {
  /** Not yet listening: the caller listens (cleartext HTTP/2, h2c). */
  server: Http2Server;
  health: HealthStatus;
  /**
   * Reports NOT_SERVING while still serving for a short notice, then sends GOAWAY, lets
   * in-flight RPCs finish and stops listening; resolves when every connection has closed.
   */
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
  const acceptCompression = [compressionGzip, compressionBrotli];
  const acceptedNames = acceptCompression.map((compression) => compression.name);
  const callOptions = {
    interceptors: [
      createServerTracingInterceptor(
        telemetry.serverSpans,
        telemetry.meter,
        INFRASTRUCTURE_SERVICES,
      ),
      ...(deps.interceptors ?? []),
    ],
    ...(deps.requestGate ? { requestGate: deps.requestGate } : {}),
    // Never reached: capDeadline shortens longer deadlines first. Kept as the last word.
    maxTimeoutMs: config.GRPC_MAX_TIMEOUT_MS,
    readMaxBytes: MAX_MESSAGE_BYTES,
    acceptCompression,
  };
  const onError = (error: unknown, method: DescMethod) =>
    telemetry.logger.error({ error }, `could not answer ${method.parent.typeName}/${method.name}`);
  const fastPath = createGrpcUnaryFastPath({ ...callOptions, onError });
  const handler = connectNodeAdapter({
    ...callOptions,
    routes: (router) =>
      registerRpcs(fastPath.learn(router), {
        health,
        reflection: config.GRPC_REFLECTION,
      }),
    fallback: traceUnknownMethods(telemetry.serverSpans, telemetry.meter, answerUnknownMethod),
  });
  const server = createServer((request, response) => {
    const deadlineMs = capDeadline(request.headers, config.GRPC_MAX_TIMEOUT_MS);
    releaseUnreadRequest(request);
    advertiseCompression(request, response, acceptedNames);
    if (fastPath.serve(request, response)) return;
    // Connect's adapter builds the request's URL from `:authority` outside any handler, so a
    // missing or malformed one (`[`, a port over 65535) would throw out of this listener.
    if (!URL.canParse(`http://${request.authority}`)) {
      refuseBadAuthority(response);
      return;
    }
    if (deadlineMs !== undefined) expireUnfinishedRequest(request, deadlineMs);
    handler(request, response);
  });
  const sessions = new Set<Http2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });

  return {
    server,
    health,
    async drain() {
      health.shutdown();
      await sleep(DRAIN_NOTICE_MS);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      return closed;
    },
    destroy() {
      for (const session of sessions) session.destroy();
    },
  };
}

function refuseBadAuthority(response: Http2ServerResponse): void {
  response.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
  response.end('the :authority (Host) header must be a host, with an optional port (0-65535)\n');
}
