import {
  type Context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  type SpanContext,
  trace,
} from '@opentelemetry/api';
import {
  CompositePropagator,
  suppressTracing,
  TraceState,
  W3CBaggagePropagator,
} from '@opentelemetry/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createCloudRunPropagator,
  formatTraceParent,
  getLinkedSpanContext,
  type LinkedSpanContext,
} from '../src/telemetry/propagation/index.js';

const TRACE_A = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACE_B = '0af7651916cd43dd8448eb211c80319c';
const CLIENT_SPAN = '00f067aa0ba902b7';
const FRONT_END_SPAN = 'b7ad6b7169203331';
const XCTC_SPAN = '000000000000007b'; // 123

type Expected = { traceId: string; spanId: string; traceFlags: number; traceState?: string };
const tp = (traceId: string, spanId: string, flags = '01') => `00-${traceId}-${spanId}-${flags}`;
const ctx = (traceId: string, spanId: string, traceFlags = 1, traceState?: string): Expected =>
  traceState === undefined
    ? { traceId, spanId, traceFlags }
    : { traceId, spanId, traceFlags, traceState };

function linkedSummary(linked: LinkedSpanContext | undefined) {
  return linked && { ...summary(linked.spanContext), frontEnd: linked.frontEnd };
}

function summary(spanContext: SpanContext | undefined) {
  if (!spanContext) return undefined;
  expect(spanContext.isRemote).toBe(true);
  const { traceId, spanId, traceFlags } = spanContext;
  const traceState = spanContext.traceState?.serialize();
  return traceState === undefined
    ? { traceId, spanId, traceFlags }
    : { traceId, spanId, traceFlags, traceState };
}

const propagator = createCloudRunPropagator({});
const extract = (carrier: Record<string, unknown>): Context =>
  propagator.extract(ROOT_CONTEXT, carrier, defaultTextMapGetter);

describe('inject', () => {
  const sampled: SpanContext = {
    traceId: TRACE_A,
    spanId: CLIENT_SPAN,
    traceFlags: 1,
    traceState: new TraceState('vendor=value'),
  };
  const inject = (context: Context, writeCloudTraceContext = false) => {
    const carrier: Record<string, string> = {};
    createCloudRunPropagator({ writeCloudTraceContext }).inject(
      context,
      carrier,
      defaultTextMapSetter,
    );
    return carrier;
  };

  it('writes lower-case keys: traceparent, tracestate and the client copy', () => {
    expect(inject(trace.setSpanContext(ROOT_CONTEXT, sampled))).toStrictEqual({
      traceparent: tp(TRACE_A, CLIENT_SPAN),
      tracestate: 'vendor=value',
      'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
    });
  });

  it('adds x-cloud-trace-context when asked', () => {
    const { traceState: _, ...plain } = sampled;
    const carrier = inject(trace.setSpanContext(ROOT_CONTEXT, { ...plain, traceFlags: 0 }), true);
    expect(carrier).toStrictEqual({
      traceparent: tp(TRACE_A, CLIENT_SPAN, '00'),
      'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN, '00'),
      'x-cloud-trace-context': `${TRACE_A}/67667974448284343;o=0`,
    });
    for (const key of Object.keys(carrier)) expect(key).toBe(key.toLowerCase());
  });

  it.each<[string, Context]>([
    ['no span', ROOT_CONTEXT],
    ['invalid span context', trace.setSpanContext(ROOT_CONTEXT, { ...sampled, spanId: 'x' })],
    ['tracing suppressed', suppressTracing(trace.setSpanContext(ROOT_CONTEXT, sampled))],
  ])('writes nothing with %s', (_name, context) => {
    expect(inject(context, true)).toStrictEqual({});
  });

  it('lists every header it reads or writes in fields()', () => {
    expect(propagator.fields()).toStrictEqual([
      'traceparent',
      'tracestate',
      'x-client-traceparent',
      'x-cloud-trace-context',
    ]);
    const written = Object.keys(inject(trace.setSpanContext(ROOT_CONTEXT, sampled), true));
    expect(propagator.fields()).toEqual(expect.arrayContaining(written));
  });

  it('composes beside the W3C baggage propagator', () => {
    const composite = new CompositePropagator({
      propagators: [createCloudRunPropagator({}), new W3CBaggagePropagator()],
    });
    const context = propagation.setBaggage(
      trace.setSpanContext(ROOT_CONTEXT, sampled),
      propagation.createBaggage({ user: { value: 'u1' } }),
    );
    const carrier: Record<string, string> = {};
    composite.inject(context, carrier, defaultTextMapSetter);
    expect(carrier).toMatchObject({
      baggage: 'user=u1',
      'x-client-traceparent': expect.any(String),
    });
  });
});

describe('extract', () => {
  it.each<
    [
      string,
      Record<string, unknown>,
      Expected | undefined,
      (Expected & { frontEnd: boolean }) | undefined,
    ]
  >([
    [
      'front end rewrote traceparent: client parent, front end kept',
      {
        'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
        traceparent: tp(TRACE_A, FRONT_END_SPAN),
        tracestate: 'vendor=value',
        'x-cloud-trace-context': `${TRACE_A}/${BigInt(`0x${FRONT_END_SPAN}`)};o=1`,
      },
      ctx(TRACE_A, CLIENT_SPAN, 1, 'vendor=value'),
      { ...ctx(TRACE_A, FRONT_END_SPAN), frontEnd: true },
    ],
    [
      "rewrite with other flags: the client's sampling decision wins",
      {
        'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
        traceparent: tp(TRACE_A, FRONT_END_SPAN, '00'),
      },
      ctx(TRACE_A, CLIENT_SPAN, 1),
      { ...ctx(TRACE_A, FRONT_END_SPAN, 0), frontEnd: true },
    ],
    [
      'trace ids differ: traceparent wins, client kept (not as the front end)',
      {
        'x-client-traceparent': tp(TRACE_B, CLIENT_SPAN),
        traceparent: tp(TRACE_A, FRONT_END_SPAN),
      },
      ctx(TRACE_A, FRONT_END_SPAN),
      { ...ctx(TRACE_B, CLIENT_SPAN), frontEnd: false },
    ],
    [
      'both headers equal: no front-end span',
      { 'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN), traceparent: tp(TRACE_A, CLIENT_SPAN) },
      ctx(TRACE_A, CLIENT_SPAN),
      undefined,
    ],
    [
      'only traceparent, with tracestate',
      { traceparent: tp(TRACE_A, CLIENT_SPAN, '00'), tracestate: 'a=1' },
      ctx(TRACE_A, CLIENT_SPAN, 0, 'a=1'),
      undefined,
    ],
    [
      'only the client header',
      { 'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN) },
      ctx(TRACE_A, CLIENT_SPAN),
      undefined,
    ],
    [
      'invalid traceparent ignored',
      {
        'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
        traceparent: tp('0'.repeat(32), FRONT_END_SPAN),
      },
      ctx(TRACE_A, CLIENT_SPAN),
      undefined,
    ],
    [
      'invalid client header ignored',
      { 'x-client-traceparent': 'junk', traceparent: tp(TRACE_A, FRONT_END_SPAN) },
      ctx(TRACE_A, FRONT_END_SPAN),
      undefined,
    ],
    [
      'only x-cloud-trace-context, sampled',
      { 'x-cloud-trace-context': `${TRACE_A}/123;o=1` },
      ctx(TRACE_A, XCTC_SPAN, 1),
      undefined,
    ],
    [
      'only x-cloud-trace-context, not sampled; tracestate not attached',
      { 'x-cloud-trace-context': `${TRACE_A}/123;o=0`, tracestate: 'a=1' },
      ctx(TRACE_A, XCTC_SPAN, 0),
      undefined,
    ],
    [
      'x-cloud-trace-context ignored beside a valid traceparent',
      { traceparent: tp(TRACE_B, CLIENT_SPAN), 'x-cloud-trace-context': `${TRACE_A}/123;o=1` },
      ctx(TRACE_B, CLIENT_SPAN),
      undefined,
    ],
    [
      'only the client header and a front end writing x-cloud-trace-context: client parent, front end kept',
      {
        'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
        'x-cloud-trace-context': `${TRACE_A}/123;o=1`,
      },
      ctx(TRACE_A, CLIENT_SPAN),
      { ...ctx(TRACE_A, XCTC_SPAN, 1), frontEnd: true },
    ],
    [
      'only the client header and x-cloud-trace-context of another trace: client parent, nothing linked',
      {
        'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
        'x-cloud-trace-context': `${TRACE_B}/123;o=1`,
      },
      ctx(TRACE_A, CLIENT_SPAN),
      undefined,
    ],
    [
      'only the client header and x-cloud-trace-context naming the same span: nothing linked',
      {
        'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
        'x-cloud-trace-context': `${TRACE_A}/${BigInt(`0x${CLIENT_SPAN}`)};o=1`,
      },
      ctx(TRACE_A, CLIENT_SPAN),
      undefined,
    ],
    [
      'x-cloud-trace-context used when both W3C headers are invalid',
      {
        traceparent: 'x',
        'x-client-traceparent': 'y',
        'x-cloud-trace-context': `${TRACE_A}/123;o=1`,
      },
      ctx(TRACE_A, XCTC_SPAN, 1),
      undefined,
    ],
    [
      'array values (HTTP/2 and Node header objects)',
      {
        'x-client-traceparent': [tp(TRACE_A, CLIENT_SPAN)],
        traceparent: [tp(TRACE_A, FRONT_END_SPAN), 'junk'],
        tracestate: ['a=1', 'b=2'],
      },
      ctx(TRACE_A, CLIENT_SPAN, 1, 'a=1,b=2'),
      { ...ctx(TRACE_A, FRONT_END_SPAN), frontEnd: true },
    ],
    [
      'upper-case traceparent is invalid',
      { traceparent: tp(TRACE_A.toUpperCase(), CLIENT_SPAN) },
      undefined,
      undefined,
    ],
    ['no headers', {}, undefined, undefined],
  ])('%s', (_name, carrier, parent, linked) => {
    const context = extract(carrier);
    expect(summary(trace.getSpanContext(context))).toStrictEqual(parent);
    expect(linkedSummary(getLinkedSpanContext(context))).toStrictEqual(linked);
  });

  it('returns the context unchanged when every header is junk', () => {
    const carrier = {
      traceparent: `ff-${TRACE_A}-${CLIENT_SPAN}-01`,
      tracestate: 'a=1',
      'x-client-traceparent': 42,
      'x-cloud-trace-context': `${TRACE_A}/0;o=1`,
    };
    expect(extract(carrier)).toBe(ROOT_CONTEXT);
  });

  it('drops a front-end span left in the context by an earlier extraction', () => {
    const first = extract({
      'x-client-traceparent': tp(TRACE_A, CLIENT_SPAN),
      traceparent: tp(TRACE_A, FRONT_END_SPAN),
    });
    const second = propagator.extract(
      first,
      { traceparent: tp(TRACE_B, CLIENT_SPAN) },
      defaultTextMapGetter,
    );
    expect(getLinkedSpanContext(first)).toBeDefined();
    expect(getLinkedSpanContext(second)).toBeUndefined();
  });
});

describe('properties', () => {
  const hex = (length: number) =>
    fc.string({
      unit: fc.constantFrom(...'0123456789abcdef'),
      minLength: length,
      maxLength: length,
    });
  const spanContext = fc.record({
    traceId: hex(32).filter((id) => /[^0]/.test(id)),
    spanId: hex(16).filter((id) => /[^0]/.test(id)),
    traceFlags: fc.integer({ min: 0, max: 255 }),
  });

  it('extract never throws and yields no span context or a valid one', () => {
    const key = fc.oneof(fc.constantFrom(...propagator.fields()), fc.string());
    const value = fc.oneof(
      fc.string(),
      spanContext.map(formatTraceParent),
      fc.array(fc.oneof(fc.string(), spanContext.map(formatTraceParent))),
      fc.anything(),
    );
    fc.assert(
      fc.property(fc.dictionary(key, value), (carrier) => {
        const context = extract(carrier);
        const parent = trace.getSpanContext(context);
        const linked = getLinkedSpanContext(context);
        if (parent) expect(isSpanContextValid(parent)).toBe(true);
        else expect(context).toBe(ROOT_CONTEXT);
        if (linked) expect(isSpanContextValid(linked.spanContext)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('extract(inject(span)) gives the span back, and keeps it through a front-end rewrite', () => {
    fc.assert(
      fc.property(spanContext, hex(16), fc.boolean(), (client, frontEndSpanId, rewrite) => {
        fc.pre(frontEndSpanId !== client.spanId && /[^0]/.test(frontEndSpanId));
        const carrier: Record<string, string> = {};
        createCloudRunPropagator({ writeCloudTraceContext: true }).inject(
          trace.setSpanContext(ROOT_CONTEXT, client),
          carrier,
          defaultTextMapSetter,
        );
        const frontEnd = { ...client, spanId: frontEndSpanId, traceFlags: 1 };
        if (rewrite) carrier.traceparent = formatTraceParent(frontEnd);

        const context = extract(carrier);
        const sampled = client.traceFlags & 1;
        expect(summary(trace.getSpanContext(context))).toStrictEqual({
          ...client,
          traceFlags: sampled,
        });
        expect(linkedSummary(getLinkedSpanContext(context))).toStrictEqual(
          rewrite ? { ...frontEnd, frontEnd: true } : undefined,
        );
      }),
    );
  });
});
