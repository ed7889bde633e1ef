import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { startOtlpReceiver } from '../../tools/otlp-receiver/index.ts';
import { fields } from './protobuf-fields.ts';

/*
 * Where the "exported" configurations send OTLP/HTTP. Both kinds count spans by the resource
 * attributes `bench.config` and `service.name`:
 * - receiver: tools/otlp-receiver, which decodes every span (and so checks what is sent).
 * - counter: walks only the protobuf envelope (ResourceSpans > Resource, ScopeSpans > Span) and
 *   answers 200, costing the shared CPUs little more than a remote collector would.
 */

export type SpanSink = {
  readonly kind: 'receiver' | 'counter';
  readonly url: string;
  spansOf(config: string, service: string): number;
  /** OTLP HTTP requests received (traces and metrics). */
  requests(): number;
  close(): Promise<void>;
};

export async function startSpanSink(kind: SpanSink['kind']): Promise<SpanSink> {
  return kind === 'receiver' ? startDecodingSink() : startCountingSink();
}

function counter() {
  const counts = new Map<string, number>();
  return {
    add(config: string, service: string, spans: number) {
      const key = `${config}/${service}`;
      counts.set(key, (counts.get(key) ?? 0) + spans);
    },
    get: (config: string, service: string) => counts.get(`${config}/${service}`) ?? 0,
  };
}

async function startDecodingSink(): Promise<SpanSink> {
  const receiver = await startOtlpReceiver({ retain: false });
  const counts = counter();
  receiver.onSpans((spans) => {
    for (const span of spans)
      counts.add(String(span.resource['bench.config']), String(span.resource['service.name']), 1);
  });
  return {
    kind: 'receiver',
    url: receiver.url,
    spansOf: counts.get,
    requests: () => receiver.requests(),
    close: () => receiver.close(),
  };
}

/** The string attributes of an opentelemetry.proto.resource.v1.Resource. */
function resourceStrings(resource: Buffer): Map<string, string> {
  const strings = new Map<string, string>();
  for (const attribute of fields(resource)) {
    if (attribute.field !== 1 || !attribute.bytes) continue;
    let key = '';
    let value: string | undefined;
    for (const part of fields(attribute.bytes)) {
      if (part.field === 1 && part.bytes) key = part.bytes.toString('utf8');
      if (part.field === 2 && part.bytes) {
        for (const any of fields(part.bytes))
          if (any.field === 1 && any.bytes) value = any.bytes.toString('utf8');
      }
    }
    if (value !== undefined) strings.set(key, value);
  }
  return strings;
}

/** Adds the spans of one ExportTraceServiceRequest to `counts`. */
export function countTraceRequest(
  body: Buffer,
  add: (config: string, service: string, spans: number) => void,
): void {
  for (const resourceSpans of fields(body)) {
    if (resourceSpans.field !== 1 || !resourceSpans.bytes) continue;
    let attributes = new Map<string, string>();
    let spans = 0;
    for (const part of fields(resourceSpans.bytes)) {
      if (part.field === 1 && part.bytes) attributes = resourceStrings(part.bytes);
      if (part.field === 2 && part.bytes) {
        for (const scoped of fields(part.bytes)) if (scoped.field === 2) spans++;
      }
    }
    add(
      attributes.get('bench.config') ?? 'undefined',
      attributes.get('service.name') ?? 'undefined',
      spans,
    );
  }
}

async function startCountingSink(): Promise<SpanSink> {
  const counts = counter();
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.url === '/v1/traces' && String(req.headers['content-type']).includes('protobuf')) {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        try {
          countTraceRequest(body, counts.add);
        } catch (error) {
          res.writeHead(400).end(String(error));
          return;
        }
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': 0 }).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    kind: 'counter',
    url: `http://127.0.0.1:${port}`,
    spansOf: counts.get,
    requests: () => requests,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
