import { promisify } from 'node:util';
import { brotliDecompress, gunzip, inflate } from 'node:zlib';
import { decodeMetrics } from './decode-metrics.ts';
import { decodeTraces } from './decode-traces.ts';
import type { OtlpMessage } from './internal-types.ts';
import { createJsonMessage } from './json-message.ts';
import { createProtobufMessage } from './protobuf-message.ts';
import type { ReceivedMetric, ReceivedSpan } from './types.ts';

export type OtlpFormat = 'protobuf' | 'json';

/** The OTLP/HTTP body format named by a content-type header, or undefined if it is neither. */
export function otlpFormatOf(contentType: string | undefined): OtlpFormat | undefined {
  const mediaType = contentType?.split(';')[0]?.trim().toLowerCase();
  if (mediaType === 'application/x-protobuf' || mediaType === 'application/protobuf') {
    return 'protobuf';
  }
  if (mediaType === 'application/json') return 'json';
  return undefined;
}

const decompressors: Readonly<Record<string, (body: Buffer, options: object) => Promise<Buffer>>> =
  {
    gzip: promisify(gunzip),
    'x-gzip': promisify(gunzip),
    deflate: promisify(inflate),
    br: promisify(brotliDecompress),
  };

const SUPPORTED_CONTENT_ENCODINGS = ['identity', ...Object.keys(decompressors)];

const normalise = (contentEncoding: string | undefined) =>
  contentEncoding?.trim().toLowerCase() || 'identity';

/** Undefined when the content-encoding is supported, else a message naming the supported ones. */
export function checkContentEncoding(contentEncoding: string | undefined): string | undefined {
  const encoding = normalise(contentEncoding);
  return SUPPORTED_CONTENT_ENCODINGS.includes(encoding)
    ? undefined
    : `unsupported content-encoding "${encoding}": use one of ${SUPPORTED_CONTENT_ENCODINGS.join(', ')}`;
}

/** Undoes a content-encoding that checkContentEncoding accepted. */
export async function decodeContentEncoding(
  body: Buffer,
  contentEncoding: string | undefined,
  maxOutputLength: number,
): Promise<Buffer> {
  const encoding = normalise(contentEncoding);
  const decompress = decompressors[encoding];
  if (!decompress) return body;
  try {
    return await decompress(body, { maxOutputLength });
  } catch (error) {
    throw new Error(`cannot undo content-encoding ${encoding}: ${(error as Error).message}`);
  }
}

function parse(body: Uint8Array, format: OtlpFormat): OtlpMessage {
  if (format === 'protobuf') return createProtobufMessage(body);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch (error) {
    throw new Error(`malformed OTLP/JSON: ${(error as Error).message}`);
  }
  return createJsonMessage(json);
}

/** An ExportTraceServiceRequest body, after any content-encoding is undone. */
export function decodeTraceRequest(body: Uint8Array, format: OtlpFormat): ReceivedSpan[] {
  return decodeTraces(parse(body, format));
}

/** An ExportMetricsServiceRequest body, after any content-encoding is undone. */
export function decodeMetricsRequest(body: Uint8Array, format: OtlpFormat): ReceivedMetric[] {
  return decodeMetrics(parse(body, format));
}
