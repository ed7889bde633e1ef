/** The one rule for a name, shared by the REST schema and the RPC handler. */
export const NAME_MAX_CHARACTERS = 256;

export type NameCheck = { ok: true; name: string } | { ok: false; problem: string };

export function checkName(raw: string): NameCheck {
  const name = raw.trim();
  if (name.length === 0)
    return {
      ok: false,
      problem: `name is required (1-${NAME_MAX_CHARACTERS} characters after trimming)`,
    };
  // Characters are code points: an emoji or a CJK extension character counts once.
  let characters = 0;
  for (const _ of name) characters++;
  if (characters > NAME_MAX_CHARACTERS) {
    return {
      ok: false,
      problem: `name must be at most ${NAME_MAX_CHARACTERS} characters after trimming (got ${characters})`,
    };
  }
  if (/\p{Cc}/u.test(name))
    return { ok: false, problem: 'name must not contain control characters' };
  return { ok: true, name };
}

export function greetingFor(name: string): string {
  return `Hello ${name}!!`;
}
