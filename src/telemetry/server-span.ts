import {
  type Attributes,
  type Context,
  context,
  type Histogram,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type TextMapGetter,
  TraceFlags,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import {
  ATTR_ERROR_TYPE,
  ATTR_EXCEPTION_MESSAGE,
  ATTR_EXCEPTION_STACKTRACE,
  ATTR_EXCEPTION_TYPE,
  EVENT_EXCEPTION,
} from '@opentelemetry/semantic-conventions';
import { clipped } from '../errors/caller-text.js';
import { errorType } from './error-type.js';
import type { Logger } from './logger.js';
import { getLinkedSpanContext } from './propagation/index.js';
import { withRequestScope } from './request-attributes.js';
import { ATTR_LINK_FRONT_END_SPAN } from './semconv.js';

/**
 * How much of the caller's URL and user agent an access line keeps: the whole of any real one,
 * but not the 60,000 characters a caller can send to make 120 KB lines (and, for an unknown
 * method, Error Reporting events) of them.
 */
const MAX_LOGGED_URL = 4_096;
const MAX_LOGGED_USER_AGENT = 1_024;

/** Cloud Logging's `httpRequest` object for the access line. */
export type HttpRequestLog = {
  requestMethod: string;
  requestUrl: string;
  status: number;
  responseSize?: string;
  userAgent?: string;
  remoteIp?: string;
  protocol?: string;
  /** Set when the span ends. */
  latency?: string;
};

/**
 * An RPC's outcome on its access line, beside `httpRequest`: gRPC answers HTTP 200 whatever the
 * call's status, which only this says.
 */
export type RpcLog = {
  system: string;
  method: string;
  /** gRPC's name for the status, in every protocol: `OK`, `INVALID_ARGUMENT`, … */
  grpcStatus: string;
  /** Its number, as `grpc-status` carries it: 0 for OK, 3 for INVALID_ARGUMENT, … */
  grpcStatusCode: number;
};

export type ServerOutcome = {
  /** Whether the server failed (see `isServerFault*` in errors/status.ts): the one error rule. */
  fault: boolean;
  errorType?: string | undefined;
  exception?: unknown;
  attributes: Attributes;
  metric: { histogram: Histogram; attributes: Attributes };
  httpRequest: HttpRequestLog;
  /** More fields for the access line (the answer's problem detail, say). */
  logFields?: Record<string, unknown>;
  /** An RPC's status: on the access line, whose message then ends with its name. */
  rpc?: RpcLog;
};

export type ServerSpan = {
  readonly span: Span;
  readonly context: Context;
  /**
   * Ends the span once; records the metric and writes the access line. Returns a promise only
   * when the response must wait for the spans' export: in request mode, for a sampled request.
   */
  end(outcome: ServerOutcome): Promise<void> | undefined;
};

export type ServerSpansOptions = {
  tracer: Tracer;
  logger: Logger;
  /**
   * What a sampled request's response waits for after its span ended; none when spans are
   * exported in batches. Requests that are not sampled made no span to export (the sampler
   * decides for the whole trace), so they skip it: on Cloud Run most requests are not sampled.
   * A root span started while serving one is not waited for (README, CPU throttling).
   */
  afterRequest?: (() => Promise<void>) | undefined;
  /** Baggage keys only our own code may set: dropped from what callers send (public edge). */
  untrustedBaggageKeys?: readonly string[];
};

export type ServerSpans = {
  start<Carrier>(
    name: string,
    carrier: Carrier,
    getter: TextMapGetter<Carrier>,
    attributes: Attributes,
    /** When the request arrived (`performance.now()`), if before now: the span starts there. */
    arrivedAt?: number,
  ): ServerSpan;
};

/** One lifecycle for every SERVER span, HTTP and RPC alike. */
export function createServerSpans(options: ServerSpansOptions): ServerSpans {
  const { tracer, logger, afterRequest, untrustedBaggageKeys = [] } = options;

  return {
    start(name, carrier, getter, attributes, arrivedAt) {
      const startedAt = arrivedAt ?? performance.now();
      let parent = propagation.extract(ROOT_CONTEXT, carrier, getter);
      parent = withoutBaggageKeys(parent, untrustedBaggageKeys);
      const links: Link[] = [];
      const linked = getLinkedSpanContext(parent);
      if (linked) {
        links.push({
          context: linked.spanContext,
          attributes: linked.frontEnd ? { [ATTR_LINK_FRONT_END_SPAN]: true } : {},
        });
      }
      const scoped = withRequestScope(parent);
      const options: SpanOptions = { kind: SpanKind.SERVER, attributes, links };
      if (arrivedAt !== undefined) options.startTime = arrivedAt;
      const span = tracer.startSpan(name, options, scoped);
      const ctx = trace.setSpan(scoped, span);
      let ended = false;

      return {
        span,
        context: ctx,
        end(outcome) {
          if (ended) return undefined;
          ended = true;
          span.setAttributes(outcome.attributes);
          if (outcome.fault) {
            if (outcome.exception !== undefined) recordException(span, outcome.exception);
            const message = exceptionMessage(outcome.exception);
            span.setStatus({ code: SpanStatusCode.ERROR, ...(message ? { message } : {}) });
          }
          if (outcome.fault && outcome.errorType)
            span.setAttribute(ATTR_ERROR_TYPE, outcome.errorType);
          // One clock for the span and the duration, as the start may be given.
          const endedAt = performance.now();
          span.end(endedAt);
          const seconds = (endedAt - startedAt) / 1000;
          outcome.metric.histogram.record(seconds, outcome.metric.attributes);
          const { httpRequest } = outcome;
          httpRequest.latency = `${seconds.toFixed(6)}s`;
          httpRequest.requestUrl = clipped(httpRequest.requestUrl, MAX_LOGGED_URL);
          if (httpRequest.userAgent) {
            httpRequest.userAgent = clipped(httpRequest.userAgent, MAX_LOGGED_USER_AGENT);
          }
          context.with(ctx, () => {
            const { rpc } = outcome;
            const message = `${httpRequest.requestMethod} ${httpRequest.requestUrl} ${rpc ? rpc.grpcStatus : httpRequest.status}`;
            const fields = outcome.logFields
              ? { ...outcome.logFields, httpRequest, rpc }
              : { httpRequest, rpc };
            if (outcome.fault) logger.error({ ...fields, error: outcome.exception }, message);
            else logger.info(fields, message);
          });
          return isSampled(span) ? afterRequest?.() : undefined;
        },
      };
    },
  };
}

function isSampled(span: Span): boolean {
  return (span.spanContext().traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
}

function withoutBaggageKeys(ctx: Context, keys: readonly string[]): Context {
  const baggage = propagation.getBaggage(ctx);
  if (!baggage || keys.length === 0) return ctx;
  return propagation.setBaggage(ctx, baggage.removeEntries(...keys));
}

/**
 * Records `error` as the span's exception event, with its attributes set here: the SDK's
 * `recordException` types an error by its `code` when it has one (a ConnectError's number, a
 * Node error's `ECONNRESET`), where the conventions want its type.
 */
export function recordException(span: Span, error: unknown): void {
  if (!(error instanceof Error)) {
    span.addEvent(EVENT_EXCEPTION, { [ATTR_EXCEPTION_MESSAGE]: String(error) });
    return;
  }
  const attributes: Attributes = {
    [ATTR_EXCEPTION_TYPE]: errorType(error),
    [ATTR_EXCEPTION_MESSAGE]: error.message,
  };
  if (error.stack) attributes[ATTR_EXCEPTION_STACKTRACE] = error.stack;
  span.addEvent(EVENT_EXCEPTION, attributes);
}

function exceptionMessage(error: unknown): string | undefined {
  if (error === undefined) return undefined;
  return error instanceof Error ? error.message : String(error);
}
