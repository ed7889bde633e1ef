import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import { postGreet } from './helpers/http.js';
import { eventually, startRoles } from './helpers/roles.js';
import { newTraceParent, waitForGreetTrace } from './helpers/traces.js';

const USER_AGENT = 'span-limits-test/1.0 (a user agent longer than the limit)';

async function greet(url: string, traceparent: string): Promise<void> {
  const response = await postGreet(
    url,
    { name: 'Limits' },
    { traceparent, 'user-agent': USER_AGENT },
  );
  await response.arrayBuffer();
  expect(response.status).toBe(200);
}

/** A span as OTLP/JSON has it, with the counts the SDK dropped. */
type JsonSpan = {
  traceId: string;
  kind: number;
  attributes: { key: string; value: Record<string, unknown> }[];
  droppedAttributesCount?: number;
};

/**
 * An OTLP/HTTP endpoint for `http/json` that keeps the spans as sent: the dropped counts are
 * what it is for (the receiver in tools/ does not decode them).
 */
async function startJsonSpanCapture(): Promise<{
  url: string;
  spans(): JsonSpan[];
  close(): Promise<void>;
}> {
  const spans: JsonSpan[] = [];
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    if (req.url === '/v1/traces') {
      const request = JSON.parse(body) as {
        resourceSpans: { scopeSpans: { spans: JsonSpan[] }[] }[];
      };
      for (const resourceSpans of request.resourceSpans) {
        for (const scopeSpans of resourceSpans.scopeSpans) spans.push(...scopeSpans.spans);
      }
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    spans: () => spans,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('span limits from OTEL_* variables', () => {
  it('truncates attribute values to the span limit, which wins over the general one', async () => {
    const receiver = await startOtlpReceiver();
    const { api, backend } = await startRoles({
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '20',
      OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '4',
      OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '8',
      OTEL_SPAN_EVENT_COUNT_LIMIT: '-1',
    });
    try {
      const parent = newTraceParent();
      await greet(api.url, parent.header);
      const { server, backend: backendSpan } = await waitForGreetTrace(receiver, parent.traceId);

      expect(server.attributes['user_agent.original']).toBe(USER_AGENT.slice(0, 8));
      expect(server.attributes['url.path']).toBe('/greet');
      expect(server.attributes['http.request.method']).toBe('POST');
      // Only strings are cut; numbers stay whole.
      expect(server.attributes['http.response.status_code']).toBe(200);
      // The backend reads the same variables.
      expect(backendSpan.attributes['rpc.method']).toBe('backend_');

      const warning = api
        .logs()
        .find((line) => String(line.message).startsWith('OTEL_SPAN_EVENT_COUNT_LIMIT=-1'));
      expect(warning?.severity).toBe('WARNING');
      expect(warning?.message).toBe(
        'OTEL_SPAN_EVENT_COUNT_LIMIT=-1 is not a whole number of events from 0 to 2147483647; using the default, 128.',
      );
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await receiver.close();
    }
  });

  it('drops attributes past the count limit and says how many in dropped_attributes_count', async () => {
    const capture = await startJsonSpanCapture();
    const { api, backend } = await startRoles({
      OTEL_EXPORTER_OTLP_ENDPOINT: capture.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '20',
      OTEL_ATTRIBUTE_COUNT_LIMIT: '1',
      OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '3',
    });
    try {
      const parent = newTraceParent();
      await greet(api.url, parent.header);
      const spans = await eventually(() => {
        const inTrace = capture.spans().filter((span) => span.traceId === parent.traceId);
        expect(inTrace).toHaveLength(3);
        return inTrace;
      });
      for (const span of spans) {
        expect(span.attributes).toHaveLength(3);
        expect(span.droppedAttributesCount).toBeGreaterThan(0);
      }
      const SERVER = 2;
      const server = spans.find(
        (span) => span.kind === SERVER && span.attributes.some((a) => a.key === 'url.path'),
      );
      // The first three given are kept; what came after (the user agent, the status code and
      // the route among them) is counted, not sent.
      expect(server?.attributes.map((attribute) => attribute.key)).toEqual([
        'http.request.method',
        'url.scheme',
        'url.path',
      ]);
      expect(server?.droppedAttributesCount).toBeGreaterThanOrEqual(6);
    } finally {
      await Promise.all([api.stop(), backend.stop()]);
      await capture.close();
    }
  });
});
