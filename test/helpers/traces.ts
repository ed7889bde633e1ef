import type { OtlpReceiver, ReceivedSpan } from '../../tools/otlp-receiver/index.ts';

/** The three spans of one greeting: api SERVER → api CLIENT → backend SERVER. */
export type GreetTrace = {
  server: ReceivedSpan;
  client: ReceivedSpan;
  backend: ReceivedSpan;
  all: ReceivedSpan[];
};

export async function waitForGreetTrace(
  receiver: OtlpReceiver,
  traceId: string,
): Promise<GreetTrace> {
  const all = await receiver.waitForSpans(
    (spans) => spans.filter((span) => span.traceId === traceId).length >= 3,
    { timeoutMs: 10_000 },
  );
  return splitGreetTrace(all.filter((span) => span.traceId === traceId));
}

export function splitGreetTrace(spans: ReceivedSpan[]): GreetTrace {
  const find = (kind: string, service: string) => {
    const found = spans.find(
      (span) => span.kind === kind && span.resource['service.name'] === service,
    );
    if (!found)
      throw new Error(
        `no ${kind} span from ${service} in ${JSON.stringify(spans.map((s) => s.name))}`,
      );
    return found;
  };
  return {
    server: find('SERVER', 'greeter-api'),
    client: find('CLIENT', 'greeter-api'),
    backend: find('SERVER', 'greeter-backend'),
    all: spans,
  };
}

/** A W3C traceparent for a fresh, sampled trace, with its ids. */
export function newTraceParent(sampled = true): {
  header: string;
  traceId: string;
  spanId: string;
} {
  const hex = (bytes: number) =>
    Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) =>
      b.toString(16).padStart(2, '0'),
    ).join('');
  const traceId = hex(16);
  const spanId = hex(8);
  return { header: `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`, traceId, spanId };
}
