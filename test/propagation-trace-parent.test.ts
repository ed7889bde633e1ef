import { isSpanContextValid, type SpanContext } from '@opentelemetry/api';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatTraceParent, parseTraceParent } from '../src/telemetry/propagation/index.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN_ID = '00f067aa0ba902b7';
const VALID = `00-${TRACE_ID}-${SPAN_ID}-01`;
const parsed = (traceFlags: number): SpanContext => ({
  traceId: TRACE_ID,
  spanId: SPAN_ID,
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

describe('parseTraceParent', () => {
  it.each<[string, unknown, SpanContext | undefined]>([
    ['valid, sampled', VALID, parsed(1)],
    ['valid, not sampled', `00-${TRACE_ID}-${SPAN_ID}-00`, parsed(0)],
    ['unknown flags dropped, sampled kept', `00-${TRACE_ID}-${SPAN_ID}-ff`, parsed(1)],
    ['unknown flags dropped, not sampled', `00-${TRACE_ID}-${SPAN_ID}-02`, parsed(0)],
    ['version ff', `ff-${TRACE_ID}-${SPAN_ID}-01`, undefined],
    ['future version', `cc-${TRACE_ID}-${SPAN_ID}-01`, parsed(1)],
    ['future version with suffix', `cc-${TRACE_ID}-${SPAN_ID}-01-what-the-future-holds`, parsed(1)],
    ['future version, no dash after flags', `cc-${TRACE_ID}-${SPAN_ID}-01x`, undefined],
    ['version 00 with suffix', `${VALID}-extra`, undefined],
    ['version 00 with trailing dash', `${VALID}-`, undefined],
    ['short trace id', `00-${TRACE_ID.slice(1)}-${SPAN_ID}-01`, undefined],
    ['long trace id', `00-${TRACE_ID}0-${SPAN_ID}-01`, undefined],
    ['short span id', `00-${TRACE_ID}-${SPAN_ID.slice(1)}-01`, undefined],
    ['long span id', `00-${TRACE_ID}-${SPAN_ID}0-01`, undefined],
    ['one-digit flags', `00-${TRACE_ID}-${SPAN_ID}-1`, undefined],
    ['one-digit version', `0-${TRACE_ID}-${SPAN_ID}-01`, undefined],
    ['zero trace id', `00-${'0'.repeat(32)}-${SPAN_ID}-01`, undefined],
    ['zero span id', `00-${TRACE_ID}-${'0'.repeat(16)}-01`, undefined],
    ['upper-case trace id', `00-${TRACE_ID.toUpperCase()}-${SPAN_ID}-01`, undefined],
    ['upper-case span id', `00-${TRACE_ID}-${SPAN_ID.replace('f', 'F')}-01`, undefined],
    ['upper-case flags', `00-${TRACE_ID}-${SPAN_ID}-0A`, undefined],
    ['upper-case version', `0A-${TRACE_ID}-${SPAN_ID}-01`, undefined],
    ['missing flags', `00-${TRACE_ID}-${SPAN_ID}`, undefined],
    ['missing flags, trailing dash', `00-${TRACE_ID}-${SPAN_ID}-`, undefined],
    ['non-hex trace id', `00-${TRACE_ID.replace('4', 'g')}-${SPAN_ID}-01`, undefined],
    ['non-hex flags', `00-${TRACE_ID}-${SPAN_ID}-0x`, undefined],
    ['underscore separators', VALID.replaceAll('-', '_'), undefined],
    ['leading and trailing blanks (HTTP OWS)', ` \t${VALID}\t `, parsed(1)],
    ['blank inside', `00-${TRACE_ID} -${SPAN_ID}-01`, undefined],
    ['trailing newline', `${VALID}\n`, undefined],
    ['empty', '', undefined],
    ['10 kB string', `${VALID}-${'a'.repeat(10_000)}`.replace('00-', 'cc-'), undefined],
    ['array takes the first', [VALID, 'garbage'], parsed(1)],
    ['array with an invalid first', ['garbage', VALID], undefined],
    ['empty array', [], undefined],
    ['undefined', undefined, undefined],
    ['null', null, undefined],
    ['number', 42, undefined],
    ['object', { toString: () => VALID }, undefined],
  ])('%s', (_name, input, expected) => {
    expect(parseTraceParent(input)).toEqual(expected);
  });

  it('round-trips any valid span context through formatTraceParent', () => {
    fc.assert(
      fc.property(validSpanContext, (ctx) => {
        expect(parseTraceParent(formatTraceParent(ctx))).toEqual({
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
        fc.stringMatching(/^[0-9a-fA-F]{1,3}$/),
        fc.stringMatching(/^[0-9a-fA-F]{31,33}$/),
        fc.stringMatching(/^[0-9a-fA-F]{15,17}$/),
        fc.stringMatching(/^[0-9a-fA-F]{1,3}$/),
        fc.constantFrom('', '-', '-x', ' ', '\t', '\n'),
      )
      .map(
        ([version, traceId, spanId, flags, tail]) =>
          `${version}-${traceId}-${spanId}-${flags}${tail}`,
      );
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), nearlyValid), (input) => {
        const result = parseTraceParent(input);
        if (result === undefined) return;
        expect(isSpanContextValid(result)).toBe(true);
        expect(result.traceId + result.spanId).toMatch(/^[0-9a-f]{48}$/);
        expect([0, 1]).toContain(result.traceFlags);
        expect(result.isRemote).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('formatTraceParent', () => {
  it.each<[string, SpanContext, string]>([
    ['sampled', parsed(1), VALID],
    ['not sampled', parsed(0), `00-${TRACE_ID}-${SPAN_ID}-00`],
    ['keeps only the sampled flag', parsed(0xff), VALID],
    ['writes lower-case ids', { ...parsed(1), traceId: TRACE_ID.toUpperCase() }, VALID],
  ])('%s', (_name, ctx, expected) => {
    expect(formatTraceParent(ctx)).toBe(expected);
  });
});
