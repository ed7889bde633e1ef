import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { type Client, createClient, type Transport } from '@connectrpc/connect';
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from '@connectrpc/connect-node';
import {
  context,
  type ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  trace,
} from '@opentelemetry/api';
import type { TracerProvider } from '@opentelemetry/sdk-trace';
import { createGrpcUnaryTransport } from '../../src/api/grpc-unary-transport.js';
import { type Backend, buildBackend } from '../../src/backend/build-backend.js';
import { parseConfig } from '../../src/config.js';
import { createClientTracingInterceptor } from '../../src/telemetry/rpc-tracing.js';
import { startTelemetry } from '../../src/telemetry/start-telemetry.js';
import {
  type OtlpReceiver,
  type ReceivedMetricPoint,
  type ReceivedSpan,
  startOtlpReceiver,
} from '../../tools/otlp-receiver/index.ts';
import { StreamingTestService } from '../fixtures/streaming-test-service.js';

/*
 * The backend as buildBackend assembles it, serving the test-only streaming service too (the
 * test file mocks src/rpc/index.js with `withStreamingTestService`), with the telemetry a role
 * starts, in request export mode (as on Cloud Run): a sampled call's spans reach the OTLP
 * receiver before its answer ends, and otherwise only when `flushSpans` is called. Clients: the
 * api's own (its gRPC transport and CLIENT spans), and plain Connect clients of each protocol.
 */

export type Protocol = 'grpc' | 'grpcweb' | 'connect';

export type TracedBackend = {
  receiver: OtlpReceiver;
  url: string;
  /** Every access line and other log line of the backend, parsed. */
  logs: Record<string, unknown>[];
  /** The api's client: its gRPC transport (unary fast, streams through Connect) and tracing. */
  api: Client<typeof StreamingTestService>;
  /** A plain client speaking `protocol`, without tracing. */
  client(protocol: Protocol): Client<typeof StreamingTestService>;
  /** Exports the spans still queued (those that ended after their request's flush). */
  flushSpans(): Promise<void>;
  /** Spans of one trace, once `until` holds (polled, with a deadline). */
  spansOf(traceId: string, until?: (spans: ReceivedSpan[]) => boolean): Promise<ReceivedSpan[]>;
  /** The access line (a line with `httpRequest`) of a trace, once written. */
  accessLineOf(traceId: string): Promise<Record<string, unknown>>;
  /** The latest point of a histogram whose labels include `attributes`, once exported. */
  durationPoint(name: string, attributes: Record<string, unknown>): Promise<ReceivedMetricPoint>;
  close(): Promise<void>;
};

const OTEL_ENV = {
  OTEL_BSP_SCHEDULE_DELAY: '60000',
  OTEL_METRIC_EXPORT_INTERVAL: '200',
  OTEL_METRIC_EXPORT_TIMEOUT: '200',
};
const WAIT_MS = 10_000;

export async function startTracedBackend(maxTimeoutMs: number): Promise<TracedBackend> {
  const receiver = await startOtlpReceiver();
  const env: Record<string, string> = { ...OTEL_ENV, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url };
  for (const [key, value] of Object.entries(env)) process.env[key] = value;
  const config = parseConfig({
    SERVICE_ROLE: 'backend',
    GRPC_MAX_TIMEOUT_MS: String(maxTimeoutMs),
    TELEMETRY_EXPORT_MODE: 'request',
    LOG_FORMAT: 'json',
    LOG_LEVEL: 'info',
    GOOGLE_CLOUD_PROJECT: 'test-project',
  });
  const logs: Record<string, unknown>[] = [];
  const telemetry = await startTelemetry(config, {
    logDestination: new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean))
          logs.push(JSON.parse(line));
        done();
      },
    }),
  });
  const backend: Backend = buildBackend(config, { telemetry });
  await new Promise<void>((resolve, reject) => {
    backend.server.once('error', reject);
    backend.server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = backend.server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  const sessions = new Http2SessionManager(url);
  const apiTransport = createGrpcUnaryTransport({
    baseUrl: url,
    sessionManager: sessions,
    interceptors: [createClientTracingInterceptor(telemetry.tracer, telemetry.meter, new URL(url))],
  });
  const transports: Record<Protocol, Transport> = {
    grpc: createGrpcTransport({ baseUrl: url, sessionManager: sessions }),
    grpcweb: createGrpcWebTransport({ baseUrl: url, httpVersion: '2', sessionManager: sessions }),
    connect: createConnectTransport({ baseUrl: url, httpVersion: '2', sessionManager: sessions }),
  };
  // startTelemetry made the global provider the SDK's.
  const provider = (
    trace.getTracerProvider() as ProxyTracerProvider
  ).getDelegate() as TracerProvider;

  const poll = async <T>(what: string, find: () => T | undefined): Promise<T> => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const found = find();
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no ${what} within ${WAIT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  return {
    receiver,
    url,
    logs,
    api: createClient(StreamingTestService, apiTransport),
    client: (protocol) => createClient(StreamingTestService, transports[protocol]),
    async flushSpans() {
      await provider.forceFlush();
    },
    spansOf(traceId, until = (spans) => spans.length > 0) {
      return poll(`spans of trace ${traceId}`, () => {
        const spans = receiver.spans().filter((span) => span.traceId === traceId);
        return until(spans) ? spans : undefined;
      });
    },
    accessLineOf(traceId) {
      return poll(`access line in trace ${traceId}`, () =>
        logs.find(
          (line) =>
            line['logging.googleapis.com/trace'] === `projects/test-project/traces/${traceId}` &&
            line.httpRequest !== undefined,
        ),
      );
    },
    durationPoint(name, attributes) {
      return poll(`${name} point with ${JSON.stringify(attributes)}`, () =>
        receiver
          .metrics()
          .filter((metric) => metric.name === name)
          .flatMap((metric) => metric.points)
          .findLast((point) =>
            Object.entries(attributes).every(([key, value]) => point.attributes[key] === value),
          ),
      );
    },
    async close() {
      sessions.abort();
      backend.destroy();
      await new Promise((resolve) => backend.server.close(resolve));
      await telemetry.shutdown();
      await receiver.close();
      for (const key of Object.keys(env)) delete process.env[key];
    },
  };
}

/** Runs `call` as a caller in the trace of `traceparent` would, so its spans are in that trace. */
export function inTrace<T>(traceparent: string, call: () => T): T {
  const parent = propagation.extract(ROOT_CONTEXT, { traceparent });
  return context.with(parent, call);
}
