import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postGreet } from './helpers/http.js';
import { type RoleProcess, startRoles } from './helpers/roles.js';

/*
 * POST /greet against its contract, with generated bodies, on one real api + backend pair:
 * 200 with `Hello <trimmed name>!!` exactly when the body is an object holding a valid name and
 * an optional boolean withError=false and nothing else; 500 when withError is true (on purpose);
 * otherwise 400. Never a 500 for invalid input, never a crash.
 */

const NAME_MAX_CHARACTERS = 256;

type Expected = { status: 200; reply: string } | { status: 400 | 500 };

/** The contract, written independently of the route's schema. */
function expectedFor(body: unknown): Expected {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { status: 400 };
  const fields = body as Record<string, unknown>;
  if (Object.keys(fields).some((key) => key !== 'name' && key !== 'withError')) {
    return { status: 400 };
  }
  const { name, withError } = fields;
  if (typeof name !== 'string' || !isValidName(name)) return { status: 400 };
  if (withError !== undefined && typeof withError !== 'boolean') return { status: 400 };
  return withError ? { status: 500 } : { status: 200, reply: `Hello ${name.trim()}!!` };
}

/** 1-256 code points after trimming, no control characters, well-formed UTF-16. */
function isValidName(name: string): boolean {
  const trimmed = name.trim();
  return (
    name.isWellFormed() &&
    trimmed.length > 0 &&
    [...trimmed].length <= NAME_MAX_CHARACTERS &&
    !/\p{Cc}/u.test(trimmed)
  );
}

/** Characters that sit on the rules' edges: whitespace, controls, surrogates, RTL, astral. */
const edgyCharacter = fc.constantFrom(
  ' ',
  '\t',
  '\n',
  '\r',
  '\u00a0',
  '\u2028',
  '\u3000',
  '\ufeff',
  '\u0000',
  '\u0007',
  '\u001b',
  '\u007f',
  '\u0085',
  '\u200b',
  '\u200f',
  '\u202e',
  '\ud800',
  '\udfff',
  'é',
  'e\u0301',
  'ש',
  'ع',
  '😀',
  '👩‍👧',
  '𠀀',
);

const name = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .array(fc.oneof(edgyCharacter, fc.string({ unit: 'binary', maxLength: 4 })), {
        maxLength: 12,
      })
      .map((parts) => parts.join('')),
  },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }) },
  {
    // Around the length limit, in characters of one, two and (as emoji) two UTF-16 units.
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.integer({ min: NAME_MAX_CHARACTERS - 4, max: NAME_MAX_CHARACTERS + 4 }),
        fc.constantFrom('x', '😀', '𠀀', 'ש'),
        fc.constantFrom('', ' ', ' \n\t'),
      )
      .map(([count, character, padding]) => `${padding}${character.repeat(count)}${padding}`),
  },
);

const withError = fc.oneof(
  { weight: 6, arbitrary: fc.constant(false) },
  { weight: 1, arbitrary: fc.constant(true) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 1 }) },
);

/** Objects shaped like a request: each key optional, values right or wrong. */
const requestLike = fc.record(
  {
    name: fc.oneof({ weight: 5, arbitrary: name }, { weight: 1, arbitrary: fc.jsonValue() }),
    withError,
  },
  { requiredKeys: [] },
);

const body = fc.oneof(
  { weight: 4, arbitrary: requestLike },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        requestLike,
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), {
          minKeys: 1,
          maxKeys: 3,
        }),
      )
      .map(([fields, extra]) => ({ ...extra, ...fields })),
  },
  { weight: 1, arbitrary: fc.jsonValue() },
);

/** JSON text of a request-like body, then damaged: a character dropped, added or cut off. */
const damagedJson = fc
  .tuple(
    body.map((value) => JSON.stringify(value)),
    fc.nat(),
    fc.constantFrom('drop', 'insert', 'truncate'),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 2 }),
  )
  .map(([text, at, how, inserted]) => {
    const i = at % (text.length + 1);
    if (how === 'drop') return text.slice(0, i) + text.slice(i + 1);
    if (how === 'insert') return text.slice(0, i) + inserted + text.slice(i);
    return text.slice(0, i);
  });

describe('POST /greet over generated bodies (fast-check)', () => {
  let backend: RoleProcess;
  let api: RoleProcess;

  beforeAll(async () => {
    ({ backend, api } = await startRoles());
  });
  afterAll(async () => {
    await Promise.all([api?.stop(), backend?.stop()]);
  });

  async function post(text: string): Promise<{ status: number; type: string; json: unknown }> {
    const response = await postGreet(api.url, text);
    return {
      status: response.status,
      type: response.headers.get('content-type') ?? '',
      json: await response.json(),
    };
  }

  function expectAnswer(answer: Awaited<ReturnType<typeof post>>, expected: Expected): void {
    expect(answer.status, JSON.stringify(answer.json)).toBe(expected.status);
    if (expected.status === 200) {
      expect(answer.json).toEqual({ reply: expected.reply });
      return;
    }
    expect(answer.type).toMatch(/^application\/problem\+json/);
    expect(answer.json).toMatchObject({ type: 'about:blank', status: expected.status });
    if (expected.status === 500) expect(answer.json).toMatchObject({ code: 'internal' });
  }

  it('answers every generated JSON body as the contract says', async () => {
    await fc.assert(
      fc.asyncProperty(body, async (value) => {
        expectAnswer(await post(JSON.stringify(value)), expectedFor(value));
      }),
      { numRuns: 200 },
    );
  }, 60_000);

  it('answers damaged JSON text with 400, or as the contract says when it still parses', async () => {
    await fc.assert(
      fc.asyncProperty(damagedJson, async (damaged) => {
        // What goes on the wire: UTF-8 has no lone surrogates (a cut emoji becomes U+FFFD).
        const text = damaged.toWellFormed();
        // RFC 8259 lets a parser ignore a leading byte order mark; Fastify's does.
        const json = text.startsWith('\ufeff') ? text.slice(1) : text;
        let expected: Expected = { status: 400 };
        try {
          expected = expectedFor(JSON.parse(json));
        } catch {}
        expectAnswer(await post(text), expected);
      }),
      { numRuns: 200 },
    );
  }, 60_000);

  it('still runs, with nothing on stderr', () => {
    for (const role of [api, backend]) {
      expect(role.child.exitCode).toBeNull();
      expect(role.stderr()).toBe('');
    }
  });
});
