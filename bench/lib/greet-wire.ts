import { fields, WIRE_LEN, WIRE_VARINT } from './protobuf-fields.ts';

/*
 * The Greet wire contract by hand (proto/backend_service/v1/backend_service.proto), for the
 * framework-free baseline and the bench's own clients:
 *   GreetRequest  { string name = 1; bool with_error = 2; }
 *   GreetResponse { string reply = 2; }
 * framed as gRPC messages: 1 byte "compressed" flag, 4 bytes big-endian length, the message.
 */

export const GREET_PATH = '/backend_service.v1.BackendService/Greet';

export type GreetRequest = { name: string; withError: boolean };

function varint(value: number): number[] {
  const bytes: number[] = [];
  let rest = value;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  bytes.push(rest);
  return bytes;
}

function stringField(field: number, value: string): Buffer {
  const text = Buffer.from(value, 'utf8');
  return Buffer.concat([Buffer.from([(field << 3) | WIRE_LEN, ...varint(text.length)]), text]);
}

export function encodeGreetRequest(request: GreetRequest): Buffer {
  const parts = [stringField(1, request.name)];
  if (request.withError) parts.push(Buffer.from([(2 << 3) | WIRE_VARINT, 1]));
  return Buffer.concat(parts);
}

export function encodeGreetResponse(reply: string): Buffer {
  return stringField(2, reply);
}

export function decodeGreetRequest(message: Buffer): GreetRequest {
  const request: GreetRequest = { name: '', withError: false };
  for (const f of fields(message)) {
    if (f.field === 1 && f.bytes) request.name = f.bytes.toString('utf8');
    if (f.field === 2 && f.varint !== undefined) request.withError = f.varint !== 0;
  }
  return request;
}

export function decodeGreetResponse(message: Buffer): string {
  let reply = '';
  for (const f of fields(message)) if (f.field === 2 && f.bytes) reply = f.bytes.toString('utf8');
  return reply;
}

/** One uncompressed gRPC length-prefixed message. */
export function grpcFrame(message: Buffer): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return Buffer.concat([prefix, message]);
}

/** The message of a body holding exactly one uncompressed gRPC frame. */
export function grpcUnframe(body: Buffer): Buffer {
  if (body.length < 5) throw new Error(`gRPC: body of ${body.length} bytes has no frame`);
  if (body[0] !== 0) throw new Error('gRPC: compressed frames are not supported here');
  const length = body.readUInt32BE(1);
  if (body.length !== 5 + length) throw new Error('gRPC: expected exactly one message');
  return body.subarray(5);
}
