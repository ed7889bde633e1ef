import type { OtlpMessage } from './internal-types.ts';
import type { Attributes, AttributeValue } from './types.ts';

/** opentelemetry.proto.common.v1.AnyValue; an empty AnyValue reads as null. */
export function decodeAnyValue(value: OtlpMessage | undefined): AttributeValue {
  if (!value) return null;
  if (value.has(1, 'stringValue')) return value.string(1, 'stringValue') ?? '';
  if (value.has(2, 'boolValue')) return value.bool(2, 'boolValue') ?? false;
  if (value.has(3, 'intValue')) return Number(value.int(3, 'intValue') ?? 0n);
  if (value.has(4, 'doubleValue')) return value.double(4, 'doubleValue') ?? 0;
  if (value.has(5, 'arrayValue')) {
    return (value.message(5, 'arrayValue')?.messages(1, 'values') ?? []).map(decodeAnyValue);
  }
  if (value.has(6, 'kvlistValue')) {
    return decodeKeyValues(value.message(6, 'kvlistValue')?.messages(1, 'values') ?? []);
  }
  if (value.has(7, 'bytesValue')) return value.bytes(7, 'bytesValue') ?? new Uint8Array(0);
  return null;
}

/** A list of opentelemetry.proto.common.v1.KeyValue. */
export function decodeKeyValues(keyValues: readonly OtlpMessage[]): Attributes {
  const attributes: Attributes = {};
  for (const kv of keyValues) {
    attributes[kv.string(1, 'key') ?? ''] = decodeAnyValue(kv.message(2, 'value'));
  }
  return attributes;
}

/** The attributes of the opentelemetry.proto.resource.v1.Resource at field 1 of `parent`. */
export function decodeResource(parent: OtlpMessage): Attributes {
  return decodeKeyValues(parent.message(1, 'resource')?.messages(1, 'attributes') ?? []);
}

/** The name of the InstrumentationScope at field 1 of `parent`. */
export function decodeScopeName(parent: OtlpMessage): string {
  return parent.message(1, 'scope')?.string(1, 'name') ?? '';
}
