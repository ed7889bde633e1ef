// Production build: one bundled ESM entry (fast cold start), code-split so exporters and
// detectors that are not configured are never loaded.
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { bundleExternals } from './bundle-externals.mjs';

await rm('dist', { recursive: true, force: true });
await build({
  entryPoints: { 'entry/main': 'src/entry/main.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  sourcemap: 'linked',
  minifySyntax: true,
  legalComments: 'none',
  // Strings, templates, regular expressions and names come out escaped to ASCII; see below.
  charset: 'ascii',
  external: bundleExternals,
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  logLevel: 'warning',
});

/**
 * ...but comments keep their characters, and one character above U+00FF (a `’` in a
 * dependency's comment) makes V8 hold that whole chunk's source as UTF-16, at twice the memory:
 * over 1 MiB of RSS for the api's largest chunk (docs/benchmarks.md, "Memory"). In the lines
 * that are comments (esbuild puts each on lines of its own), such characters become `?`, one
 * UTF-16 unit for one, which keeps the source maps' columns. One left elsewhere (a regular
 * expression or a `String.raw` template esbuild leaves as written) is kept, and named here:
 * write it as an escape (`\u00e9`) in the source.
 */
const WIDE = /[\u0080-\uffff]/g;
const wideOutsideComments = [];
for (const file of await readdir('dist', { recursive: true })) {
  if (!file.endsWith('.js')) continue;
  const path = join('dist', file);
  const lines = (await readFile(path, 'utf8')).split('\n');
  let changed = false;
  let inBlock = false;
  for (const [index, line] of lines.entries()) {
    const text = line.trimStart();
    const opens = !inBlock && text.startsWith('/*');
    const isComment = inBlock || opens || text.startsWith('//');
    if (opens || inBlock) inBlock = !line.includes('*/', opens ? line.indexOf('/*') + 2 : 0);
    if (!WIDE.test(line)) continue;
    WIDE.lastIndex = 0;
    if (isComment) {
      lines[index] = line.replace(WIDE, '?');
      changed = true;
    } else {
      wideOutsideComments.push(`${path}:${index + 1}`);
    }
  }
  if (changed) await writeFile(path, lines.join('\n'));
}
if (wideOutsideComments.length > 0) {
  console.warn(
    `build: characters beyond ASCII outside comments keep these chunks at two bytes per character (write them as escapes): ${wideOutsideComments.join(', ')}`,
  );
}
