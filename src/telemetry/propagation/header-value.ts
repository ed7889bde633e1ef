/** The first value of a header as carriers return it (string, string[] or anything else). */
export function firstHeaderValue(value: unknown): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  return typeof first === 'string' ? first : undefined;
}

/** A list-valued header (such as tracestate) sent as several lines, joined with commas. */
export function joinedHeaderValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (!Array.isArray(value)) return undefined;
  return value.filter((item) => typeof item === 'string').join(',');
}
