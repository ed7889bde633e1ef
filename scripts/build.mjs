// Production build: one bundled ESM entry (fast cold start), code-split so exporters and
// detectors that are not configured are never loaded.
import { rm } from 'node:fs/promises';
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
  external: bundleExternals,
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
