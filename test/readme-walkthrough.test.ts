import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver } from '../tools/otlp-receiver/index.ts';
import {
  applyBlock,
  type Block,
  blocks,
  commands,
  ELLIPSIS,
  section,
} from './helpers/readme-blocks.js';
import { type RoleProcess, startRole } from './helpers/roles.js';

/*
 * The README's "Add a REST route" and "Add an RPC", done as written in a copy of the repository:
 * its code blocks are taken from README.md itself, so that an edit of the README is tested too.
 *
 * Each block goes where its first line says (test/helpers/readme-blocks.ts: a block with `…` is
 * an edit of that file, one without is the whole file). Then what the README says to run:
 * `npm run generate`, Biome, `buf format`, `npm run lint`, `npm run typecheck`,
 * `npm run lint:breaking`, the README's own test file with `npx vitest run`, and the calls of
 * step 7 against the copy's roles. A failed step keeps the copy and says where.
 */

const REPO = resolve(import.meta.dirname, '..');

type Result = { code: number | null; output: string };

// --- Running commands in the copy ---------------------------------------------------------

/**
 * What would steer an npm, Vitest or git run started from here: npm's variables, those Vitest
 * and Vite set in their workers, and git's (set when this runs from a hook).
 */
const STEERING =
  /^(npm_|VITEST|GIT_|(TEST|NODE_ENV|MODE|BASE_URL|DEV|PROD|SSR|FORCE_TTY|FORCE_COLOR|COLOR|NODE_OPTIONS|INIT_CWD)$)/;

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [key, value] of Object.entries(process.env)) {
    if (!STEERING.test(key)) env[key] = value;
  }
  return env;
}

function run(cwd: string, command: string, args: string[], timeout = 60_000): Promise<Result> {
  return new Promise((done) => {
    execFile(
      command,
      args,
      { cwd, env: childEnv(), timeout, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        done({ code, output: `${stdout}${stderr}` });
      },
    );
  });
}

/** Runs `line` in the copy (through bash, as typed) and expects it to succeed. */
async function succeeds(cwd: string, line: string, timeout?: number): Promise<string> {
  const { code, output } = await run(cwd, 'bash', ['-euo', 'pipefail', '-c', line], timeout);
  expect(code, `\`${line}\` failed (exit ${code}) in ${cwd}:\n${output}`).toBe(0);
  return output;
}

// ------------------------------------------------------------------------------------------

describe("the README's Add a REST route and Add an RPC, done as written in a copy", () => {
  let root: string;
  let rest: { text: string; blocks: Block[] };
  let rpc: { text: string; blocks: Block[] };
  let failed = false;
  let keep = false;

  /**
   * A step, skipped when a step it builds on failed (it would only repeat that failure). The
   * later steps build on the copy the first two leave, not on each other.
   */
  function step(name: string, body: () => Promise<void>, timeout = 60_000, builtOn = true): void {
    it(
      name,
      async (context) => {
        if (failed) context.skip();
        try {
          await body();
        } catch (error) {
          keep = true;
          if (builtOn) failed = true;
          throw error;
        }
      },
      timeout,
    );
  }

  /** The whole TypeScript files as written are as Biome sorts and formats them. */
  const wholeFilesPassBiome = async (written: Block[]) => {
    const whole = written.filter((b) => b.lang === 'ts' && !b.code.includes(ELLIPSIS));
    if (whole.length) await succeeds(root, `npx biome check ${whole.map((b) => b.path).join(' ')}`);
  };

  const mentions = (text: string, command: string) =>
    expect(text, `the README no longer says \`${command}\`: update this test`).toContain(
      `\`${command}\``,
    );

  beforeAll(async () => {
    const readme = await readFile(join(REPO, 'README.md'), 'utf8');
    const parts = (heading: string) => {
      const text = section(readme, heading);
      return { text, blocks: blocks(text) };
    };
    rest = parts('Add a REST route');
    rpc = parts('Add an RPC');

    // The tracked files as they are now (README.md included), and the repository's node_modules.
    root = await mkdtemp(join(tmpdir(), 'readme-walkthrough-'));
    const listed = await run(REPO, 'git', ['ls-files', '-z']);
    expect(listed.code, listed.output).toBe(0);
    for (const file of listed.output.split('\0')) {
      if (file && existsSync(join(REPO, file))) await cp(join(REPO, file), join(root, file));
    }
    // A repository whose main is the unchanged copy: `npm run lint:breaking` compares with it,
    // and Biome reads .gitignore through it.
    const git = 'git -c user.name=test -c user.email=test@example.com -c commit.gpgsign=false';
    await succeeds(
      root,
      `git init -q && git symbolic-ref HEAD refs/heads/main && git add -A && ${git} commit -q --no-verify -m base`,
    );
    // After the commit: .gitignore's `node_modules/` does not match a symbolic link.
    await symlink(join(REPO, 'node_modules'), join(root, 'node_modules'), 'dir');
  });

  afterAll(async () => {
    if (!root) return;
    if (keep) console.error(`README walkthrough: the copy is kept in ${root}`);
    else await rm(root, { recursive: true, force: true });
  });

  step('Add a REST route: the blocks go in, lint and type-check', async () => {
    expect(rest.blocks.length).toBeGreaterThan(0);
    for (const block of rest.blocks) await applyBlock(root, block);
    // "Imports go in the order Biome sorts them, as above": a whole file passes as written.
    await wholeFilesPassBiome(rest.blocks);
    mentions(rest.text, 'npx biome check --write .');
    await succeeds(root, 'npx biome check --write .');
    await succeeds(root, 'npm run lint');
    await succeeds(root, 'npm run typecheck');
  });

  let recipes: Block[];
  let testFile: string;

  step('Add an RPC, steps 1 to 7: the blocks go in, generate, lint and type-check', async () => {
    // Every block but the shell commands names its file; those after step 8's test file are
    // recipes, applied once the walkthrough has been checked.
    const code = rpc.blocks.filter((b) => b.lang !== 'sh');
    const test = code.findIndex((b) => b.path?.startsWith('test/'));
    expect(test, 'no test/ block in "Add an RPC"').toBeGreaterThan(0);
    expect(code.some((b) => b.path?.startsWith('proto/'))).toBe(true);
    testFile = code[test]?.path ?? '';
    recipes = code.slice(test + 1);
    const steps = code.slice(0, test + 1);
    for (const block of steps) await applyBlock(root, block);
    await wholeFilesPassBiome(steps);
    for (const command of [
      'npm run generate',
      'npx biome check --write .',
      'npx buf format -w',
      'npm run lint',
      'npm run typecheck',
      'npm run lint:breaking',
    ]) {
      mentions(rpc.text, command);
      await succeeds(root, command);
    }
  });

  // Step 8 before step 7: it starts from a copy without dist/, which Vitest's global setup builds.
  step(
    "Add an RPC, step 8: the README's test passes",
    async () => {
      mentions(rpc.text, 'npx vitest run');
      expect(existsSync(join(root, 'dist')), 'the copy starts without a build').toBe(false);
      const output = await succeeds(root, `npx vitest run ${testFile}`, 120_000);
      expect(output).toMatch(/Test Files {2}1 passed \(1\)/);
    },
    150_000,
    false,
  );

  step(
    'Add an RPC, step 7: the calls answer as the README says',
    async () => {
      // `npm start` builds, then starts both roles on fixed ports; these take free ones.
      mentions(rpc.text, 'npm start');
      await succeeds(root, 'npm run build');
      const main = join(root, 'dist/entry/main.js');
      const backend = await startRole('backend', { main, cwd: root });
      let api: RoleProcess | undefined;
      try {
        api = await startRole('api', { main, cwd: root, env: { BACKEND_URL: backend.url } });
        const local = (text: string) =>
          text
            .replaceAll('localhost:8080', `127.0.0.1:${api?.port}`)
            .replaceAll('localhost:8081', `127.0.0.1:${backend.port}`);
        const [calls, python] = rpc.blocks.filter((b) => b.lang === 'sh');
        expect(calls?.code).toContain('localhost:8080');
        const replies: string[] = [];
        for (const { command, expected } of commands(calls?.code ?? '')) {
          const output = await succeeds(root, local(command), 20_000);
          const json = expected.filter((line) => /^[[{]/.test(line));
          if (json.length) expect(JSON.parse(output), command).toEqual(JSON.parse(json.join('')));
          // `{"reply":"…"}`, `{"replies":["…"]}`: what grpcio prints, one reply a line.
          for (const value of json.map((line) => JSON.parse(line) as Record<string, unknown>)) {
            replies.push(...Object.values(value).flat().map(String));
          }
        }
        // grpcio, on stubs generated from the new proto: the same replies.
        const stubs = await mkdtemp(join(tmpdir(), 'readme-walkthrough-stubs-'));
        try {
          const script = local(python?.code ?? '').replaceAll('/tmp/greeter-stubs', stubs);
          // Debian's python3, which has grpcio and grpc-tools, whatever else is on PATH.
          const output = await succeeds(root, `export PATH=/usr/bin:$PATH\n${script}`, 30_000);
          expect(output.trim().split('\n')).toEqual(replies);
        } finally {
          await rm(stubs, { recursive: true, force: true });
        }
      } finally {
        await Promise.all([api?.stop(), backend.stop()]);
      }
    },
    60_000,
    false,
  );

  step(
    'Add an RPC: the backend hook puts enduser.id on a direct call',
    async () => {
      expect(
        recipes.map((b) => b.path),
        'the recipes after step 8 changed: teach this test to apply them',
      ).toEqual(['src/entry/start-backend.ts']);
      for (const block of recipes) await applyBlock(root, block);
      // "Add it to the `interceptors` list in `start-backend.ts`".
      const name = /const (\w+): Interceptor\b/.exec(recipes[0]?.code ?? '')?.[1];
      const path = join(root, 'src/entry/start-backend.ts');
      const source = await readFile(path, 'utf8');
      const list = 'const interceptors: Interceptor[] = [';
      expect(source, `no \`${list}\` in start-backend.ts`).toContain(list);
      await writeFile(path, source.replace(list, `${list}${name}`));
      for (const command of ['npx biome check --write .', 'npm run lint', 'npm run typecheck']) {
        await succeeds(root, command);
      }
      await succeeds(root, 'npm run build');
      const receiver = await startOtlpReceiver();
      const backend = await startRole('backend', {
        main: join(root, 'dist/entry/main.js'),
        cwd: root,
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '100' },
      });
      try {
        await succeeds(
          root,
          `npx buf curl --protocol grpc --http2-prior-knowledge -H 'x-user-id: u-7' -d '{"name":"Bo","count":1}' ${backend.url}/backend_service.v1.BackendService/GreetMany`,
        );
        const method = 'backend_service.v1.BackendService/GreetMany';
        const spans = await receiver.waitForSpans((all) => all.some((s) => s.name === method), {
          timeoutMs: 10_000,
        });
        const span = spans.find((s) => s.name === method);
        expect(span?.attributes['enduser.id'], 'enduser.id of the backend span').toBe('u-7');
      } finally {
        await backend.stop();
        await receiver.close();
      }
    },
    60_000,
    false,
  );
});
