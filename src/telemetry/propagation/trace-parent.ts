import { type SpanContext, TraceFlags } from '@opentelemetry/api';
import { firstHeaderValue } from './header-value.js';

// Anything longer is not a traceparent we want to run a regex over.
const MAX_LENGTH = 512;
// W3C Trace Context level 1. Leading and trailing blanks (HTTP optional whitespace) are tolerated;
// versions above 00 may carry more fields after a dash, which are ignored.
const TRACE_PARENT =
  /^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$/s;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/** Parses a W3C `traceparent` value. Never throws; anything invalid yields `undefined`. */
export function parseTraceParent(value: unknown): SpanContext | undefined {
  const text = firstHeaderValue(value);
  if (text === undefined || text.length > MAX_LENGTH) return undefined;
  const match = TRACE_PARENT.exec(text);
  if (!match) return undefined;
  const [, version, traceId, spanId, flags, rest] = match;
  if (!version || !traceId || !spanId || !flags) return undefined;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  return {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16) & TraceFlags.SAMPLED,
    isRemote: true,
  };
}

/** Formats a valid span context as a version 00 `traceparent` (only the sampled flag is kept). */
export function formatTraceParent(ctx: SpanContext): string {
  const flags = ctx.traceFlags & TraceFlags.SAMPLED ? '01' : '00';
  return `00-${ctx.traceId.toLowerCase()}-${ctx.spanId.toLowerCase()}-${flags}`;
}
