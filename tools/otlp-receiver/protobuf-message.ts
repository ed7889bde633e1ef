import type { OtlpMessage } from './internal-types.ts';

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

interface WireField {
  readonly wireType: number;
  /** The varint for WIRE_VARINT; otherwise unused. */
  readonly varint: bigint;
  /** The 8, 4 or length-delimited bytes; empty for WIRE_VARINT. */
  readonly bytes: Uint8Array;
}

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function readVarint(buf: Uint8Array, start: number): [value: bigint, next: number] {
  let result = 0n;
  let shift = 0n;
  for (let pos = start; pos < buf.length && shift < 70n; pos++) {
    const byte = buf[pos] as number;
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [BigInt.asUintN(64, result), pos + 1];
    shift += 7n;
  }
  throw new Error(`malformed protobuf: truncated or over-long varint at byte ${start}`);
}

function take(buf: Uint8Array, pos: number, length: number): Uint8Array {
  if (length < 0 || pos + length > buf.length) {
    throw new Error(
      `malformed protobuf: field at byte ${pos} wants ${length} bytes, ${buf.length - pos} left`,
    );
  }
  return buf.subarray(pos, pos + length);
}

function parseFields(buf: Uint8Array): Map<number, WireField[]> {
  const fields = new Map<number, WireField[]>();
  let pos = 0;
  while (pos < buf.length) {
    const [tag, afterTag] = readVarint(buf, pos);
    const no = Number(tag >> 3n);
    const wireType = Number(tag & 7n);
    let field: WireField;
    switch (wireType) {
      case WIRE_VARINT: {
        const [varint, next] = readVarint(buf, afterTag);
        field = { wireType, varint, bytes: EMPTY };
        pos = next;
        break;
      }
      case WIRE_I64:
        field = { wireType, varint: 0n, bytes: take(buf, afterTag, 8) };
        pos = afterTag + 8;
        break;
      case WIRE_I32:
        field = { wireType, varint: 0n, bytes: take(buf, afterTag, 4) };
        pos = afterTag + 4;
        break;
      case WIRE_LEN: {
        const [length, start] = readVarint(buf, afterTag);
        field = { wireType, varint: 0n, bytes: take(buf, start, Number(length)) };
        pos = start + Number(length);
        break;
      }
      default:
        throw new Error(`malformed protobuf: wire type ${wireType} of field ${no} at byte ${pos}`);
    }
    if (no === 0) throw new Error(`malformed protobuf: field number 0 at byte ${pos}`);
    const list = fields.get(no);
    if (list) list.push(field);
    else fields.set(no, [field]);
  }
  return fields;
}

const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

const toHex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/** Reads one protobuf message lazily; nested messages are parsed when first asked for. */
export function createProtobufMessage(buf: Uint8Array): OtlpMessage {
  const fields = parseFields(buf);
  const last = (no: number, wireTypes: readonly number[]): WireField | undefined => {
    const list = fields.get(no);
    if (!list) return undefined;
    for (let i = list.length - 1; i >= 0; i--) {
      const field = list[i] as WireField;
      if (wireTypes.includes(field.wireType)) return field;
    }
    return undefined;
  };
  const lengthDelimited = (no: number) => last(no, [WIRE_LEN])?.bytes;
  const int = (no: number) => {
    const field = last(no, [WIRE_VARINT]);
    return field === undefined ? undefined : BigInt.asIntN(64, field.varint);
  };
  const repeated = (no: number) => fields.get(no) ?? [];
  const packed = <T>(no: number, width: number, read: (v: DataView, at: number) => T): T[] => {
    const out: T[] = [];
    for (const field of repeated(no)) {
      if (field.wireType !== WIRE_LEN && field.bytes.length !== width) continue;
      const v = view(field.bytes);
      for (let at = 0; at + width <= field.bytes.length; at += width) out.push(read(v, at));
    }
    return out;
  };

  return {
    has: (no) => fields.has(no),
    string: (no) => {
      const bytes = lengthDelimited(no);
      return bytes === undefined ? undefined : utf8.decode(bytes);
    },
    bytes: (no) => {
      const bytes = lengthDelimited(no);
      return bytes === undefined ? undefined : new Uint8Array(bytes);
    },
    id: (no) => {
      const bytes = lengthDelimited(no);
      return bytes === undefined || bytes.length === 0 ? undefined : toHex(bytes);
    },
    bool: (no) => {
      const value = int(no);
      return value === undefined ? undefined : value !== 0n;
    },
    int,
    fixed64: (no) => {
      const field = last(no, [WIRE_I64, WIRE_VARINT]);
      if (!field) return undefined;
      return field.wireType === WIRE_I64 ? view(field.bytes).getBigUint64(0, true) : field.varint;
    },
    sfixed64: (no) => {
      const field = last(no, [WIRE_I64, WIRE_VARINT]);
      if (!field) return undefined;
      return field.wireType === WIRE_I64
        ? view(field.bytes).getBigInt64(0, true)
        : BigInt.asIntN(64, field.varint);
    },
    fixed32: (no) => {
      const field = last(no, [WIRE_I32, WIRE_VARINT]);
      if (!field) return undefined;
      return field.wireType === WIRE_I32
        ? view(field.bytes).getUint32(0, true)
        : Number(BigInt.asUintN(32, field.varint));
    },
    double: (no) => {
      const field = last(no, [WIRE_I64]);
      return field === undefined ? undefined : view(field.bytes).getFloat64(0, true);
    },
    enumValue: (no) => {
      const value = int(no);
      return value === undefined ? undefined : Number(value);
    },
    message: (no) => {
      // Protobuf merges repeated occurrences of a singular message; concatenation does the same.
      const parts = repeated(no).filter((field) => field.wireType === WIRE_LEN);
      if (parts.length === 0) return undefined;
      const bytes =
        parts.length === 1
          ? (parts[0] as WireField).bytes
          : Buffer.concat(parts.map((p) => p.bytes));
      return createProtobufMessage(bytes);
    },
    messages: (no) =>
      repeated(no)
        .filter((field) => field.wireType === WIRE_LEN)
        .map((field) => createProtobufMessage(field.bytes)),
    fixed64List: (no) => packed(no, 8, (v, at) => v.getBigUint64(at, true)),
    doubleList: (no) => packed(no, 8, (v, at) => v.getFloat64(at, true)),
  };
}
