import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { fileURLToPath } from 'node:url';

/*
 * Self time per function and per package from a V8 `.cpuprofile` (`node --cpu-prof`). Frames in
 * the esbuild bundle are mapped back through its linked source map, so a function is named by
 * its original file and a package by its node_modules folder.
 */

type CallFrame = { functionName: string; url: string; lineNumber: number; columnNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame; children?: number[] };
type CpuProfile = {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
};

export type SelfTime = { name: string; where: string; ms: number; share: number };

export type ProfileSummary = {
  totalMs: number;
  /** Share of samples in which V8 was idle (waiting on I/O). */
  idleShare: number;
  functions: SelfTime[];
  packages: SelfTime[];
};

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function createSourceMapper(): (frame: CallFrame) => { file: string; line: number } | undefined {
  const maps = new Map<string, SourceMap | undefined>();
  const load = (url: string) => {
    if (maps.has(url)) return maps.get(url);
    let map: SourceMap | undefined;
    try {
      const path = fileURLToPath(url);
      const source = readFileSync(path, 'utf8');
      const link = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(source)?.[1];
      if (link && !link.startsWith('data:')) {
        map = new SourceMap(JSON.parse(readFileSync(fileURLToPath(new URL(link, url)), 'utf8')));
      }
    } catch {
      map = undefined;
    }
    maps.set(url, map);
    return map;
  };
  return (frame) => {
    if (!frame.url.startsWith('file:')) return undefined;
    const entry = load(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber);
    if (!entry || !('originalSource' in entry) || !entry.originalSource) return undefined;
    return { file: entry.originalSource, line: entry.originalLine + 1 };
  };
}

/** `node_modules/@scope/name` or `node_modules/name`, `src/...` folders, or `node:internal`. */
function packageOf(file: string): string {
  const modules = file.lastIndexOf('node_modules/');
  if (modules >= 0) {
    const [first, second] = file.slice(modules + 'node_modules/'.length).split('/');
    return first?.startsWith('@') ? `${first}/${second}` : (first ?? file);
  }
  if (file.startsWith('node:')) return 'node (built-in modules)';
  const src = file.indexOf('src/');
  if (src >= 0) return `our code: ${file.slice(src).split('/').slice(0, 2).join('/')}`;
  if (file.includes('/bench/')) return 'bench';
  return file;
}

function shortFile(file: string): string {
  const modules = file.lastIndexOf('node_modules/');
  if (modules >= 0) return file.slice(modules + 'node_modules/'.length);
  const src = file.indexOf('src/');
  return src >= 0 ? file.slice(src) : file;
}

/** `skipMs`: ignore the samples of the first milliseconds (start-up and warm-up). */
export function summarizeCpuProfile(
  path: string,
  options: { top?: number; skipMs?: number } = {},
): ProfileSummary {
  const { top = 25, skipMs = 0 } = options;
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  let elapsedUs = 0;
  profile.samples.forEach((id, index) => {
    const delta = profile.timeDeltas[index] ?? 0;
    elapsedUs += delta;
    if (elapsedUs < skipMs * 1000) return;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  });
  const mapFrame = createSourceMapper();
  const functions = new Map<string, { name: string; where: string; us: number }>();
  const packages = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    totalUs += us;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    let name = frame.functionName || '(anonymous)';
    let where: string;
    let pkg: string;
    if (SPECIAL.has(frame.functionName)) {
      where = 'V8';
      pkg = frame.functionName;
    } else if (frame.url === '') {
      where = 'native';
      pkg = 'native (V8 builtins, C++)';
    } else {
      const original = mapFrame(frame);
      const file = original?.file ?? frame.url.replace(/^file:\/\//, '');
      where = `${shortFile(file)}:${original?.line ?? frame.lineNumber + 1}`;
      pkg = file.startsWith('node:') ? 'node (built-in modules)' : packageOf(file);
      if (name === '(anonymous)' && original) name = `(anonymous in ${shortFile(file)})`;
    }
    const key = `${name} ${where}`;
    const entry = functions.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    functions.set(key, entry);
    packages.set(pkg, (packages.get(pkg) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const rank = (entries: { name: string; where: string; us: number }[]) =>
    entries
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map(({ name, where, us }) => ({
        name,
        where,
        ms: us / 1000,
        share: busyUs > 0 ? us / busyUs : 0,
      }));
  return {
    totalMs: totalUs / 1000,
    idleShare: totalUs > 0 ? idleUs / totalUs : 0,
    functions: rank([...functions.values()]),
    packages: rank([...packages].map(([name, us]) => ({ name, where: '', us }))),
  };
}
