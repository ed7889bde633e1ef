import { type SpanContext, TraceFlags } from '@opentelemetry/api';
import { firstHeaderValue } from './header-value.js';

export const CLOUD_TRACE_CONTEXT_HEADER = 'x-cloud-trace-context';

const MAX_LENGTH = 512;
// TRACE_ID/SPAN_ID[;OPTIONS]: hex trace id (any case), decimal unsigned 64-bit span id.
const CLOUD_TRACE_CONTEXT = /^[ \t]*([0-9a-fA-F]{32})\/([0-9]{1,20})(?:;(.*?))?[ \t]*$/s;
const TRACE_OPTION = /^[ \t]*o=([0-9]{1,10})[ \t]*$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const MAX_SPAN_ID = 2n ** 64n - 1n;

/** Parses Google's legacy `x-cloud-trace-context`. Never throws; invalid yields `undefined`. */
export function parseCloudTraceContext(value: unknown): SpanContext | undefined {
  const text = firstHeaderValue(value);
  if (text === undefined || text.length > MAX_LENGTH) return undefined;
  const match = CLOUD_TRACE_CONTEXT.exec(text);
  if (!match?.[1] || !match[2]) return undefined;
  const traceId = match[1].toLowerCase();
  const spanId = BigInt(match[2]);
  if (traceId === ZERO_TRACE_ID || spanId === 0n || spanId > MAX_SPAN_ID) return undefined;
  const sampled = (match[3] ?? '').split(';').some(isTraceOption);
  return {
    traceId,
    spanId: spanId.toString(16).padStart(16, '0'),
    traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE,
    isRemote: true,
  };
}

/** `o=` is a bit field whose lowest bit asks for the trace: `o=1`, and `o=3` as Google reads it. */
function isTraceOption(option: string): boolean {
  const match = TRACE_OPTION.exec(option);
  return match?.[1] !== undefined && (Number(match[1]) & 1) === 1;
}

/** Formats a valid span context (hex ids, as `isSpanContextValid` checks) as `TRACE/DECIMAL;o=0|1`. */
export function formatCloudTraceContext(ctx: SpanContext): string {
  const sampled = ctx.traceFlags & TraceFlags.SAMPLED ? 1 : 0;
  return `${ctx.traceId.toLowerCase()}/${BigInt(`0x${ctx.spanId}`).toString(10)};o=${sampled}`;
}
