import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { context, SpanKind, SpanStatusCode, trace, ValueType } from '@opentelemetry/api';
import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import { OTLPMetricExporter as JsonMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPMetricExporter as ProtoMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import {
  BatchSpanProcessor,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
  type SpanExporter,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  createTraceTreePrinter,
  decodeTraceRequest,
  formatTraceTree,
  type OtlpReceiver,
  type ReceivedSpan,
  startOtlpReceiver,
} from '../tools/otlp-receiver/index.js';

const CLI = fileURLToPath(new URL('../tools/otlp-receiver/cli.ts', import.meta.url));
type ExporterCompression = NonNullable<
  NonNullable<ConstructorParameters<typeof ProtoTraceExporter>[0]>['compression']
>;
// The exporters take a string enum from a package we do not depend on directly.
const GZIP = 'gzip' as ExporterCompression;
const SECONDS = 1_700_000_000;
const nanos = (ms: number) => BigInt(SECONDS) * 1_000_000_000n + BigInt(Math.round(ms * 1e6));
const at = (ms: number): [number, number] => [SECONDS, Math.round(ms * 1e6)];

type TraceExporterFactory = (url: string, timeoutMillis?: number) => SpanExporter;
const TRACE_EXPORTERS: [string, TraceExporterFactory][] = [
  ['protobuf', (url, timeoutMillis = 5_000) => new ProtoTraceExporter({ url, timeoutMillis })],
  [
    'protobuf, gzip',
    (url, timeoutMillis = 5_000) =>
      new ProtoTraceExporter({ url, timeoutMillis, compression: GZIP }),
  ],
  ['json', (url, timeoutMillis = 5_000) => new JsonTraceExporter({ url, timeoutMillis })],
  [
    'json, gzip',
    (url, timeoutMillis = 5_000) =>
      new JsonTraceExporter({ url, timeoutMillis, compression: GZIP }),
  ],
];
const [, protoExporter] = TRACE_EXPORTERS[0] as [string, TraceExporterFactory];

let receiver: OtlpReceiver;
beforeEach(async () => {
  receiver = await startOtlpReceiver();
});
afterEach(async () => {
  await receiver.close();
});

const tracesUrl = () => `${receiver.url}/v1/traces`;

function exportOnce(exporter: SpanExporter, spans: ReadableSpan[]): Promise<ExportResult> {
  return new Promise((resolve) => exporter.export(spans, resolve));
}

async function finishedSpans(name: string): Promise<ReadableSpan[]> {
  const memory = new InMemorySpanExporter();
  const provider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: memory })],
  });
  provider.getTracer('probe').startSpan(name).end();
  await provider.forceFlush();
  const spans = memory.getFinishedSpans();
  await provider.shutdown();
  return spans;
}

describe('spans exported by the real SDK', () => {
  it.each(TRACE_EXPORTERS)(
    '%s: ids, kinds, attributes, status, events, links, resource',
    async (_, makeExporter) => {
      const provider = new TracerProvider({
        resource: resourceFromAttributes({
          'service.name': 'receiver-test',
          'service.version': '1.2.3',
        }),
        spanProcessors: [
          new BatchSpanProcessor({
            exporter: makeExporter(tracesUrl()),
            scheduledDelayMillis: 60_000,
          }),
        ],
      });
      const tracer = provider.getTracer('receiver-test-scope', '0.0.1');
      const linked = tracer.startSpan('linked', { startTime: at(0) });
      linked.end(at(1));
      const attributes = {
        str: 'a',
        int: 42,
        neg: -7,
        dbl: 1.25,
        yes: true,
        no: false,
        strs: ['x', 'y'],
        ints: [1, 2],
        bools: [true, false],
      };
      const root = tracer.startSpan('GET /greet', {
        kind: SpanKind.SERVER,
        startTime: at(100),
        attributes,
      });
      const child = tracer.startSpan(
        'Greet',
        {
          kind: SpanKind.CLIENT,
          startTime: at(110),
          links: [{ context: linked.spanContext(), attributes: { 'link.reason': 'retry' } }],
        },
        trace.setSpan(context.active(), root),
      );
      child.addEvent('retry', { attempt: 2 }, at(120));
      child.setStatus({ code: SpanStatusCode.ERROR, message: 'boom' });
      child.end(at(150.5));
      root.setStatus({ code: SpanStatusCode.OK });
      root.end(at(200));
      await provider.forceFlush();

      const spans = await receiver.waitForSpans((received) => received.length === 3);
      await provider.shutdown();
      const byName = (name: string) => spans.find((span) => span.name === name) as ReceivedSpan;

      expect(byName('GET /greet')).toEqual({
        traceId: root.spanContext().traceId,
        spanId: root.spanContext().spanId,
        parentSpanId: undefined,
        parentIsRemote: undefined,
        name: 'GET /greet',
        kind: 'SERVER',
        startTimeUnixNano: nanos(100),
        endTimeUnixNano: nanos(200),
        durationMs: 100,
        status: { code: 'OK' },
        attributes,
        resource: { 'service.name': 'receiver-test', 'service.version': '1.2.3' },
        scope: 'receiver-test-scope',
        events: [],
        links: [],
      });
      expect(byName('Greet')).toMatchObject({
        traceId: root.spanContext().traceId,
        spanId: child.spanContext().spanId,
        parentSpanId: root.spanContext().spanId,
        parentIsRemote: false,
        kind: 'CLIENT',
        durationMs: 40.5,
        status: { code: 'ERROR', message: 'boom' },
        attributes: {},
        events: [{ name: 'retry', timeUnixNano: nanos(120), attributes: { attempt: 2 } }],
        links: [
          {
            traceId: linked.spanContext().traceId,
            spanId: linked.spanContext().spanId,
            attributes: { 'link.reason': 'retry' },
          },
        ],
      });
      expect(byName('linked')).toMatchObject({ kind: 'INTERNAL', status: { code: 'UNSET' } });
      expect(byName('linked').traceId).not.toBe(root.spanContext().traceId);
      expect(receiver.requests()).toBe(1);
    },
  );

  it('calls onSpans listeners with each batch until unsubscribed, and clear() forgets', async () => {
    const batches: string[][] = [];
    const unsubscribe = receiver.onSpans((spans) => batches.push(spans.map((s) => s.name)));
    const exporter = protoExporter(tracesUrl());
    expect((await exportOnce(exporter, await finishedSpans('first'))).code).toBe(
      ExportResultCode.SUCCESS,
    );
    unsubscribe();
    expect((await exportOnce(exporter, await finishedSpans('second'))).code).toBe(
      ExportResultCode.SUCCESS,
    );
    await exporter.shutdown();

    expect(batches).toEqual([['first']]);
    expect(receiver.spans().map((s) => s.name)).toEqual(['first', 'second']);
    receiver.clear();
    expect(receiver.spans()).toEqual([]);
    expect(receiver.requests()).toBe(2);
  });
});

describe('metrics exported by the real SDK', () => {
  const METRIC_EXPORTERS: [string, (url: string) => PushMetricExporter][] = [
    ['protobuf', (url) => new ProtoMetricExporter({ url })],
    ['json', (url) => new JsonMetricExporter({ url })],
  ];

  it.each(METRIC_EXPORTERS)(
    '%s: histogram, counter and gauge with attributes',
    async (_, makeExporter) => {
      const meterProvider = new MeterProvider({
        resource: resourceFromAttributes({ 'service.name': 'receiver-test' }),
        readers: [
          new PeriodicExportingMetricReader({
            exporter: makeExporter(`${receiver.url}/v1/metrics`),
            exportIntervalMillis: 60_000,
          }),
        ],
      });
      const heard: string[] = [];
      const unsubscribe = receiver.onMetrics((metrics) =>
        heard.push(...metrics.map((m) => m.name)),
      );
      const meter = meterProvider.getMeter('receiver-test-meter');
      const duration = meter.createHistogram('http.server.request.duration', { unit: 's' });
      duration.record(0.1, { 'http.request.method': 'GET', 'http.response.status_code': 200 });
      duration.record(0.3, { 'http.request.method': 'GET', 'http.response.status_code': 200 });
      duration.record(7, { 'http.request.method': 'POST', 'http.response.status_code': 500 });
      meter.createCounter('greetings').add(3, { 'rpc.method': 'Greet' });
      meter.createGauge('queue.depth', { valueType: ValueType.INT }).record(-4);
      await meterProvider.forceFlush();

      const metrics = await receiver.waitForMetrics((received) =>
        received.some((m) => m.name === 'http.server.request.duration'),
      );
      unsubscribe();
      await meterProvider.shutdown();
      expect(heard.toSorted()).toEqual([
        'greetings',
        'http.server.request.duration',
        'queue.depth',
      ]);

      const histogram = metrics.find((m) => m.name === 'http.server.request.duration');
      expect(histogram).toMatchObject({
        type: 'histogram',
        unit: 's',
        temporality: 'CUMULATIVE',
        resource: { 'service.name': 'receiver-test' },
        scope: 'receiver-test-meter',
      });
      const get = histogram?.points.find((p) => p.attributes['http.request.method'] === 'GET');
      expect(get).toMatchObject({
        attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200 },
        count: 2,
        min: 0.1,
        max: 0.3,
      });
      expect(get?.sum).toBeCloseTo(0.4);
      expect(get?.bucketCounts?.reduce((a, b) => a + b, 0)).toBe(2);
      expect(get?.bucketCounts).toHaveLength((get?.explicitBounds?.length ?? 0) + 1);
      expect(get?.explicitBounds?.slice(0, 3)).toEqual([0, 5, 10]);
      expect(
        histogram?.points.find((p) => p.attributes['http.request.method'] === 'POST'),
      ).toMatchObject({
        count: 1,
        sum: 7,
      });
      expect(metrics.find((m) => m.name === 'greetings')).toMatchObject({
        type: 'sum',
        isMonotonic: true,
        points: [{ attributes: { 'rpc.method': 'Greet' }, value: 3 }],
      });
      expect(metrics.find((m) => m.name === 'queue.depth')).toMatchObject({
        type: 'gauge',
        points: [{ attributes: {}, value: -4 }],
      });
    },
  );
});

describe('behaviours', () => {
  it('down: the exporter fails with a connection error, then recovers when ok again', async () => {
    receiver.setBehaviour('down');
    const exporter = protoExporter(tracesUrl(), 1_500);
    const spans = await finishedSpans('while down');

    const failed = await exportOnce(exporter, spans);
    expect(failed.code).toBe(ExportResultCode.FAILED);
    expect(receiver.requests()).toBeGreaterThanOrEqual(1);
    expect(receiver.spans()).toEqual([]);

    receiver.setBehaviour('ok');
    expect((await exportOnce(exporter, spans)).code).toBe(ExportResultCode.SUCCESS);
    expect(receiver.spans().map((s) => s.name)).toEqual(['while down']);
    await exporter.shutdown();
  });

  it.each([
    ['protobuf', TRACE_EXPORTERS[0]?.[1] as TraceExporterFactory],
    ['json', TRACE_EXPORTERS[2]?.[1] as TraceExporterFactory],
  ])('forbidden (%s): 403, not retried, nothing recorded', async (_, makeExporter) => {
    receiver.setBehaviour('forbidden');
    const exporter = makeExporter(tracesUrl());
    const result = await exportOnce(exporter, await finishedSpans('forbidden'));
    await exporter.shutdown();

    expect(result.code).toBe(ExportResultCode.FAILED);
    expect(result.error).toMatchObject({ code: 403 });
    expect(String((result.error as { data?: unknown }).data)).toContain('behaviour is forbidden');
    expect(receiver.requests()).toBe(1);
    expect(receiver.spans()).toEqual([]);
  });

  it('slow: answers after the delay', async () => {
    receiver.setBehaviour('slow', 300);
    const exporter = protoExporter(tracesUrl());
    const started = performance.now();
    const result = await exportOnce(exporter, await finishedSpans('slow'));
    const elapsed = performance.now() - started;
    await exporter.shutdown();

    expect(result.code).toBe(ExportResultCode.SUCCESS);
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(receiver.spans().map((s) => s.name)).toEqual(['slow']);
  });

  it('slow: an exporter that times out first fails, and the late request is not recorded', async () => {
    receiver.setBehaviour('slow', 800);
    const exporter = protoExporter(tracesUrl(), 200);
    const result = await exportOnce(exporter, await finishedSpans('gave up'));
    await exporter.shutdown();

    expect(result.code).toBe(ExportResultCode.FAILED);
    await expect(
      receiver.waitForSpans((spans) => spans.length > 0, { timeoutMs: 1_200 }),
    ).rejects.toThrow(
      /predicate still false after \d+ ms; 1 requests, behaviour slow\.\n0 spans received/,
    );
  });

  it('close() can be called again', async () => {
    await receiver.close();
    await receiver.close();
    await expect(fetch(tracesUrl(), { method: 'POST' })).rejects.toThrow();
  });

  it('rejects an unknown behaviour naming the valid ones', () => {
    expect(() => receiver.setBehaviour('broken' as 'ok')).toThrow(
      'unknown behaviour "broken": use one of ok, down, slow, forbidden',
    );
  });
});

describe('waitForSpans', () => {
  it('on timeout lists what arrived, the last predicate error and where to export', async () => {
    const exporter = protoExporter(tracesUrl());
    await exportOnce(exporter, await finishedSpans('only span'));
    await exporter.shutdown();

    const error = await receiver
      .waitForSpans(
        (spans) => {
          expect(spans).toHaveLength(2);
          return true;
        },
        { timeoutMs: 50 },
      )
      .catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(Error);
    const { message } = error as Error;
    expect(message).toMatch(
      /^waitForSpans: predicate still false after \d+ ms; 1 requests, behaviour ok\./,
    );
    expect(message).toContain('Last predicate error: AssertionError');
    expect(message).toMatch(
      /1 spans received:\n {2}[0-9a-f]{8}… [0-9a-f]{16} parent=- INTERNAL UNSET "only span"/,
    );
    expect(message).toContain(`Exporters should point at ${receiver.url}`);
  });

  it('resolves as soon as matching spans arrive', async () => {
    const waiting = receiver.waitForSpans((spans) => spans.some((s) => s.name === 'later'));
    const exporter = protoExporter(tracesUrl());
    await exportOnce(exporter, await finishedSpans('later'));
    await exporter.shutdown();
    expect((await waiting).map((s) => s.name)).toEqual(['later']);
  });
});

describe('raw OTLP/HTTP requests', () => {
  const validJson = JSON.stringify({
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'raw' } }] },
        scopeSpans: [
          {
            scope: { name: 'raw-scope' },
            spans: [
              {
                traceId: '4BF92F3577B34DA6A3CE929D0E0E4736',
                spanId: '00f067aa0ba902b7',
                parentSpanId: '',
                name: 'raw span',
                kind: 'SPAN_KIND_SERVER',
                startTimeUnixNano: '1700000000000000000',
                endTimeUnixNano: '1700000000002000000',
                status: { code: 'STATUS_CODE_ERROR', message: 'bad' },
              },
            ],
          },
        ],
      },
    ],
  });

  it.each<[string, RequestInit & { path?: string }, number, string, RegExp | string]>([
    ['GET', { method: 'GET' }, 405, 'text/plain; charset=utf-8', /GET not allowed/],
    ['unknown path', { path: '/v1/nope' }, 404, 'text/plain; charset=utf-8', /no such path/],
    [
      'unknown content-type',
      { headers: { 'content-type': 'text/plain' }, body: 'hi' },
      415,
      'text/plain; charset=utf-8',
      /content-type "text\/plain" is not OTLP\/HTTP/,
    ],
    [
      'unknown content-encoding',
      { headers: { 'content-type': 'application/json', 'content-encoding': 'zstd' }, body: '{}' },
      415,
      'text/plain; charset=utf-8',
      /unsupported content-encoding "zstd": use one of identity, gzip, x-gzip, deflate, br/,
    ],
    [
      'corrupt gzip',
      {
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: '{}',
      },
      400,
      'text/plain; charset=utf-8',
      /cannot undo content-encoding gzip: incorrect header check/,
    ],
    [
      'truncated protobuf',
      {
        headers: { 'content-type': 'application/x-protobuf' },
        body: new Uint8Array([0x0a, 0x05, 0x01]),
      },
      400,
      'text/plain; charset=utf-8',
      /malformed protobuf: field at byte 2 wants 5 bytes, 1 left/,
    ],
    [
      'invalid JSON',
      { headers: { 'content-type': 'application/json' }, body: '{' },
      400,
      'text/plain; charset=utf-8',
      /malformed OTLP\/JSON/,
    ],
    [
      'JSON of the wrong shape',
      { headers: { 'content-type': 'application/json' }, body: '{"resourceSpans":{}}' },
      400,
      'text/plain; charset=utf-8',
      /"request.resourceSpans" should be an array, got \{\}/,
    ],
    [
      'empty protobuf request',
      { headers: { 'content-type': 'application/x-protobuf' }, body: new Uint8Array(0) },
      200,
      'application/x-protobuf',
      '',
    ],
    [
      'logs are accepted and ignored',
      { path: '/v1/logs', headers: { 'content-type': 'application/json' }, body: '{}' },
      200,
      'application/json',
      '{}',
    ],
  ])('%s', async (_, { path = '/v1/traces', ...init }, status, contentType, body) => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const response = await fetch(`${receiver.url}${path}`, { method: 'POST', ...init });
      expect(response.status).toBe(status);
      expect(response.headers.get('content-type')).toBe(contentType);
      const text = await response.text();
      if (typeof body === 'string') expect(text).toBe(body);
      else expect(text).toMatch(body);
      expect(errors).toHaveBeenCalledTimes(status === 200 ? 0 : 1);
      expect(receiver.spans()).toEqual([]);
    } finally {
      errors.mockRestore();
    }
  });

  it.each(['gzip', 'deflate'] as const)(
    'decodes %s OTLP/JSON (upper-case ids, enum names, int64 strings)',
    async (encoding) => {
      const body =
        encoding === 'gzip'
          ? gzipSync(validJson)
          : (await import('node:zlib')).deflateSync(validJson);
      const response = await fetch(`${receiver.url}/v1/traces`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'content-encoding': encoding,
        },
        body,
      });
      expect(response.status).toBe(200);
      expect(await response.text()).toBe('{}');
      expect(receiver.spans()).toEqual([
        {
          traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
          spanId: '00f067aa0ba902b7',
          parentSpanId: undefined,
          parentIsRemote: undefined,
          name: 'raw span',
          kind: 'SERVER',
          startTimeUnixNano: 1_700_000_000_000_000_000n,
          endTimeUnixNano: 1_700_000_000_002_000_000n,
          durationMs: 2,
          status: { code: 'ERROR', message: 'bad' },
          attributes: {},
          resource: { 'service.name': 'raw' },
          scope: 'raw-scope',
          events: [],
          links: [],
        },
      ]);
    },
  );
});

/** A minimal protobuf writer, to build inputs the SDK never sends. */
const pb = {
  varint(value: bigint | number): number[] {
    const out: number[] = [];
    let v = BigInt.asUintN(64, BigInt(value));
    do {
      const low = Number(v & 0x7fn);
      v >>= 7n;
      out.push(v > 0n ? low | 0x80 : low);
    } while (v > 0n);
    return out;
  },
  int: (no: number, value: bigint | number) => [...pb.varint((no << 3) | 0), ...pb.varint(value)],
  len: (no: number, bytes: readonly number[]) => [
    ...pb.varint((no << 3) | 2),
    ...pb.varint(bytes.length),
    ...bytes,
  ],
  string: (no: number, text: string) => pb.len(no, [...Buffer.from(text)]),
  message: (no: number, ...fields: number[][]) => pb.len(no, fields.flat()),
  fixed64(no: number, value: bigint): number[] {
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(value);
    return [...pb.varint((no << 3) | 1), ...bytes];
  },
  double(no: number, value: number): number[] {
    const bytes = Buffer.alloc(8);
    bytes.writeDoubleLE(value);
    return [...pb.varint((no << 3) | 1), ...bytes];
  },
  fixed32(no: number, value: number): number[] {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(value);
    return [...pb.varint((no << 3) | 5), ...bytes];
  },
};
const hexBytes = (hex: string) => [...Buffer.from(hex, 'hex')];

function protobufSpanRequest(...spanFields: number[][]): Uint8Array {
  return new Uint8Array(
    pb.message(
      1,
      pb.message(2, pb.message(1, pb.string(1, 'scope')), pb.message(2, ...spanFields)),
    ),
  );
}
const ids = [
  pb.len(1, hexBytes('0af7651916cd43dd8448eb211c80319c')),
  pb.len(2, hexBytes('b7ad6b7169203331')),
];

describe('decodeTraceRequest (protobuf)', () => {
  it.each<[string, number[][], unknown]>([
    ['string', [pb.string(1, 'x')], 'x'],
    ['bool', [pb.int(2, 1)], true],
    ['negative int64', [pb.int(3, -5n)], -5],
    ['large int64', [pb.int(3, 2n ** 40n)], 2 ** 40],
    ['double', [pb.double(4, -1.5)], -1.5],
    [
      'array',
      [pb.message(5, pb.message(1, pb.string(1, 'a')), pb.message(1, pb.int(3, 2)))],
      ['a', 2],
    ],
    [
      'kvlist',
      [pb.message(6, pb.message(1, pb.string(1, 'k'), pb.message(2, pb.int(2, 0))))],
      { k: false },
    ],
    ['bytes', [pb.len(7, [1, 2, 255])], new Uint8Array([1, 2, 255])],
    ['empty AnyValue', [], null],
    ['unknown fields skipped', [pb.int(99, 1), pb.fixed32(98, 7), pb.string(1, 'y')], 'y'],
  ])('attribute value: %s', (_, valueFields, expected) => {
    const body = protobufSpanRequest(
      ...ids,
      pb.message(9, pb.string(1, 'v'), pb.message(2, ...valueFields)),
    );
    expect(decodeTraceRequest(body, 'protobuf')[0]?.attributes).toEqual({ v: expected });
  });

  it('reads times past 2^53, empty parent ids, UNSPECIFIED kind and remote-parent flags', () => {
    const [span] = decodeTraceRequest(
      protobufSpanRequest(
        ...ids,
        pb.len(4, []),
        pb.int(6, 0),
        pb.fixed64(7, 1_700_000_000_123_456_789n),
        pb.fixed64(8, 1_700_000_000_124_456_789n),
      ),
      'protobuf',
    );
    expect(span).toMatchObject({
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      parentSpanId: undefined,
      kind: 'INTERNAL',
      startTimeUnixNano: 1_700_000_000_123_456_789n,
      durationMs: 1,
    });

    const [remote] = decodeTraceRequest(
      protobufSpanRequest(...ids, pb.len(4, hexBytes('00f067aa0ba902b7')), pb.fixed32(16, 0x301)),
      'protobuf',
    );
    expect(remote).toMatchObject({ parentSpanId: '00f067aa0ba902b7', parentIsRemote: true });
  });

  it.each<[string, Uint8Array, RegExp]>([
    [
      'a span without ids',
      protobufSpanRequest(pb.string(5, 'nameless')),
      /span "nameless" has no traceId/,
    ],
    ['a group wire type', new Uint8Array([0x0b]), /wire type 3 of field 1/],
    ['an over-long varint', new Uint8Array([0x08, ...Array(11).fill(0xff)]), /over-long varint/],
    ['invalid UTF-8', protobufSpanRequest(...ids, pb.len(5, [0xff])), /invalid|encoded data/i],
  ])('rejects %s', (_, body, message) => {
    expect(() => decodeTraceRequest(body, 'protobuf')).toThrow(message);
  });
});

describe('decodeTraceRequest (OTLP/JSON)', () => {
  const jsonSpan = (span: Record<string, unknown>) =>
    new TextEncoder().encode(
      JSON.stringify({
        resourceSpans: [
          {
            scopeSpans: [
              {
                spans: [
                  {
                    traceId: '0af7651916cd43dd8448eb211c80319c',
                    spanId: 'b7ad6b7169203331',
                    ...span,
                  },
                ],
              },
            ],
          },
        ],
      }),
    );

  it.each<[string, Record<string, unknown>, Partial<ReceivedSpan>]>([
    ['kind as a number', { kind: 3 }, { kind: 'CLIENT' }],
    ['kind as a name', { kind: 'SPAN_KIND_CONSUMER' }, { kind: 'CONSUMER' }],
    ['status code as a number', { status: { code: 2 } }, { status: { code: 'ERROR' } }],
    ['no status', {}, { status: { code: 'UNSET' } }],
    [
      'base64 ids',
      { traceId: 'CvdlGRbNQ92ESOshHIAxnA==', spanId: 't61rcWkgMzE=' },
      { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331' },
    ],
    [
      'times as numbers and strings',
      { startTimeUnixNano: 1000000, endTimeUnixNano: '3500000' },
      { durationMs: 2.5 },
    ],
    [
      'attribute values',
      {
        attributes: [
          { key: 'i', value: { intValue: '-7' } },
          { key: 'nan', value: { doubleValue: 'NaN' } },
          { key: 'b', value: { bytesValue: 'AQL/' } },
          { key: 'arr', value: { arrayValue: { values: [{ boolValue: true }, {}] } } },
          {
            key: 'kv',
            value: { kvlistValue: { values: [{ key: 'n', value: { doubleValue: 2 } }] } },
          },
        ],
      },
      {
        attributes: {
          i: -7,
          nan: Number.NaN,
          b: new Uint8Array([1, 2, 255]),
          arr: [true, null],
          kv: { n: 2 },
        },
      },
    ],
  ])('%s', (_, span, expected) => {
    expect(decodeTraceRequest(jsonSpan(span), 'json')[0]).toMatchObject(expected);
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['a non-hex id', { spanId: 'not an id' }, /spans\[0\]\.spanId" should be a hex string/],
    [
      'a fractional time string',
      { startTimeUnixNano: '1.5' },
      /startTimeUnixNano" should be an integer/,
    ],
    ['a missing trace id', { traceId: '' }, /has no traceId/],
  ])('rejects %s', (_, span, message) => {
    expect(() => decodeTraceRequest(jsonSpan(span), 'json')).toThrow(message);
  });
});

describe('formatTraceTree', () => {
  const T = 0;
  const span = (fields: Partial<ReceivedSpan> & { start: number; end: number }): ReceivedSpan => {
    const { start, end, ...rest } = fields;
    return {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '0000000000000000',
      parentSpanId: undefined,
      parentIsRemote: undefined,
      name: '',
      kind: 'INTERNAL',
      startTimeUnixNano: nanos(start),
      endTimeUnixNano: nanos(end),
      durationMs: end - start,
      status: { code: 'UNSET' },
      attributes: {},
      resource: { 'service.name': 'api' },
      scope: 'test',
      events: [],
      links: [],
      ...rest,
    };
  };
  const backend = { 'service.name': 'backend' };
  const root = span({
    spanId: 'a000000000000001',
    name: 'GET /greet',
    kind: 'SERVER',
    start: T,
    end: T + 12.5,
    status: { code: 'OK' },
    attributes: { 'http.route': '/greet', 'http.response.status_code': 200, 'enduser.id': 'alice' },
  });
  const client = span({
    spanId: 'a000000000000002',
    parentSpanId: root.spanId,
    name: 'BackendService/Greet',
    kind: 'CLIENT',
    start: T + 2,
    end: T + 11,
    attributes: { 'rpc.status_code': 'OK' },
  });
  const cache = span({
    spanId: 'a000000000000003',
    parentSpanId: root.spanId,
    name: 'cache.get',
    start: T + 11,
    end: T + 11.25,
  });
  const server = span({
    spanId: 'b000000000000001',
    parentSpanId: client.spanId,
    parentIsRemote: true,
    name: 'BackendService/Greet',
    kind: 'SERVER',
    start: T + 3,
    end: T + 10,
    resource: backend,
    attributes: { 'rpc.status_code': 'OK', 'enduser.id': 'alice' },
  });
  const orphan = span({
    spanId: 'c000000000000001',
    parentSpanId: 'ffffffffffffffff',
    name: 'db.query',
    kind: 'CLIENT',
    start: T + 4,
    end: T + 4.5,
    resource: backend,
    status: { code: 'ERROR', message: 'timed out' },
    attributes: { 'error.type': 'Timeout' },
    events: [
      {
        name: 'exception',
        timeUnixNano: nanos(T + 4.5),
        attributes: { 'exception.type': 'TimeoutError', 'exception.message': 'timed out' },
      },
    ],
  });

  it('renders a 3-level trace with children by start time and an orphan at the top level', () => {
    expect(formatTraceTree([server, orphan, cache, client, root])).toBe(
      [
        'trace 4bf92f3577b34da6a3ce929d0e0e4736  5 spans  12.5 ms',
        'GET /greet                       api      SERVER    12.5 ms  OK     http.response.status_code=200 enduser.id=alice',
        '├─ BackendService/Greet          api      CLIENT    9.00 ms  UNSET  rpc.status_code=OK',
        '│  └─ BackendService/Greet       backend  SERVER    7.00 ms  UNSET  rpc.status_code=OK enduser.id=alice',
        '└─ cache.get                     api      INTERNAL  0.25 ms  UNSET',
        'db.query  (parent not received)  backend  CLIENT    0.50 ms  ERROR  error.type=Timeout status.message="timed out"',
        '   ! exception TimeoutError: timed out',
      ].join('\n'),
    );
  });

  it('colours status and marks only when asked', () => {
    const coloured = formatTraceTree([root, orphan], { color: true });
    expect(coloured).toContain('\x1b[31mERROR\x1b[0m');
    expect(coloured).toContain('\x1b[32mOK   \x1b[0m');
    expect(coloured).toContain('\x1b[33m(parent not received)\x1b[0m');
    expect(formatTraceTree([root, orphan])).not.toContain('\x1b[');
  });

  it('renders each trace of a mixed list under its own header', () => {
    const other = span({
      traceId: 'f'.repeat(32),
      spanId: 'd000000000000001',
      name: 'other',
      start: T + 20,
      end: T + 21,
    });
    const text = formatTraceTree([other, root]);
    expect(text.split('\n\n').map((block) => block.split('\n')[0])).toEqual([
      'trace 4bf92f3577b34da6a3ce929d0e0e4736  1 span  12.5 ms',
      `trace ${'f'.repeat(32)}  1 span  1.00 ms`,
    ]);
  });
});

describe('createTraceTreePrinter', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const named = (
    traceId: string,
    spanId: string,
    name: string,
    parentSpanId?: string,
  ): ReceivedSpan => ({
    traceId,
    spanId,
    parentSpanId,
    parentIsRemote: undefined,
    name,
    kind: 'INTERNAL',
    startTimeUnixNano: nanos(Number.parseInt(spanId, 16)),
    endTimeUnixNano: nanos(Number.parseInt(spanId, 16) + 1),
    durationMs: 1,
    status: { code: 'UNSET' },
    attributes: {},
    resource: { 'service.name': 'api' },
    scope: 'test',
    events: [],
    links: [],
  });
  const A = 'a'.repeat(32);
  const B = 'b'.repeat(32);

  it('prints a trace once it is quiet, reprints it whole when late spans come, flushes on demand', () => {
    const out: string[] = [];
    const printer = createTraceTreePrinter({ quietMs: 300, write: (text) => out.push(text) });

    printer.add([named(A, '0000000000000001', 'root')]);
    vi.advanceTimersByTime(299);
    printer.add([named(A, '0000000000000002', 'child', '0000000000000001')]);
    vi.advanceTimersByTime(299);
    expect(out).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(out).toHaveLength(1);
    expect(out[0]).toMatch(/^trace a{32} {2}2 spans {2}2\.00 ms\nroot .*\n└─ child .*\n\n$/);

    printer.add([named(A, '0000000000000003', 'late', '0000000000000001')]);
    vi.advanceTimersByTime(300);
    expect(out).toHaveLength(2);
    expect(out[1]).toMatch(/^trace a{32} {2}3 spans {2}3\.00 ms {2}\(updated: \+1 span\)\n/);
    expect(out[1]).toContain('└─ late');

    printer.add([named(B, '0000000000000004', 'other')]);
    printer.flush();
    expect(out).toHaveLength(3);
    expect(out[2]).toMatch(/^trace b{32} {2}1 span/);
    vi.advanceTimersByTime(1_000);
    expect(out).toHaveLength(3);
    printer.close();
  });
});

describe('cli.ts', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
  });

  it('prints its URL, then each trace as a tree, and exits 0 on SIGTERM', async () => {
    const proc = spawn(process.execPath, [CLI, '--port', '0', '--quiet-ms', '50'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let stdout = '';
    let stderr = '';
    proc.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    proc.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) =>
      proc.on('exit', (code) => resolve(code)),
    );
    const waitForOutput = async (pattern: RegExp): Promise<RegExpMatchArray> => {
      const deadline = Date.now() + 4_000;
      for (;;) {
        const match = stdout.match(pattern);
        if (match) return match;
        if (Date.now() > deadline) {
          throw new Error(
            `cli output never matched ${pattern}; stdout:\n${stdout}\nstderr:\n${stderr}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };

    const [, url] = await waitForOutput(
      /^OTLP receiver listening on (http:\/\/127\.0\.0\.1:\d+) /m,
    );
    const exporter = protoExporter(`${url}/v1/traces`);
    const spans = await finishedSpans('from the cli test');
    expect((await exportOnce(exporter, spans)).code).toBe(ExportResultCode.SUCCESS);
    await exporter.shutdown();

    const traceId = spans[0]?.spanContext().traceId as string;
    await waitForOutput(
      new RegExp(`^trace ${traceId}  1 span .*\\nfrom the cli test  .*INTERNAL`, 'm'),
    );
    expect(stdout).not.toContain('\x1b[');
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
  });
});
