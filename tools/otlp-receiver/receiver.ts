import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  checkContentEncoding,
  decodeContentEncoding,
  decodeMetricsRequest,
  decodeTraceRequest,
  type OtlpFormat,
  otlpFormatOf,
} from './decode-request.ts';
import type { ReceivedMetric, ReceivedSpan } from './types.ts';
import { DEFAULT_WAIT_TIMEOUT_MS, type WaitForOptions, waitFor } from './wait-for.ts';

export interface OtlpReceiverOptions {
  /** Default 0: a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /**
   * Default true. False keeps nothing (spans() and metrics() stay empty) and only notifies
   * onSpans and onMetrics listeners: a sink for long benchmarks.
   */
  retain?: boolean;
}

/**
 * - ok: accept and answer 200.
 * - down: destroy the socket of every request (the exporter sees ECONNRESET and retries).
 * - slow: wait delayMs (default 1000) before handling; a request whose client gave up meanwhile
 *   is not recorded, so what the receiver holds is what the exporter believes it delivered.
 * - forbidden: answer 403 PERMISSION_DENIED (the exporter does not retry).
 */
export type OtlpReceiverBehaviour = 'ok' | 'down' | 'slow' | 'forbidden';

export type SpansListener = (spans: readonly ReceivedSpan[]) => void;
export type MetricsListener = (metrics: readonly ReceivedMetric[]) => void;

export interface OtlpReceiver {
  /** http://HOST:PORT: use as OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly url: string;
  spans(): ReceivedSpan[];
  metrics(): ReceivedMetric[];
  /** Forgets received spans and metrics; the request count stays. */
  clear(): void;
  /** Resolves with all spans once `predicate` holds; rejects listing what arrived on timeout. */
  waitForSpans(
    predicate: (spans: ReceivedSpan[]) => boolean,
    options?: WaitForOptions,
  ): Promise<ReceivedSpan[]>;
  waitForMetrics(
    predicate: (metrics: ReceivedMetric[]) => boolean,
    options?: WaitForOptions,
  ): Promise<ReceivedMetric[]>;
  setBehaviour(behaviour: OtlpReceiverBehaviour, delayMs?: number): void;
  /** HTTP requests received, whatever their path, outcome or the behaviour. */
  requests(): number;
  /** Called with the spans of each accepted export request; returns the unsubscribe. */
  onSpans(listener: SpansListener): () => void;
  /** Called with the metrics of each accepted export request; returns the unsubscribe. */
  onMetrics(listener: MetricsListener): () => void;
  close(): Promise<void>;
}

const BEHAVIOURS: readonly OtlpReceiverBehaviour[] = ['ok', 'down', 'slow', 'forbidden'];
const DEFAULT_SLOW_MS = 1_000;
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const GRPC_PERMISSION_DENIED = 7;

const CONTENT_TYPES: Readonly<Record<OtlpFormat, string>> = {
  protobuf: 'application/x-protobuf',
  json: 'application/json',
};

type Signal = 'traces' | 'metrics' | 'logs';
const SIGNAL_PATHS: Readonly<Record<string, Signal>> = {
  '/v1/traces': 'traces',
  '/v1/metrics': 'metrics',
  '/v1/logs': 'logs',
};

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, `body over ${MAX_BODY_BYTES} bytes: export smaller batches`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** google.rpc.Status { code = 1; message = 2 }, the body OTLP/HTTP asks for on errors. */
function rpcStatusBody(format: OtlpFormat, code: number, message: string): Buffer {
  if (format === 'json') return Buffer.from(JSON.stringify({ code, message }));
  const text = Buffer.from(message);
  if (code > 127 || text.length > 127) throw new Error('rpcStatusBody: one-byte varints only');
  return Buffer.concat([Buffer.from([0x08, code, 0x12, text.length]), text]);
}

function formatUrl(host: string, port: number): string {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
}

function describeSpans(spans: readonly ReceivedSpan[]): string {
  const shown = spans.slice(-50);
  const lines = shown.map(
    (s) =>
      `  ${s.traceId.slice(0, 8)}… ${s.spanId} parent=${s.parentSpanId ?? '-'} ${s.kind} ` +
      `${s.status.code} "${s.name}" service=${String(s.resource['service.name'] ?? '?')}`,
  );
  if (spans.length > shown.length) lines.unshift(`  … ${spans.length - shown.length} earlier`);
  return lines.join('\n');
}

function describeMetrics(metrics: readonly ReceivedMetric[]): string {
  const seen = new Map<string, number>();
  for (const m of metrics) {
    const key = `${m.type} "${m.name}" (${m.unit || 'no unit'}) points: ${m.points
      .map((p) => JSON.stringify(p.attributes))
      .join(' ')}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return [...seen].map(([key, times]) => `  ${times}x ${key}`).join('\n');
}

/** Starts an OTLP/HTTP receiver (protobuf and JSON, any content-encoding Node can undo). */
export async function startOtlpReceiver(options: OtlpReceiverOptions = {}): Promise<OtlpReceiver> {
  const retain = options.retain ?? true;
  let spans: ReceivedSpan[] = [];
  let metrics: ReceivedMetric[] = [];
  let requestCount = 0;
  let behaviour: OtlpReceiverBehaviour = 'ok';
  let slowMs = DEFAULT_SLOW_MS;
  const spanListeners = new Set<SpansListener>();
  const metricListeners = new Set<MetricsListener>();
  const changeListeners = new Set<() => void>();
  const pendingDelays = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();

  const delay = (ms: number) =>
    new Promise<void>((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          pendingDelays.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      pendingDelays.add(entry);
    });

  const notify = <T>(listeners: Set<(received: readonly T[]) => void>, received: readonly T[]) => {
    for (const listener of listeners) {
      try {
        listener(received);
      } catch (error) {
        console.error('otlp-receiver: a listener threw:', error);
      }
    }
  };
  const notifyChange = () => {
    for (const onChange of changeListeners) onChange();
  };

  const accept = async (req: IncomingMessage, res: ServerResponse, signal: Signal) => {
    const format = otlpFormatOf(req.headers['content-type']);
    if (!format) {
      throw new HttpError(
        415,
        `content-type "${req.headers['content-type'] ?? ''}" is not OTLP/HTTP: send application/x-protobuf or application/json`,
      );
    }
    const unsupported = checkContentEncoding(req.headers['content-encoding']);
    if (unsupported) throw new HttpError(415, unsupported);
    const raw = await readBody(req);
    if (behaviour === 'forbidden') {
      res.writeHead(403, { 'content-type': CONTENT_TYPES[format] });
      res.end(
        rpcStatusBody(format, GRPC_PERMISSION_DENIED, 'otlp-receiver: behaviour is forbidden'),
      );
      return;
    }
    if (behaviour === 'slow') await delay(slowMs);
    // A client that gave up while we were slow counts the export as failed: do not record it.
    if (res.destroyed || req.socket.destroyed) return;
    try {
      const body = await decodeContentEncoding(
        raw,
        req.headers['content-encoding'],
        MAX_BODY_BYTES,
      );
      if (signal === 'traces') {
        const received = decodeTraceRequest(body, format);
        if (retain) spans.push(...received);
        if (received.length > 0) notify(spanListeners, received);
        notifyChange();
      } else if (signal === 'metrics') {
        const received = decodeMetricsRequest(body, format);
        if (retain) metrics.push(...received);
        if (received.length > 0) notify(metricListeners, received);
        notifyChange();
      }
    } catch (error) {
      throw new HttpError(400, (error as Error).message);
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPES[format] });
    res.end(format === 'json' ? '{}' : undefined);
  };

  const server = createServer((req, res) => {
    requestCount++;
    if (behaviour === 'down') {
      req.socket.destroy();
      return;
    }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const signal = SIGNAL_PATHS[path];
    const fail = (status: number, message: string) => {
      console.error(`otlp-receiver: ${status} for ${req.method} ${path}: ${message}`);
      if (res.headersSent || res.destroyed) return;
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${message}\n`);
    };
    if (!signal) {
      fail(404, `no such path: POST to ${Object.keys(SIGNAL_PATHS).join(', ')}`);
      return;
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      fail(405, `${req.method} not allowed: OTLP/HTTP exports are POSTs`);
      return;
    }
    accept(req, res, signal).catch((error: unknown) => {
      if (error instanceof HttpError) fail(error.status, error.message);
      else fail(500, String((error as Error)?.stack ?? error));
    });
  });
  server.keepAliveTimeout = 60_000;

  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'EADDRINUSE'
          ? new Error(
              `port ${options.port} on ${host} is in use: pick another port, or 0 for any free one`,
            )
          : error,
      );
    };
    server.once('error', onError);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  const url = formatUrl(host, port);

  const subscribe = (onChange: () => void) => {
    changeListeners.add(onChange);
    return () => changeListeners.delete(onChange);
  };
  const hint =
    `Exporters should point at ${url} (OTEL_EXPORTER_OTLP_ENDPOINT), and their processor or ` +
    'reader must have flushed (forceFlush, or a delay shorter than the timeout).';
  const waitedFor = (waitedMs: number, lastError: unknown) =>
    `after ${waitedMs} ms; ${requestCount} requests, behaviour ${behaviour}.` +
    (lastError === undefined ? '' : `\nLast predicate error: ${String(lastError)}`);

  return {
    url,
    spans: () => [...spans],
    metrics: () => [...metrics],
    clear: () => {
      spans = [];
      metrics = [];
    },
    waitForSpans: (predicate, waitOptions = {}) =>
      waitFor({
        read: () => [...spans],
        predicate,
        subscribe,
        timeoutMs: waitOptions.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS,
        describe: (current, waitedMs, lastError) =>
          `waitForSpans: predicate still false ${waitedFor(waitedMs, lastError)}\n` +
          `${current.length} spans received:\n${describeSpans(current)}\n${hint}`,
      }),
    waitForMetrics: (predicate, waitOptions = {}) =>
      waitFor({
        read: () => [...metrics],
        predicate,
        subscribe,
        timeoutMs: waitOptions.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS,
        describe: (current, waitedMs, lastError) =>
          `waitForMetrics: predicate still false ${waitedFor(waitedMs, lastError)}\n` +
          `${current.length} metrics received:\n${describeMetrics(current)}\n${hint}`,
      }),
    setBehaviour: (next, delayMs) => {
      if (!BEHAVIOURS.includes(next)) {
        throw new Error(`unknown behaviour "${next}": use one of ${BEHAVIOURS.join(', ')}`);
      }
      behaviour = next;
      slowMs = delayMs ?? DEFAULT_SLOW_MS;
    },
    requests: () => requestCount,
    onSpans: (listener) => {
      spanListeners.add(listener);
      return () => spanListeners.delete(listener);
    },
    onMetrics: (listener) => {
      metricListeners.add(listener);
      return () => metricListeners.delete(listener);
    },
    close: () => {
      if (!closed) {
        for (const pending of pendingDelays) {
          clearTimeout(pending.timer);
          pending.resolve();
        }
        pendingDelays.clear();
        closed = new Promise<void>((resolve, reject) =>
          server.close((error) => (error ? reject(error) : resolve())),
        );
        server.closeAllConnections();
      }
      return closed;
    },
  };
}
