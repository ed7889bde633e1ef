import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/*
 * The code blocks of a README section, and how test/readme-walkthrough.test.ts applies them.
 *
 * A block whose first line is a path comment (`// src/routes/farewell.ts`) goes to that file. A
 * block without `…` is the whole file. A block with `…` is an edit, read as a reader reads it:
 * what it shows is added, or replaces what has the same name in the file (an import of the same
 * module, a declaration, a member, an `rpc`); what it leaves out or elides (a `// …` line, a
 * member whose body is `…`) stays as it is. A new line goes after the one the block shows before
 * it, or, after a `// …`, before the next one it shows (at the end if none).
 */

export const ELLIPSIS = '\u2026';

export type Block = { lang: string; path: string | undefined; code: string };

/** The text of `## heading`, up to the next second-level heading. */
export function section(readme: string, heading: string): string {
  const start = readme.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** Its fenced code blocks, unindented (those in a numbered list are indented). */
export function blocks(text: string): Block[] {
  const found: Block[] = [];
  for (const match of text.matchAll(/^( *)```(\w*)\n([\s\S]*?)\n\1```[ \t]*$/gm)) {
    const [, indent = '', lang = '', body = ''] = match;
    const lines = body.split('\n').map((line) => line.slice(indent.length));
    const path = /^(?:\/\/|#) ([\w./-]+\.\w+)$/.exec(lines[0] ?? '')?.[1];
    found.push({ lang, path, code: `${lines.slice(path ? 1 : 0).join('\n')}\n` });
  }
  return found;
}

type Item = { header: string; children?: Item[]; closing?: string };

/** Bracket depth after each line, outside strings, templates and comments. */
function depths(lines: string[]): number[] {
  const result: number[] = [];
  const templates: number[] = [];
  let depth = 0;
  let mode: 'code' | 'line' | 'block' | "'" | '"' | '`' = 'code';
  for (const line of lines) {
    for (let i = 0; i < line.length && mode !== 'line'; i++) {
      const c = line[i] ?? '';
      const pair = line.slice(i, i + 2);
      if (mode === 'block') {
        if (pair === '*/') {
          mode = 'code';
          i++;
        }
      } else if (mode !== 'code') {
        // In a string or a template.
        if (c === '\\') i++;
        else if (c === mode) mode = 'code';
        else if (mode === '`' && pair === '${') {
          templates.push(depth);
          mode = 'code';
          i++;
        }
      } else if (pair === '//') mode = 'line';
      else if (pair === '/*') {
        mode = 'block';
        i++;
      } else if (c === "'" || c === '"' || c === '`') mode = c;
      else if ('{(['.includes(c)) depth++;
      else if (c === '}' && templates.at(-1) === depth) {
        templates.pop();
        mode = '`';
      } else if ('})]'.includes(c)) depth--;
    }
    if (mode === 'line') mode = 'code';
    result.push(depth);
  }
  return result;
}

/** Lines as items: a line, or a line that opens brackets with the lines up to their closing. */
function items(lines: string[]): Item[] {
  const after = depths(lines);
  const parse = (from: number, to: number): Item[] => {
    const parsed: Item[] = [];
    for (let i = from; i < to; i++) {
      const before = i === 0 ? 0 : (after[i - 1] ?? 0);
      const header = lines[i] ?? '';
      if ((after[i] ?? 0) <= before) {
        parsed.push({ header });
        continue;
      }
      let end = i + 1;
      while (end < to && (after[end] ?? 0) > before) end++;
      if (end >= to) throw new Error(`unbalanced brackets after: ${header}`);
      parsed.push({ header, children: parse(i + 1, end), closing: lines[end] ?? '' });
      i = end;
    }
    return parsed;
  };
  return parse(0, lines.length);
}

function render(list: Item[]): string[] {
  return list.flatMap((item) => [
    item.header,
    ...render(item.children ?? []),
    ...(item.closing === undefined ? [] : [item.closing]),
  ]);
}

const textOf = (item: Item) => render([item]).join('\n');
const isElision = (item: Item) => /^(\/\/|#) *\u2026$/.test(item.header.trim());

/** What a block item replaces in the file: the same import, declaration, member or `rpc`. */
function keyOf(item: Item): string | undefined {
  const line = item.header.trim();
  if (!line) return undefined;
  if (/^import\b/.test(line)) {
    const from = /from\s+(['"])(.+?)\1/.exec(textOf(item))?.[2];
    return `import ${/^import type\b/.test(line) ? 'type ' : ''}${from ?? line}`;
  }
  if (/^(\/\/|\/\*|\*)/.test(line)) return `comment ${line}`;
  return /^[^=({:;<[]*/.exec(line)?.[0].trim() || `line ${line}`;
}

/** `block` applied to `file`: both item lists at one level (see the comment at the top). */
function merge(file: Item[], block: Item[]): Item[] {
  const result = [...file];
  const matched = new Set<Item>();
  let anchor: Item | undefined;
  let elided = false;
  let blank = false;
  let pending: Item[] = [];
  for (const item of block) {
    if (!item.header.trim() && !item.children) {
      blank = true;
      continue;
    }
    if (isElision(item)) {
      elided = true;
      continue;
    }
    const key = keyOf(item);
    const found = file.find((old) => !matched.has(old) && keyOf(old) === key);
    if (found) {
      matched.add(found);
      let merged: Item;
      if (!item.children) merged = textOf(item).includes(ELLIPSIS) ? found : item;
      else if (found.children) merged = { ...item, children: merge(found.children, item.children) };
      else merged = item;
      result.splice(result.indexOf(found), 1, ...pending, merged);
      pending = [];
      anchor = merged;
      elided = false;
    } else {
      const added = blank ? [{ header: '' }, item] : [item];
      if (anchor && !elided) {
        result.splice(result.indexOf(anchor) + 1, 0, ...added);
        anchor = item;
      } else pending.push(...added);
    }
    blank = false;
  }
  result.push(...pending);
  return result;
}

export async function applyBlock(root: string, block: Block): Promise<void> {
  if (!block.path) throw new Error(`a README block has no path comment:\n${block.code}`);
  const target = join(root, block.path);
  await mkdir(dirname(target), { recursive: true });
  if (!block.code.includes(ELLIPSIS)) {
    await writeFile(target, block.code);
    return;
  }
  const old = (await readFile(target, 'utf8')).replace(/\n$/, '').split('\n');
  const edit = block.code.replace(/\n$/, '').split('\n');
  await writeFile(target, `${render(merge(items(old), items(edit))).join('\n')}\n`);
}

/** The sh block's commands (continued lines joined), each with the `# ` lines after it. */
export function commands(code: string): { command: string; expected: string[] }[] {
  const found: { command: string; expected: string[] }[] = [];
  for (const line of code.replace(/\\\n\s*/g, '').split('\n')) {
    if (line.startsWith('# ')) found.at(-1)?.expected.push(line.slice(2));
    else if (line.trim()) found.push({ command: line, expected: [] });
  }
  return found;
}
