import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
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
});
