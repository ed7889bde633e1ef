import { metrics, propagation, type TextMapGetter } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  AlwaysOnSampler,
  InMemorySpanExporter,
  ParentBasedSampler,
  type Sampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/telemetry/logger.js';
import { createServerSpans, type ServerOutcome } from '../src/telemetry/server-span.js';
import { newTraceParent } from './helpers/traces.js';

/*
 * The SERVER span lifecycle with the real SDK: what a response waits for in request mode
 * (spans flushed before answering, as on Cloud Run with request-based billing).
 */

type Headers = Record<string, string>;
const getter: TextMapGetter<Headers> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

function outcome(): ServerOutcome {
  return {
    fault: false,
    attributes: {},
    metric: { histogram: metrics.getMeter('test').createHistogram('test'), attributes: {} },
    httpRequest: { requestMethod: 'POST', requestUrl: '/greet', status: 200 },
  };
}

function lifecycle(sampler: Sampler) {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({
    sampler,
    spanProcessors: [new SimpleSpanProcessor({ exporter })],
  });
  const lines: string[] = [];
  let flushes = 0;
  const spans = createServerSpans({
    tracer: provider.getTracer('test'),
    logger: createLogger({
      level: 'info',
      labels: {},
      projectId: () => 'test-project',
      destination: { write: (line: string) => lines.push(line) },
    }),
    afterRequest: async () => {
      flushes++;
    },
  });
  const serve = (headers: Headers) =>
    spans.start('POST /greet', headers, getter, {}).end(outcome());
  const exported = async () => {
    await provider.forceFlush();
    return exporter.getFinishedSpans().length;
  };
  return { serve, exported, lines, flushes: () => flushes };
}

describe('SERVER spans in request mode', () => {
  beforeAll(() => {
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  });
  afterAll(() => {
    propagation.disable();
  });

  it('a sampled request waits for the flush; one its caller did not sample does not', async () => {
    const { serve, exported, lines, flushes } = lifecycle(
      new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    );
    const sampled = newTraceParent();
    await serve({ traceparent: sampled.header });
    expect(flushes()).toBe(1);

    expect(serve({ traceparent: newTraceParent(false).header })).toBeUndefined();
    expect(flushes()).toBe(1);

    await serve({});
    expect(flushes()).toBe(2);
    // Only sampled spans are exported: the unsampled request made none to wait for.
    expect(await exported()).toBe(2);
    // Every request still writes its access line.
    expect(lines).toHaveLength(3);
  });

  it('a root the sampler leaves out does not wait either', async () => {
    const { serve, exported, flushes } = lifecycle(new TraceIdRatioBasedSampler(0));
    expect(serve({})).toBeUndefined();
    expect(flushes()).toBe(0);
    expect(await exported()).toBe(0);
  });
});
