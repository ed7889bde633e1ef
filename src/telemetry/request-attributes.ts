import {
  type Attributes,
  type Context,
  context,
  createContextKey,
  propagation,
  trace,
} from '@opentelemetry/api';
import type { Span, SpanProcessor } from '@opentelemetry/sdk-trace';

/*
 * The hook for users' own attributes. Inside a request, `setRequestAttributes` puts attributes
 * on every span of that request (open ones now, later ones when they start); with
 * `{ propagate: true }` they also travel to the backend as W3C baggage, where the span
 * processor copies allow-listed baggage keys onto every span of the backend's request.
 */

type RequestScope = {
  attributes: Attributes;
  propagated: Set<string>;
  /** The request's spans; ended ones are skipped (a request has a handful). */
  spans: Span[];
};

const REQUEST_SCOPE = createContextKey('request attributes scope');

export function withRequestScope(ctx: Context): Context {
  const scope: RequestScope = { attributes: {}, propagated: new Set(), spans: [] };
  return ctx.setValue(REQUEST_SCOPE, scope);
}

function scopeOf(ctx: Context): RequestScope | undefined {
  return ctx.getValue(REQUEST_SCOPE) as RequestScope | undefined;
}

export type SetRequestAttributesOptions = {
  /** Also send these attributes to downstream services as baggage. */
  propagate?: boolean;
};

/** Adds attributes to every span of the current request. Outside a request: the active span. */
export function setRequestAttributes(
  attributes: Attributes,
  options: SetRequestAttributesOptions = {},
): void {
  const scope = scopeOf(context.active());
  if (!scope) {
    trace.getActiveSpan()?.setAttributes(attributes);
    return;
  }
  Object.assign(scope.attributes, attributes);
  for (const span of scope.spans) if (span.isRecording()) span.setAttributes(attributes);
  if (options.propagate) for (const key of Object.keys(attributes)) scope.propagated.add(key);
}

/** The context to inject into an outgoing call: the active one plus propagated attributes. */
export function withPropagatedAttributes(ctx: Context): Context {
  const scope = scopeOf(ctx);
  if (!scope || scope.propagated.size === 0) return ctx;
  let baggage = propagation.getBaggage(ctx) ?? propagation.createBaggage();
  for (const key of scope.propagated) {
    const value = scope.attributes[key];
    if (value !== undefined && value !== null) {
      baggage = baggage.setEntry(key, { value: String(value) });
    }
  }
  return propagation.setBaggage(ctx, baggage);
}

/**
 * Copies the request's attributes and allow-listed baggage entries (received from the caller)
 * onto every span as it starts.
 */
export function createRequestAttributesSpanProcessor(
  baggageKeys: readonly string[],
): SpanProcessor {
  const allowed = new Set(baggageKeys);
  return {
    onStart(span: Span, parentContext: Context): void {
      const received = allowedBaggage(parentContext, allowed);
      if (received) span.setAttributes(received);
      const scope = scopeOf(parentContext);
      if (!scope) return;
      span.setAttributes(scope.attributes);
      scope.spans.push(span);
    },
    onEnd: () => {},
    forceFlush: () => Promise.resolve(),
    shutdown: () => Promise.resolve(),
  };
}

/**
 * What the request's spans get from this hook (allow-listed baggage, then its own attributes),
 * for its log lines: on Cloud Run most requests are not sampled, and have no spans to carry them.
 */
export function requestAttributesOf(
  ctx: Context,
  allowed: ReadonlySet<string>,
): Attributes | undefined {
  const received = allowedBaggage(ctx, allowed);
  const own = scopeOf(ctx)?.attributes;
  if (!own || Object.keys(own).length === 0) return received;
  return received ? { ...received, ...own } : { ...own };
}

/** The baggage entries (received from the caller) whose keys are allowed, as attributes. */
function allowedBaggage(ctx: Context, allowed: ReadonlySet<string>): Attributes | undefined {
  const baggage = allowed.size > 0 ? propagation.getBaggage(ctx) : undefined;
  if (!baggage) return undefined;
  let attributes: Attributes | undefined;
  for (const [key, entry] of baggage.getAllEntries()) {
    if (!allowed.has(key)) continue;
    attributes ??= {};
    attributes[key] = entry.value;
  }
  return attributes;
}
