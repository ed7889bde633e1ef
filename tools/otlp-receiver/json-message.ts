import type { OtlpMessage } from './internal-types.ts';

type JsonObject = { readonly [key: string]: unknown };

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const HEX_ID = /^(?:[0-9a-fA-F]{2})+$/;

function fail(name: string, expected: string, value: unknown): never {
  throw new Error(
    `malformed OTLP/JSON: "${name}" should be ${expected}, got ${JSON.stringify(value)}`,
  );
}

function toBigInt(name: string, value: unknown): bigint {
  if (typeof value === 'number' && Number.isFinite(value)) return BigInt(Math.trunc(value));
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value);
  return fail(name, 'an integer or a decimal string', value);
}

function toDouble(name: string, value: unknown): number {
  if (typeof value === 'number') return value;
  if (value === 'NaN') return Number.NaN;
  if (value === 'Infinity') return Number.POSITIVE_INFINITY;
  if (value === '-Infinity') return Number.NEGATIVE_INFINITY;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) {
    return Number(value);
  }
  return fail(name, 'a number', value);
}

/**
 * Ids are hex in OTLP/JSON. Base64 is what the generic protobuf JSON mapping would produce, so a
 * non-hex id of the right decoded length is read as base64.
 */
function toId(name: string, value: unknown): string | undefined {
  if (typeof value !== 'string') return fail(name, 'a hex string', value);
  if (value === '') return undefined;
  if (HEX_ID.test(value)) return value.toLowerCase();
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length === 8 || bytes.length === 16) return bytes.toString('hex');
  return fail(name, 'a hex string', value);
}

/** Reads one OTLP/JSON object (lowerCamelCase keys, per the OTLP/HTTP specification). */
export function createJsonMessage(object: unknown, path = 'request'): OtlpMessage {
  if (!isObject(object)) return fail(path, 'an object', object);
  const get = (name: string): unknown => object[name] ?? undefined;
  const scalar = <T>(name: string, read: (field: string, value: unknown) => T): T | undefined => {
    const value = get(name);
    return value === undefined || value === null ? undefined : read(`${path}.${name}`, value);
  };
  const list = (name: string): unknown[] => {
    const value = get(name);
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) return fail(`${path}.${name}`, 'an array', value);
    return value;
  };

  return {
    has: (_no, name) => get(name) !== undefined && get(name) !== null,
    string: (_no, name) =>
      scalar(name, (field, value) =>
        typeof value === 'string' ? value : fail(field, 'a string', value),
      ),
    bytes: (_no, name) =>
      scalar(name, (field, value) =>
        typeof value === 'string'
          ? new Uint8Array(Buffer.from(value, 'base64'))
          : fail(field, 'base64', value),
      ),
    id: (_no, name) => scalar(name, toId),
    bool: (_no, name) =>
      scalar(name, (field, value) =>
        typeof value === 'boolean' ? value : fail(field, 'a boolean', value),
      ),
    int: (_no, name) => scalar(name, toBigInt),
    fixed64: (_no, name) => scalar(name, toBigInt),
    sfixed64: (_no, name) => scalar(name, toBigInt),
    fixed32: (_no, name) => scalar(name, (field, value) => Number(toBigInt(field, value))),
    double: (_no, name) => scalar(name, toDouble),
    enumValue: (_no, name, names) =>
      scalar(name, (field, value) => {
        if (typeof value === 'string' && names.includes(value)) return names.indexOf(value);
        return Number(toBigInt(field, value));
      }),
    message: (_no, name) => {
      const value = get(name);
      return value === undefined || value === null
        ? undefined
        : createJsonMessage(value, `${path}.${name}`);
    },
    messages: (_no, name) =>
      list(name).map((item, i) => createJsonMessage(item, `${path}.${name}[${i}]`)),
    fixed64List: (_no, name) =>
      list(name).map((item, i) => toBigInt(`${path}.${name}[${i}]`, item)),
    doubleList: (_no, name) => list(name).map((item, i) => toDouble(`${path}.${name}[${i}]`, item)),
  };
}
