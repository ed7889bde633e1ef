/*
 * Readers for environment variables: each takes a variable's text and returns its value, or
 * throws InvalidValue saying what the value must be. parseConfig adds the variable's name and
 * what it got. Plain functions rather than a schema library: the backend then loads none at
 * start (docs/benchmarks.md, "Cold start").
 */

/** What is wrong with one variable's value, in words for the person who set it. */
export class InvalidValue extends Error {
  override name = 'InvalidValue';
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.join('; '));
    this.problems = problems;
  }
}

/** Reads a variable that is set and not empty. */
export type Reader<T> = (text: string) => T;
/** Reads a variable, set or not: `undefined` when it is unset or empty. */
export type Field<T> = (text: string | undefined) => T;

export function required<T>(read: Reader<T>, problemWhenUnset: string): Field<T> {
  return (text) => {
    if (text === undefined) throw new InvalidValue([problemWhenUnset]);
    return read(text);
  };
}

export function optional<T>(read: Reader<T>): Field<T | undefined> {
  return (text) => (text === undefined ? undefined : read(text));
}

export function withDefault<T>(read: Reader<T>, fallback: NoInfer<T>): Field<T> {
  return (text) => (text === undefined ? fallback : read(text));
}

export const text: Reader<string> = (value) => value;

export const mustBeOneOf = (values: readonly string[]) => `must be one of: ${values.join(', ')}`;

export function oneOf<const T extends readonly string[]>(values: T): Reader<T[number]> {
  const problem = mustBeOneOf(values);
  return (value) => {
    if (!values.includes(value)) throw new InvalidValue([problem]);
    return value;
  };
}

/** Case-insensitive, as log levels usually are in environment variables. */
export function lowerCase<T>(read: Reader<T>): Reader<T> {
  return (value) => read(value.toLowerCase());
}

const FLAGS: Readonly<Record<string, boolean>> = { true: true, false: false, 1: true, 0: false };

export const flag: Reader<boolean> = (value) => {
  const set = FLAGS[value];
  if (set === undefined) throw new InvalidValue(['must be true or false']);
  return set;
};

type Bound = readonly [limit: number, problem: string];

/**
 * A whole number written in decimal digits: `Number()` would also take `0x1f`, `5e3` or `1_0`,
 * which no one means in an environment variable.
 */
export function wholeNumber(
  problem: string,
  bounds: { min?: Bound; max?: Bound } = {},
): Reader<number> {
  return (value) => {
    const digits = value.trim();
    if (!/^\d{1,16}$/.test(digits)) throw new InvalidValue([problem]);
    const number = Number(digits);
    const { min, max } = bounds;
    if (min && number < min[0]) throw new InvalidValue([min[1]]);
    if (max && number > max[0]) throw new InvalidValue([max[1]]);
    return number;
  };
}

export const milliseconds = (max: number) =>
  wholeNumber('must be a whole number of milliseconds', {
    min: [1, 'must be at least 1 ms'],
    max: [max, `must be at most ${max} ms`],
  });

/** 0 turns the check off. */
export const millisecondsOrOff = (max: number) =>
  wholeNumber('must be a whole number of milliseconds (0 turns it off)', {
    max: [max, `must be at most ${max} ms`],
  });

/**
 * A URL, trimmed. `http(s)` only when `httpOnly`, and then written with `://`: the URL parser
 * would take `http:example.com` as `http://example.com/`.
 */
export function url(problem: string, { httpOnly }: { httpOnly: boolean }): Reader<string> {
  return (value) => {
    const trimmed = value.trim();
    const parsed = URL.parse(trimmed);
    if (!parsed || (httpOnly && !/^https?:\/\//i.test(trimmed))) {
      throw new InvalidValue([problem]);
    }
    // The parser drops tabs and line breaks; so does the value, so that both name one host.
    return trimmed.replace(/[\t\n\r]/g, '');
  };
}

/** A service's base URL: scheme, host and port only, so that nothing in it is silently dropped. */
export function serviceUrl(problem: string, notBaseProblem: string): Reader<URL> {
  const readUrl = url(problem, { httpOnly: true });
  return (value) => {
    const parsed = new URL(readUrl(value));
    const { pathname, search, hash, username, password } = parsed;
    if (pathname !== '/' || search || hash || username || password) {
      throw new InvalidValue([notBaseProblem]);
    }
    return parsed;
  };
}

/** Comma-separated, each item trimmed, empty items dropped. */
export const list: Reader<string[]> = (value) =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
