/** Just enough protobuf to walk a message's top-level fields (no schema, no copies). */

export const WIRE_VARINT = 0;
export const WIRE_LEN = 2;

export type Field = { field: number; varint?: number; bytes?: Buffer };

export function* fields(message: Buffer): Generator<Field> {
  let at = 0;
  const readVarint = (): number => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const byte = message[at++];
      if (byte === undefined) throw new Error('protobuf: truncated varint');
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
      shift += 7;
    }
  };
  while (at < message.length) {
    const key = readVarint();
    const field = Math.floor(key / 8);
    switch (key & 7) {
      case WIRE_VARINT:
        yield { field, varint: readVarint() };
        break;
      case WIRE_LEN: {
        const length = readVarint();
        if (at + length > message.length) throw new Error('protobuf: truncated field');
        yield { field, bytes: message.subarray(at, at + length) };
        at += length;
        break;
      }
      case 1:
        at += 8;
        break;
      case 5:
        at += 4;
        break;
      default:
        throw new Error(`protobuf: unsupported wire type in key ${key}`);
    }
  }
}
