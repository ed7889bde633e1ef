import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const DIST = resolve(import.meta.dirname, '../dist');

/*
 * The production build (made by the global setup, as the image makes it): V8 keeps each module's
 * source in memory, as one byte per character unless one character needs more, when the whole
 * chunk takes two. A `’` in a comment of a dependency doubled the api's largest chunk.
 */
describe('the production build', () => {
  it('is ASCII in every chunk, so V8 holds each source at one byte per character', async () => {
    const chunks = (await readdir(DIST, { recursive: true })).filter((file) =>
      file.endsWith('.js'),
    );
    expect(chunks.length).toBeGreaterThan(5);
    const wide: string[] = [];
    for (const chunk of chunks) {
      const source = await readFile(join(DIST, chunk), 'utf8');
      const at = source.search(/[\u0080-\uffff]/);
      if (at !== -1) wide.push(`${chunk}: ${JSON.stringify(source.slice(at - 20, at + 20))}`);
    }
    expect(wide).toEqual([]);
  });

  it('starts the backend without zod: only the api loads a schema library', async () => {
    const files = await readdir(DIST);
    const startChunk = (role: string) => {
      const name = files.find((file) => file.startsWith(`start-${role}-`) && file.endsWith('.js'));
      if (!name) throw new Error(`no start-${role} chunk in dist/`);
      return join(DIST, name);
    };
    const main = join(DIST, 'entry/main.js');
    const backend = await loadedAtStart([main, startChunk('backend')]);
    const api = await loadedAtStart([main, startChunk('api')]);
    const withZod = async (chunks: string[]) => {
      const sources = await Promise.all(chunks.map((chunk) => readFile(chunk, 'utf8')));
      return chunks.filter((_, index) => sources[index]?.includes('node_modules/zod/'));
    };
    expect(await withZod(backend)).toEqual([]);
    expect(await withZod(api)).not.toEqual([]);
  });
});

/** The chunks `entries` import statically, transitively: what a role evaluates as it starts. */
async function loadedAtStart(entries: string[]): Promise<string[]> {
  const seen = new Set<string>();
  const pending = [...entries];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (seen.has(file)) continue;
    seen.add(file);
    const source = await readFile(file, 'utf8');
    for (const [, specifier] of source.matchAll(
      /^(?:import|export)\b[^;]*?\bfrom\s*"(\.[^"]+)"/gms,
    )) {
      pending.push(resolve(dirname(file), String(specifier)));
    }
    for (const [, specifier] of source.matchAll(/^import\s*"(\.[^"]+)"/gm)) {
      pending.push(resolve(dirname(file), String(specifier)));
    }
  }
  return [...seen];
}
