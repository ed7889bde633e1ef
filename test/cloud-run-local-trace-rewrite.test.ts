import { describe, expect, it } from 'vitest';
import { rewriteTraceHeaders } from '../tools/cloud-run-local/index.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';
const SPAN_DECIMAL = '67667974448284343';
const fixedSpan = () => SPAN;

describe('rewriteTraceHeaders', () => {
  it.each([
    ['a sampled traceparent', `00-${TRACE}-b7ad6b7169203331-01`, undefined, TRACE, '01'],
    ['an unsampled traceparent', `00-${TRACE}-b7ad6b7169203331-00`, undefined, TRACE, '00'],
    ['other flag bits', `00-${TRACE}-b7ad6b7169203331-03`, undefined, TRACE, '03'],
    ['padding around it', ` 00-${TRACE}-b7ad6b7169203331-01 `, undefined, TRACE, '01'],
    [
      'a future version with more fields',
      `cc-${TRACE}-b7ad6b7169203331-01-extra`,
      undefined,
      TRACE,
      '01',
    ],
    ['only x-cloud-trace-context, sampled', undefined, `${TRACE}/123;o=1`, TRACE, '01'],
    ['only x-cloud-trace-context, no options', undefined, `${TRACE}/123`, TRACE, '00'],
    [
      'an invalid traceparent and a valid x-cloud-trace-context',
      'junk',
      `${TRACE}/1;o=1`,
      TRACE,
      '01',
    ],
    [
      'both, where traceparent wins',
      `00-${TRACE}-b7ad6b7169203331-00`,
      `${'a'.repeat(32)}/1;o=1`,
      TRACE,
      '00',
    ],
  ])('continues the trace of %s', (_, traceparent, cloudTraceContext, traceId, flags) => {
    const rewrite = rewriteTraceHeaders(traceparent, cloudTraceContext, fixedSpan);
    expect(rewrite.outgoing).toBe(`00-${traceId}-${SPAN}-${flags}`);
    const sampled = (Number.parseInt(flags, 16) & 1) === 1 ? 1 : 0;
    expect(rewrite.cloudTraceContext).toBe(`${traceId}/${SPAN_DECIMAL};o=${sampled}`);
    expect(rewrite.spanId).toBe(SPAN);
    expect(rewrite.incoming).toBe(traceparent);
  });

  it.each([
    ['no headers', undefined, undefined],
    ['upper-case hex', `00-${TRACE.toUpperCase()}-b7ad6b7169203331-01`, undefined],
    ['version ff', `ff-${TRACE}-b7ad6b7169203331-01`, undefined],
    ['version 00 with more fields', `00-${TRACE}-b7ad6b7169203331-01-extra`, undefined],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-b7ad6b7169203331-01`, undefined],
    ['an all-zero parent id', `00-${TRACE}-0000000000000000-01`, undefined],
    ['a short parent id', `00-${TRACE}-b7ad6b716920333-01`, undefined],
    ['an invalid x-cloud-trace-context', undefined, `${TRACE}/abc;o=1`],
    ['an all-zero x-cloud-trace-context', undefined, `${'0'.repeat(32)}/1;o=1`],
  ])('starts a new unsampled trace for %s', (_, traceparent, cloudTraceContext) => {
    const rewrite = rewriteTraceHeaders(traceparent, cloudTraceContext, fixedSpan);
    const match = /^00-([0-9a-f]{32})-00f067aa0ba902b7-00$/.exec(rewrite.outgoing);
    expect(match).not.toBeNull();
    const traceId = match?.[1] ?? '';
    expect(traceId).not.toBe(TRACE);
    expect(traceId).not.toBe('0'.repeat(32));
    expect(rewrite.cloudTraceContext).toBe(`${traceId}/${SPAN_DECIMAL};o=0`);
  });

  it('makes a fresh random span id for every request, never all zeros', () => {
    const ids = new Set(Array.from({ length: 50 }, () => rewriteTraceHeaders(undefined).spanId));
    expect(ids.size).toBe(50);
    const spans = ['0000000000000000', SPAN];
    expect(rewriteTraceHeaders(undefined, undefined, () => spans.shift() ?? '').spanId).toBe(SPAN);
  });

  it('writes span ids above 2^63 in unsigned decimal', () => {
    const rewrite = rewriteTraceHeaders(
      `00-${TRACE}-b7ad6b7169203331-01`,
      undefined,
      () => 'ffffffffffffffff',
    );
    expect(rewrite.cloudTraceContext).toBe(`${TRACE}/18446744073709551615;o=1`);
  });
});
