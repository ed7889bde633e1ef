import type { IncomingMessage } from 'node:http';
import {
  createServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
} from 'node:http2';
import { isIPv6 } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DescMethod } from '@bufbuild/protobuf';
import { createContextValues, type HandlerContext, type Interceptor } from '@connectrpc/connect';
import { compressionBrotli, compressionGzip, connectNodeAdapter } from '@connectrpc/connect-node';
import type { Config } from '../config.js';
import { SERVER_SHUTTING_DOWN } from '../errors/status.js';
import { MAX_MESSAGE_BYTES } from '../grpc/envelope.js';
import {
  applicationServices,
  createHealthStatus,
  type HealthStatus,
  INFRASTRUCTURE_SERVICES,
  registerRpcs,
} from '../rpc/index.js';
import { createNetworkPeers, NETWORK_PEER } from '../telemetry/network-peer.js';
import {
  createServerTracingInterceptor,
  recordUninterceptedCalls,
  traceUnknownMethods,
} from '../telemetry/rpc-tracing.js';
import { arrivingCall, SERVER_CALL } from '../telemetry/server-call.js';
import type { Telemetry } from '../telemetry/start-telemetry.js';
import { advertiseCompression } from './advertise-compression.js';
import { capDeadline } from './deadline-cap.js';
import {
  expireUnfinishedRequest,
  failRequestOnReset,
  failUnfinishedRequest,
} from './expire-unfinished-request.js';
import { createGrpcUnaryFastPath } from './grpc-unary-fast-path.js';
import { releaseUnreadRequest } from './release-unread-request.js';
import { answerUnknownMethod } from './unknown-method.js';

/**
 * Streams one connection may have open at once: Cloud Run's highest concurrency per instance.
 * Node's default (2^32 - 1) let one client hold tens of thousands of stalled calls in memory;
 * a client past the limit waits for a stream to close (Node's client queues the call).
 */
const MAX_CONCURRENT_STREAMS = 1_000;
/**
 * Request metadata is limited by size, as gRPC's HTTP/2 spec advises, at HPACK's own limit for
 * one field; the limit is advertised so that clients can check first. Node's default limit is
 * a count (128 fields, 1.3 KiB of small metadata); the count allowed here is what fits the size.
 */
const MAX_HEADER_LIST_BYTES = 64 * 1024;
const MAX_HEADER_FIELDS = MAX_HEADER_LIST_BYTES / 32;
/** How long probes and load balancers see NOT_SERVING before connections are told to go away. */
const DRAIN_NOTICE_MS = 500;
/**
 * How long calls still running then have before their handlers' signals abort with
 * SERVER_SHUTTING_DOWN: streams that would otherwise hold the drain to its deadline and be cut.
 */
const HANDLER_NOTICE_MS = 1_000;

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
  /** Reports every service SERVING: call it once the server listens. */
  serving(): void;
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
  // Every service registered below joins the whole server's entry, NOT_SERVING until `serving()`.
  const health = createHealthStatus({ '': 'NOT_SERVING' });
  // Aborts every handler's signal late in a drain, so that long calls end with a status that
  // clients retry instead of being cut.
  const shutdown = new AbortController();
  const acceptCompression = [compressionGzip, compressionBrotli];
  const acceptedNames = acceptCompression.map((compression) => compression.name);
  const tracing = createServerTracingInterceptor(
    telemetry.serverSpans,
    telemetry.meter,
    INFRASTRUCTURE_SERVICES,
  );
  const unintercepted = recordUninterceptedCalls(
    telemetry.serverSpans,
    telemetry.meter,
    INFRASTRUCTURE_SERVICES,
  );
  const peers = createNetworkPeers();
  // For the tracing, which does not see the socket, nor when the call arrived.
  const callValues = (request: Http2ServerRequest | IncomingMessage) =>
    createContextValues().set(NETWORK_PEER, peers.of(request)).set(SERVER_CALL, arrivingCall());
  const callOptions = {
    interceptors: [tracing, ...(deps.interceptors ?? [])],
    contextValues: callValues,
    ...(deps.requestGate ? { requestGate: deps.requestGate } : {}),
    // Never reached: capDeadline shortens longer deadlines first. Kept as the last word.
    maxTimeoutMs: config.GRPC_MAX_TIMEOUT_MS,
    readMaxBytes: MAX_MESSAGE_BYTES,
    acceptCompression,
    shutdownSignal: shutdown.signal,
  };
  const onError = (error: unknown, method: DescMethod) =>
    telemetry.logger.error({ error }, `could not answer ${method.parent.typeName}/${method.name}`);
  const fastPath = createGrpcUnaryFastPath({
    ...callOptions,
    unreadCallInterceptors: [tracing],
    onError,
  });
  const handler = connectNodeAdapter({
    ...callOptions,
    contextValues: (request) => unintercepted.watch(request, callValues(request)),
    requestGate: unintercepted.requestGate(deps.requestGate),
    routes: (router) => {
      registerRpcs(fastPath.learn(router), { health, reflection: config.GRPC_REFLECTION });
      for (const service of applicationServices(router)) health.set(service, 'NOT_SERVING');
    },
    fallback: traceUnknownMethods(
      telemetry.serverSpans,
      telemetry.meter,
      answerUnknownMethod,
      peers.of,
    ),
  });
  const parsesAsAuthority = lastAuthorityRemembered();
  /** Calls Connect's adapter serves (streams among them), to end their requests at a drain. */
  const connectCalls = new Set<Http2ServerRequest>();
  const server = createServer(
    {
      settings: {
        maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
        maxHeaderListSize: MAX_HEADER_LIST_BYTES,
      },
      maxHeaderListPairs: MAX_HEADER_FIELDS,
    },
    (request, response) => {
      const deadlineMs = capDeadline(request.headers, config.GRPC_MAX_TIMEOUT_MS);
      releaseUnreadRequest(request);
      advertiseCompression(request, response, acceptedNames);
      // Connect's adapter builds the request's URL from `:authority` outside any handler, so a
      // missing or malformed one (`[`, a port over 65535) would throw out of this listener. The
      // fast path refuses it too, so that both paths give one answer, except for an IPv6 host
      // without its brackets, which Node's own HTTP/2 client sends (`::1:8080`).
      const authorityParses = parsesAsAuthority(request.authority);
      if (authorityParses || isUnbracketedIpv6(request.authority)) {
        if (fastPath.serve(request, response)) return;
      }
      if (!authorityParses) {
        refuseBadAuthority(response);
        return;
      }
      if (deadlineMs !== undefined) expireUnfinishedRequest(request, deadlineMs);
      failRequestOnReset(request);
      connectCalls.add(request);
      request.once('close', () => connectCalls.delete(request));
      handler(request, response);
    },
  );
  const sessions = new Set<Http2Session>();
  server.on('session', (session) => {
    peers.add(session);
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });

  return {
    server,
    health,
    serving() {
      for (const service of health.entries().keys()) health.set(service, 'SERVING');
    },
    async drain() {
      health.shutdown();
      await sleep(DRAIN_NOTICE_MS);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      const notice = setTimeout(() => {
        shutdown.abort(SERVER_SHUTTING_DOWN);
        // Handlers that read their requests (client and bidi streams) see it there.
        for (const request of connectCalls) failUnfinishedRequest(request, SERVER_SHUTTING_DOWN);
      }, HANDLER_NOTICE_MS).unref();
      await closed;
      clearTimeout(notice);
    },
    destroy() {
      for (const session of sessions) session.destroy();
    },
  };
}

/**
 * Whether `http://<authority>` parses as a URL, remembering the last authority that did: the
 * calls of one connection all name the same, so most calls cost a string comparison.
 */
function lastAuthorityRemembered(): (authority: string) => boolean {
  let parsed: string | undefined;
  return (authority) => {
    if (authority === parsed) return true;
    if (!URL.canParse(`http://${authority}`)) return false;
    parsed = authority;
    return true;
  };
}

/** `::1:8080` or `::1`: an IPv6 address, with or without a port, and no brackets. */
function isUnbracketedIpv6(authority: string): boolean {
  return isIPv6(authority) || isIPv6(authority.replace(/:\d+$/, ''));
}

function refuseBadAuthority(response: Http2ServerResponse): void {
  response.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
  response.end('the :authority (Host) header must be a host, with an optional port (0-65535)\n');
}
