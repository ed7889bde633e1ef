import type { OtlpReceiver, ReceivedSpan } from '../../tools/otlp-receiver/index.ts';
import type { Sent } from './load.ts';

type CompactSpan = {
  spanId: string;
  parentSpanId: string | undefined;
  kind: string;
  service: string;
};

export type TraceIndex = {
  /** Spans received so far. */
  spans(): number;
  /** Stops listening. */
  close(): void;
  byTrace: ReadonlyMap<string, readonly CompactSpan[]>;
};

/** Keeps only what the check needs from each span (the receiver itself retains nothing). */
export function indexTraces(receiver: OtlpReceiver): TraceIndex {
  const byTrace = new Map<string, CompactSpan[]>();
  let count = 0;
  const unsubscribe = receiver.onSpans((spans: readonly ReceivedSpan[]) => {
    for (const span of spans) {
      count += 1;
      const compact: CompactSpan = {
        spanId: span.spanId,
        parentSpanId: span.parentSpanId,
        kind: span.kind,
        service: String(span.resource['service.name'] ?? '?'),
      };
      const list = byTrace.get(span.traceId);
      if (list) list.push(compact);
      else byTrace.set(span.traceId, [compact]);
    }
  });
  return { spans: () => count, close: unsubscribe, byTrace };
}

export type TraceCheck = {
  checked: number;
  complete: number;
  /** Traces of successful requests that never arrived, or arrived without one of the three. */
  missing: string[];
  /** Traces with extra spans or wrong parents: the first few, described. */
  malformed: string[];
  /** Spans of traces we did not send. */
  strangers: number;
};

/**
 * Every successful request must have exactly three spans: api SERVER (child of the span id we
 * sent), api CLIENT (child of that), backend SERVER (child of the CLIENT span).
 */
export function checkTraces(sent: readonly Sent[], index: TraceIndex): TraceCheck {
  const result: TraceCheck = { checked: 0, complete: 0, missing: [], malformed: [], strangers: 0 };
  const ours = new Set(sent.map((request) => request.traceId));
  for (const request of sent) {
    if (request.status !== 200) continue;
    result.checked += 1;
    const spans = index.byTrace.get(request.traceId) ?? [];
    const server = spans.find((s) => s.kind === 'SERVER' && s.service === 'greeter-api');
    const client = spans.find((s) => s.kind === 'CLIENT' && s.service === 'greeter-api');
    const backend = spans.find((s) => s.kind === 'SERVER' && s.service === 'greeter-backend');
    if (!server || !client || !backend) {
      result.missing.push(`${request.traceId} (${spans.length} spans)`);
      continue;
    }
    const problems: string[] = [];
    if (spans.length !== 3) problems.push(`${spans.length} spans`);
    if (server.parentSpanId !== request.parentSpanId) problems.push('api SERVER parent');
    if (client.parentSpanId !== server.spanId) problems.push('CLIENT parent');
    if (backend.parentSpanId !== client.spanId) problems.push('backend SERVER parent');
    if (problems.length === 0) result.complete += 1;
    else if (result.malformed.length < 10) {
      result.malformed.push(`${request.traceId}: ${problems.join(', ')}`);
    }
  }
  for (const [traceId, spans] of index.byTrace) {
    if (!ours.has(traceId)) result.strangers += spans.length;
  }
  return result;
}
