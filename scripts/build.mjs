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
 * over 1 MiB of RSS for the api's largest chunk (docs/benchmarks.md, "Memory"). With `charset:
 * 'ascii'` every such character left is in a comment, so it becomes `?`, one UTF-16 unit for
 * one, which keeps the source maps' columns.
 */
for (const file of await readdir('dist', { recursive: true })) {
  if (!file.endsWith('.js')) continue;
  const path = join('dist', file);
  const source = await readFile(path, 'utf8');
  const ascii = source.replace(/[\u0080-\uffff]/g, '?');
  if (ascii !== source) await writeFile(path, ascii);
}
