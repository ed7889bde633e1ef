import { randomBytes } from 'node:crypto';

export interface TraceRewrite {
  /** The `traceparent` the request came with, if any. */
  incoming?: string;
  /** The `traceparent` forwarded upstream. */
  outgoing: string;
  /** The `x-cloud-trace-context` forwarded upstream. */
  cloudTraceContext: string;
  /** The front end's own span id (16 hex), now the parent id in `outgoing`. */
  spanId: string;
}

const TRACE_PARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const CLOUD_TRACE_CONTEXT = /^([0-9a-fA-F]{32})\/(\d+)(?:;o=([01]))?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/**
 * What Google's front end does to trace headers: it starts its own span, makes it the parent in
 * `traceparent` (same trace id and flags; a new unsampled trace when there is no valid one) and
 * writes `x-cloud-trace-context: TRACE/<its span id in decimal>;o=<sampled>`. Without a valid
 * `traceparent` it continues a valid incoming `x-cloud-trace-context` trace.
 */
export function rewriteTraceHeaders(
  traceparent: string | undefined,
  cloudTraceContext?: string,
  newSpanId: () => string = () => randomHex(8),
): TraceRewrite {
  const parent = parseTraceParent(traceparent) ??
    parseCloudTraceContext(cloudTraceContext) ?? { traceId: randomHex(16), flags: '00' };
  let spanId = newSpanId();
  while (spanId === ZERO_SPAN_ID) spanId = newSpanId();
  const sampled = (Number.parseInt(parent.flags, 16) & 1) === 1;
  return {
    ...(traceparent === undefined ? {} : { incoming: traceparent }),
    outgoing: `00-${parent.traceId}-${spanId}-${parent.flags}`,
    cloudTraceContext: `${parent.traceId}/${BigInt(`0x${spanId}`)};o=${sampled ? 1 : 0}`,
    spanId,
  };
}

function parseTraceParent(
  value: string | undefined,
): { traceId: string; flags: string } | undefined {
  const match = TRACE_PARENT.exec(value?.trim() ?? '');
  if (!match) return undefined;
  const [, version, traceId = '', parentId, flags = '00', rest] = match;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return undefined;
  return { traceId, flags };
}

function parseCloudTraceContext(
  value: string | undefined,
): { traceId: string; flags: string } | undefined {
  const match = CLOUD_TRACE_CONTEXT.exec(value?.trim() ?? '');
  if (!match?.[1]) return undefined;
  const traceId = match[1].toLowerCase();
  if (traceId === ZERO_TRACE_ID) return undefined;
  return { traceId, flags: match[3] === '1' ? '01' : '00' };
}

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}
