/**
 * A read-only view of one OTLP message, the same whether it arrived as protobuf or as OTLP/JSON,
 * so one decoder serves both. Each accessor takes the protobuf field number and the OTLP/JSON key.
 * Scalars read the last occurrence; absent fields read as undefined or an empty list.
 */
export interface OtlpMessage {
  has(no: number, name: string): boolean;
  string(no: number, name: string): string | undefined;
  bytes(no: number, name: string): Uint8Array | undefined;
  /** Trace and span ids: bytes in protobuf, hex in JSON; returned as lower-case hex. */
  id(no: number, name: string): string | undefined;
  bool(no: number, name: string): boolean | undefined;
  /** int32, int64, uint32, uint64 carried as varints, read as signed 64-bit. */
  int(no: number, name: string): bigint | undefined;
  fixed64(no: number, name: string): bigint | undefined;
  sfixed64(no: number, name: string): bigint | undefined;
  fixed32(no: number, name: string): number | undefined;
  double(no: number, name: string): number | undefined;
  /** Numbers in protobuf; numbers or value names (an index into `names`) in JSON. */
  enumValue(no: number, name: string, names: readonly string[]): number | undefined;
  message(no: number, name: string): OtlpMessage | undefined;
  messages(no: number, name: string): OtlpMessage[];
  fixed64List(no: number, name: string): bigint[];
  doubleList(no: number, name: string): number[];
}
