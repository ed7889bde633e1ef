import { isSpanContextValid, type SpanContext } from '@opentelemetry/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  formatCloudTraceContext,
  parseCloudTraceContext,
} from '../src/telemetry/propagation/index.js';

const TRACE_ID = '105445aa7843bc8bf206b12000100000';
const parsed = (spanId: string, traceFlags: number): SpanContext => ({
  traceId: TRACE_ID,
  spanId,
  traceFlags,
  isRemote: true,
});

const hex = (length: number) =>
  fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: length, maxLength: length });
const validSpanContext = fc.record({
  traceId: hex(32).filter((id) => /[^0]/.test(id)),
  spanId: hex(16).filter((id) => /[^0]/.test(id)),
  traceFlags: fc.integer({ min: 0, max: 255 }),
});

describe('parseCloudTraceContext', () => {
  it.each<[string, unknown, SpanContext | undefined]>([
    ['o=1 is sampled', `${TRACE_ID}/1;o=1`, parsed('0000000000000001', 1)],
    ['o=0 is not sampled', `${TRACE_ID}/1;o=0`, parsed('0000000000000001', 0)],
    ['missing options: not sampled', `${TRACE_ID}/1`, parsed('0000000000000001', 0)],
    ['other option values: not sampled', `${TRACE_ID}/1;o=x`, parsed('0000000000000001', 0)],
    // A bit field: its lowest bit asks for the trace.
    ['o=3 is sampled', `${TRACE_ID}/1;o=3`, parsed('0000000000000001', 1)],
    ['o=2 is not sampled', `${TRACE_ID}/1;o=2`, parsed('0000000000000001', 0)],
    ['unknown options tolerated', `${TRACE_ID}/1;x=y;o=1`, parsed('0000000000000001', 1)],
    ['empty options', `${TRACE_ID}/1;`, parsed('0000000000000001', 0)],
    [
      'upper-case trace id normalised',
      `${TRACE_ID.toUpperCase()}/1;o=1`,
      parsed('0000000000000001', 1),
    ],
    ['decimal span id to hex', `${TRACE_ID}/123456789;o=1`, parsed('00000000075bcd15', 1)],
    ['span id 2^64-1', `${TRACE_ID}/18446744073709551615;o=1`, parsed('ffffffffffffffff', 1)],
    ['leading zeros', `${TRACE_ID}/0000000000000000042`, parsed('000000000000002a', 0)],
    ['leading and trailing blanks', ` ${TRACE_ID}/1;o=1\t`, parsed('0000000000000001', 1)],
    ['span id 0', `${TRACE_ID}/0;o=1`, undefined],
    ['span id 2^64', `${TRACE_ID}/18446744073709551616;o=1`, undefined],
    ['span id of 21 digits', `${TRACE_ID}/100000000000000000000;o=1`, undefined],
    ['negative span id', `${TRACE_ID}/-1;o=1`, undefined],
    ['plus sign', `${TRACE_ID}/+1;o=1`, undefined],
    ['hex span id', `${TRACE_ID}/00f067aa0ba902b7;o=1`, undefined],
    ['0x span id', `${TRACE_ID}/0x1;o=1`, undefined],
    ['decimal point', `${TRACE_ID}/1.5;o=1`, undefined],
    ['missing span id', `${TRACE_ID}/;o=1`, undefined],
    ['missing slash and span id', `${TRACE_ID};o=1`, undefined],
    ['zero trace id', `${'0'.repeat(32)}/1;o=1`, undefined],
    ['short trace id', `${TRACE_ID.slice(1)}/1;o=1`, undefined],
    ['non-hex trace id', `${TRACE_ID.replace('a', 'g')}/1;o=1`, undefined],
    ['traceparent instead', `00-${TRACE_ID}-00f067aa0ba902b7-01`, undefined],
    ['garbage', 'not a trace context', undefined],
    ['empty', '', undefined],
    ['10 kB string', `${TRACE_ID}/1;o=1${' '.repeat(10_000)}`, undefined],
    ['array takes the first', [`${TRACE_ID}/1;o=1`, 'x'], parsed('0000000000000001', 1)],
    ['undefined', undefined, undefined],
    ['number', 1, undefined],
  ])('%s', (_name, input, expected) => {
    expect(parseCloudTraceContext(input)).toEqual(expected);
  });

  it('round-trips any valid span context through formatCloudTraceContext', () => {
    fc.assert(
      fc.property(validSpanContext, (ctx) => {
        expect(parseCloudTraceContext(formatCloudTraceContext(ctx))).toEqual({
          ...ctx,
          traceFlags: ctx.traceFlags & 1,
          isRemote: true,
        });
      }),
    );
  });

  it('never throws and returns only valid lower-case remote contexts', () => {
    const nearlyValid = fc
      .tuple(
        fc.stringMatching(/^[0-9a-fA-F]{31,33}$/),
        fc.oneof(fc.bigInt({ min: -1n, max: 2n ** 65n }).map(String), fc.string()),
        fc.constantFrom('', ';o=1', ';o=0', ';', ';o=1;x', ' '),
      )
      .map(([traceId, spanId, options]) => `${traceId}/${spanId}${options}`);
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), nearlyValid), (input) => {
        const result = parseCloudTraceContext(input);
        if (result === undefined) return;
        expect(isSpanContextValid(result)).toBe(true);
        expect(result.traceId + result.spanId).toMatch(/^[0-9a-f]{48}$/);
        expect([0, 1]).toContain(result.traceFlags);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('formatCloudTraceContext', () => {
  it.each<[string, SpanContext, string]>([
    ['sampled', parsed('0000000000000001', 1), `${TRACE_ID}/1;o=1`],
    ['not sampled', parsed('00000000075bcd15', 0), `${TRACE_ID}/123456789;o=0`],
    ['largest span id', parsed('ffffffffffffffff', 3), `${TRACE_ID}/18446744073709551615;o=1`],
  ])('%s', (_name, ctx, expected) => {
    expect(formatCloudTraceContext(ctx)).toBe(expected);
  });
});
