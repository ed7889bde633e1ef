import { decodeKeyValues, decodeResource, decodeScopeName } from './decode-attributes.ts';
import type { OtlpMessage } from './internal-types.ts';
import type {
  ReceivedEvent,
  ReceivedLink,
  ReceivedSpan,
  ReceivedSpanKind,
  ReceivedStatusCode,
} from './types.ts';

const SPAN_KIND_NAMES = [
  'SPAN_KIND_UNSPECIFIED',
  'SPAN_KIND_INTERNAL',
  'SPAN_KIND_SERVER',
  'SPAN_KIND_CLIENT',
  'SPAN_KIND_PRODUCER',
  'SPAN_KIND_CONSUMER',
] as const;
// The specification lets receivers read UNSPECIFIED as INTERNAL.
const SPAN_KINDS: readonly ReceivedSpanKind[] = [
  'INTERNAL',
  'INTERNAL',
  'SERVER',
  'CLIENT',
  'PRODUCER',
  'CONSUMER',
];

const STATUS_CODE_NAMES = ['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'] as const;
const STATUS_CODES: readonly ReceivedStatusCode[] = ['UNSET', 'OK', 'ERROR'];

const FLAG_HAS_IS_REMOTE = 0x100;
const FLAG_IS_REMOTE = 0x200;

function requireId(message: OtlpMessage, no: number, name: string, what: string): string {
  const id = message.id(no, name);
  if (id === undefined) {
    throw new Error(`malformed span: ${what} "${message.string(5, 'name') ?? ''}" has no ${name}`);
  }
  return id;
}

function decodeEvent(event: OtlpMessage): ReceivedEvent {
  return {
    name: event.string(2, 'name') ?? '',
    timeUnixNano: event.fixed64(1, 'timeUnixNano') ?? 0n,
    attributes: decodeKeyValues(event.messages(3, 'attributes')),
  };
}

function decodeLink(link: OtlpMessage): ReceivedLink {
  return {
    traceId: requireId(link, 1, 'traceId', 'a link of span'),
    spanId: requireId(link, 2, 'spanId', 'a link of span'),
    attributes: decodeKeyValues(link.messages(4, 'attributes')),
  };
}

function decodeStatus(status: OtlpMessage | undefined): ReceivedSpan['status'] {
  const code = STATUS_CODES[status?.enumValue(3, 'code', STATUS_CODE_NAMES) ?? 0] ?? 'UNSET';
  const message = status?.string(2, 'message');
  return message ? { code, message } : { code };
}

function decodeSpan(
  span: OtlpMessage,
  resource: ReceivedSpan['resource'],
  scope: string,
): ReceivedSpan {
  const parentSpanId = span.id(4, 'parentSpanId');
  const flags = span.fixed32(16, 'flags') ?? 0;
  const startTimeUnixNano = span.fixed64(7, 'startTimeUnixNano') ?? 0n;
  const endTimeUnixNano = span.fixed64(8, 'endTimeUnixNano') ?? 0n;
  return {
    traceId: requireId(span, 1, 'traceId', 'span'),
    spanId: requireId(span, 2, 'spanId', 'span'),
    parentSpanId,
    parentIsRemote:
      parentSpanId !== undefined && (flags & FLAG_HAS_IS_REMOTE) !== 0
        ? (flags & FLAG_IS_REMOTE) !== 0
        : undefined,
    name: span.string(5, 'name') ?? '',
    kind: SPAN_KINDS[span.enumValue(6, 'kind', SPAN_KIND_NAMES) ?? 0] ?? 'INTERNAL',
    startTimeUnixNano,
    endTimeUnixNano,
    durationMs: Number(endTimeUnixNano - startTimeUnixNano) / 1e6,
    status: decodeStatus(span.message(15, 'status')),
    attributes: decodeKeyValues(span.messages(9, 'attributes')),
    resource,
    scope,
    events: span.messages(11, 'events').map(decodeEvent),
    links: span.messages(13, 'links').map(decodeLink),
  };
}

/** opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest, flattened to spans. */
export function decodeTraces(request: OtlpMessage): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const resourceSpans of request.messages(1, 'resourceSpans')) {
    const resource = decodeResource(resourceSpans);
    for (const scopeSpans of resourceSpans.messages(2, 'scopeSpans')) {
      const scope = decodeScopeName(scopeSpans);
      for (const span of scopeSpans.messages(2, 'spans')) {
        spans.push(decodeSpan(span, resource, scope));
      }
    }
  }
  return spans;
}
