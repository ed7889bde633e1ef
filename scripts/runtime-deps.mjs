// Copies what the production bundle loads from node_modules at run time out of an installed tree
// into a new one: the packages scripts/build.mjs keeps external (scripts/bundle-externals.mjs) and
// everything they depend on, found the way Node resolves them (nested node_modules first), each
// at the version package-lock.json pins. Everything else is bundled in dist/: the image ships this
// tree instead of every production dependency. Node built-ins only: it runs in the image build.
// Usage: node scripts/runtime-deps.mjs <dir with package-lock.json and node_modules from
//        `npm ci --omit=dev`> <output dir, which gets node_modules/>
import { existsSync } from 'node:fs';
import { cp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleExternals } from './bundle-externals.mjs';

const [from, to] = process.argv.slice(2);
if (!from || !to) {
  fail('usage: node scripts/runtime-deps.mjs <installed dir> <output dir>');
}

const lockFile = join(from, 'package-lock.json');
const { packages } = await readJson(lockFile).catch((error) =>
  fail(`cannot read ${lockFile} (${error.message}): pass the folder npm ci ran in.`),
);
if (!packages) fail(`${lockFile} has no "packages": regenerate it with npm 7 or later.`);

const locations = closure();
await rm(join(to, 'node_modules'), { recursive: true, force: true });
for (const location of [...locations].sort()) {
  const source = join(from, location);
  const { version } = await readJson(join(source, 'package.json')).catch(() =>
    fail(`${location} is not installed in ${from}: run \`npm ci --omit=dev\` there first.`),
  );
  if (version !== packages[location].version) {
    fail(
      `${location} is installed at ${version}, package-lock.json pins ${packages[location].version}: install with \`npm ci\`.`,
    );
  }
  // A nested node_modules is copied only as far as the closure reaches into it.
  const nested = join(source, 'node_modules');
  await cp(source, join(to, location), {
    recursive: true,
    filter: (path) => path !== nested,
  });
}
process.stdout.write(
  `runtime-deps: ${locations.size} packages for ${bundleExternals.join(', ')} in ${join(to, 'node_modules')}\n`,
);

/** Lock locations of the externals and of everything they need, transitively. */
function closure() {
  const found = new Set();
  const pending = bundleExternals.map((name) => {
    const location = `node_modules/${name}`;
    if (!packages[location]) {
      fail(
        `${name} is kept out of the bundle (scripts/bundle-externals.mjs) but is not in package-lock.json: add it with \`npm install -E ${name}\`, or remove it from that list.`,
      );
    }
    return location;
  });
  for (let location = pending.pop(); location; location = pending.pop()) {
    if (found.has(location)) continue;
    found.add(location);
    const entry = packages[location];
    const optionalPeers = Object.entries(entry.peerDependenciesMeta ?? {})
      .filter(([, meta]) => meta.optional)
      .map(([name]) => name);
    const required = [
      ...Object.keys(entry.dependencies ?? {}),
      ...Object.keys(entry.peerDependencies ?? {}).filter((name) => !optionalPeers.includes(name)),
    ];
    for (const name of required) {
      const resolved = resolve(location, name);
      if (!resolved) {
        fail(
          `${location} depends on ${name}, which package-lock.json does not hold: run npm install.`,
        );
      }
      pending.push(resolved);
    }
    // Optional dependencies npm left out (another platform's binaries) are not on disk.
    for (const name of Object.keys(entry.optionalDependencies ?? {})) {
      const resolved = resolve(location, name);
      if (resolved && existsSync(join(from, resolved, 'package.json'))) pending.push(resolved);
    }
  }
  return found;
}

/** Where Node finds `name` when `location` requires it: its own node_modules, then each parent's. */
function resolve(location, name) {
  for (let base = location; base; base = parentOf(base)) {
    const candidate = `${base}/node_modules/${name}`;
    if (packages[candidate]) return candidate;
  }
  return packages[`node_modules/${name}`] ? `node_modules/${name}` : undefined;
}

/** `node_modules/a` for `node_modules/a/node_modules/b`; '' for a top-level package. */
function parentOf(location) {
  const at = location.lastIndexOf('/node_modules/');
  return at === -1 ? '' : location.slice(0, at);
}

async function readJson(path) {
  return JSON.parse(await readFile(path, 'utf8'));
}

function fail(message) {
  console.error(`runtime-deps: ${message}`);
  process.exit(1);
}
