import type { IncomingHttpHeaders } from 'node:http2';
import { type DescMessage, fromBinary, type MessageShape } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { type Compression, compressedFlag } from '@connectrpc/connect/protocol';

/*
 * A gRPC message on the wire: one flag byte (bit 0: compressed), its length as four big-endian
 * bytes, then the message. Shared by the backend's unary fast path and the api's unary
 * transport, with the errors Connect-ES gives for the same bytes; and the conversions between
 * Node's header objects and the fetch `Headers` Connect's interfaces use.
 */

export const ENVELOPE_HEADER_BYTES = 5;

/** gRPC's default message size limit, both ways: larger messages get RESOURCE_EXHAUSTED. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export function frame(data: Uint8Array, flags = 0): Buffer {
  const framed = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + data.byteLength);
  framed.writeUInt8(flags, 0);
  framed.writeUInt32BE(data.byteLength, 1);
  framed.set(data, ENVELOPE_HEADER_BYTES);
  return framed;
}

/**
 * The one message of a unary call's body, decompressed and parsed; undefined for an empty
 * body. Checked in the order Connect's pipeline does it: the first envelope, its compression,
 * the message, then anything after it.
 */
export async function singleMessage<T extends DescMessage>(
  schema: T,
  body: Buffer,
  options: { readMaxBytes: number; compression: Compression | null; direction: 'input' | 'output' },
): Promise<MessageShape<T> | undefined> {
  const first = envelopeAt(body, 0, options.readMaxBytes);
  if (!first) return undefined;
  let data = first.data;
  if ((first.flags & compressedFlag) !== 0) {
    if (!options.compression) {
      throw new ConnectError(
        'received compressed envelope, but do not know how to decompress',
        Code.Internal,
      );
    }
    data = await options.compression.decompress(data, options.readMaxBytes);
  }
  const message = parse(schema, data);
  if (envelopeAt(body, first.end, options.readMaxBytes)) {
    throw new ConnectError(
      `protocol error: received extra ${options.direction} message for unary method`,
      Code.Unimplemented,
    );
  }
  return message;
}

export function messageTooLarge(size: number, readMaxBytes: number): ConnectError {
  return new ConnectError(
    `message size ${size} is larger than configured readMaxBytes ${readMaxBytes}`,
    Code.ResourceExhausted,
  );
}

type Envelope = { flags: number; data: Uint8Array; end: number };

function envelopeAt(body: Buffer, offset: number, readMaxBytes: number): Envelope | undefined {
  if (offset === body.length) return undefined;
  if (body.length - offset < ENVELOPE_HEADER_BYTES) throw incompleteEnvelope();
  const length = body.readUInt32BE(offset + 1);
  if (length > readMaxBytes) throw messageTooLarge(length, readMaxBytes);
  const end = offset + ENVELOPE_HEADER_BYTES + length;
  if (end > body.length) throw incompleteEnvelope();
  return {
    flags: body[offset] ?? 0,
    data: body.subarray(offset + ENVELOPE_HEADER_BYTES, end),
    end,
  };
}

function incompleteEnvelope(): ConnectError {
  return new ConnectError('protocol error: incomplete envelope', Code.InvalidArgument);
}

function parse<T extends DescMessage>(schema: T, data: Uint8Array): MessageShape<T> {
  try {
    return fromBinary(schema, data);
  } catch (thrown) {
    const reason = thrown instanceof Error ? thrown.message : String(thrown);
    throw new ConnectError(`parse binary: ${reason}`, Code.Internal);
  }
}

/** Node's headers as fetch Headers, pseudo-headers left out (as connect-node does). */
export function webHeaders(headers: IncomingHttpHeaders): Headers {
  const result = new Headers();
  for (const key in headers) {
    if (key.charCodeAt(0) === 58 /* ':' */) continue;
    const value = headers[key];
    if (typeof value === 'string') result.append(key, value);
    else if (typeof value === 'number') result.append(key, String(value));
    else if (Array.isArray(value)) for (const item of value) result.append(key, item);
  }
  return result;
}

/** Fetch Headers as the plain object Node's HTTP/2 API takes. */
export function nodeHeaders(headers: Headers): Record<string, string> {
  const result: Record<string, string> = {};
  headers.forEach((value, key) => {
    result[key] = value;
  });
  return result;
}

/** The body read so far as one buffer, without a copy when it came in one chunk. */
export function joined(chunks: Buffer[], length?: number): Buffer {
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, length);
}

/** Whether a content type is gRPC's or gRPC-Web's (`application/grpc…`), in any case. */
export function isGrpcFamily(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  return (
    contentType.startsWith('application/grpc') ||
    contentType.slice(0, 16).toLowerCase() === 'application/grpc'
  );
}
