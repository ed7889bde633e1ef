import {
  type Context,
  createContextKey,
  isSpanContextValid,
  type SpanContext,
  type TextMapGetter,
  type TextMapPropagator,
  trace,
} from '@opentelemetry/api';
import {
  isTracingSuppressed,
  TRACE_PARENT_HEADER,
  TRACE_STATE_HEADER,
  TraceState,
} from '@opentelemetry/core';
import {
  CLOUD_TRACE_CONTEXT_HEADER,
  formatCloudTraceContext,
  parseCloudTraceContext,
} from './cloud-trace-context.js';
import { joinedHeaderValue } from './header-value.js';
import { formatTraceParent, parseTraceParent } from './trace-parent.js';

/** The caller's own span context, sent beside `traceparent` because Cloud Run rewrites that one. */
export const CLIENT_TRACE_PARENT_HEADER = 'x-client-traceparent';

const LINKED_SPAN_CONTEXT = createContextKey('cloud-run-propagator linked span context');

/** The span context extracted beside the parent and not used as parent: link to it. */
export interface LinkedSpanContext {
  spanContext: SpanContext;
  /**
   * True for the front end's span (Cloud Run rewrote `traceparent` within the client's trace);
   * false for the client's own span when `traceparent` came with another trace id and won.
   */
  frontEnd: boolean;
}

export interface CloudRunPropagatorOptions {
  /** Also write Google's legacy `x-cloud-trace-context` header (default false). */
  writeCloudTraceContext?: boolean;
}

interface Extracted {
  parent: SpanContext | undefined;
  /** The other valid span context that was not chosen as parent: link it, don't lose it. */
  linked?: LinkedSpanContext;
}

/**
 * W3C trace context that survives Cloud Run's front end: inject writes `traceparent` and the
 * same value in `x-client-traceparent`; extract prefers the latter and keeps the front end's
 * span for {@link getLinkedSpanContext}. Baggage is not handled here.
 */
export function createCloudRunPropagator(
  options: CloudRunPropagatorOptions = {},
): TextMapPropagator {
  const writeCloudTraceContext = options.writeCloudTraceContext ?? false;
  return {
    inject(context, carrier, setter) {
      const spanContext = trace.getSpanContext(context);
      if (!spanContext || !isSpanContextValid(spanContext) || isTracingSuppressed(context)) return;
      const traceParent = formatTraceParent(spanContext);
      setter.set(carrier, TRACE_PARENT_HEADER, traceParent);
      setter.set(carrier, CLIENT_TRACE_PARENT_HEADER, traceParent);
      const traceState = spanContext.traceState?.serialize();
      if (traceState) setter.set(carrier, TRACE_STATE_HEADER, traceState);
      if (writeCloudTraceContext) {
        setter.set(carrier, CLOUD_TRACE_CONTEXT_HEADER, formatCloudTraceContext(spanContext));
      }
    },
    extract(context, carrier, getter) {
      const { parent, linked } = extractParent(carrier, getter);
      if (!parent) return context;
      const withParent = trace.setSpanContext(context, parent);
      if (linked) return withParent.setValue(LINKED_SPAN_CONTEXT, linked);
      return withParent.getValue(LINKED_SPAN_CONTEXT) === undefined
        ? withParent
        : withParent.deleteValue(LINKED_SPAN_CONTEXT);
    },
    fields() {
      return [
        TRACE_PARENT_HEADER,
        TRACE_STATE_HEADER,
        CLIENT_TRACE_PARENT_HEADER,
        CLOUD_TRACE_CONTEXT_HEADER,
      ];
    },
  };
}

/**
 * The span context extracted beside the parent and not used as parent: the front end's span when
 * Cloud Run rewrote `traceparent`, or the client's when the trace ids disagreed. Link to it.
 */
export function getLinkedSpanContext(ctx: Context): LinkedSpanContext | undefined {
  return ctx.getValue(LINKED_SPAN_CONTEXT) as LinkedSpanContext | undefined;
}

function extractParent<Carrier>(carrier: Carrier, getter: TextMapGetter<Carrier>): Extracted {
  const client = parseTraceParent(getter.get(carrier, CLIENT_TRACE_PARENT_HEADER));
  const w3c = parseTraceParent(getter.get(carrier, TRACE_PARENT_HEADER));
  if (client && w3c) {
    if (client.traceId !== w3c.traceId) {
      return {
        parent: withTraceState(w3c, carrier, getter),
        linked: { spanContext: client, frontEnd: false },
      };
    }
    if (client.spanId !== w3c.spanId) {
      return {
        parent: withTraceState(client, carrier, getter),
        linked: { spanContext: w3c, frontEnd: true },
      };
    }
  }
  if (w3c) return { parent: withTraceState(client ?? w3c, carrier, getter) };
  const cloud = parseCloudTraceContext(getter.get(carrier, CLOUD_TRACE_CONTEXT_HEADER));
  if (!client) return { parent: cloud };
  const parent = withTraceState(client, carrier, getter);
  if (cloud?.traceId !== client.traceId || cloud.spanId === client.spanId) return { parent };
  // A front end that wrote only Google's header, with its own span in the client's trace.
  return { parent, linked: { spanContext: cloud, frontEnd: true } };
}

function withTraceState<Carrier>(
  spanContext: SpanContext,
  carrier: Carrier,
  getter: TextMapGetter<Carrier>,
): SpanContext {
  const traceState = joinedHeaderValue(getter.get(carrier, TRACE_STATE_HEADER));
  return traceState ? { ...spanContext, traceState: new TraceState(traceState) } : spanContext;
}
