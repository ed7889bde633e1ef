import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CLI = 'tools/cloud-run-local/cli.ts';
const execFileAsync = promisify(execFile);

interface Summary {
  url: string;
  audience: string;
  auth: boolean;
  caCertFile: string;
  metadataHost?: string;
  metadataUrl?: string;
  certsUrl?: string;
  serviceAccountEmail?: string;
  env: Record<string, string>;
}

async function firstLine(child: ChildProcess): Promise<string> {
  if (!child.stdout) throw new Error('the child has no stdout pipe');
  const lines = createInterface({ input: child.stdout });
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  try {
    for await (const line of lines) return line;
    throw new Error('the CLI exited before printing its JSON line');
  } finally {
    clearTimeout(timer);
  }
}

describe('cloud-run-local CLI', () => {
  let backend: Http2Server;
  let upstream: string;

  beforeAll(async () => {
    backend = createServer();
    backend.on('stream', (stream, headers) => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify({ traceparent: headers.traceparent ?? null }));
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    upstream = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => backend.close(resolve));
  });

  it('prints one JSON line, serves with ID tokens from its metadata server, stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [CLI, '--upstream', upstream, '--protocol', 'h2c'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    try {
      const summary = JSON.parse(await firstLine(child)) as Summary;
      expect(summary).toMatchObject({ auth: true, audience: summary.url });
      expect(summary.env).toEqual({
        NODE_EXTRA_CA_CERTS: summary.caCertFile,
        GCE_METADATA_HOST: summary.metadataHost,
      });

      const identity = new URL(
        '/computeMetadata/v1/instance/service-accounts/default/identity',
        summary.metadataUrl,
      );
      identity.search = new URLSearchParams({
        audience: summary.audience,
        format: 'full',
      }).toString();
      const token = await (
        await fetch(identity, { headers: { 'metadata-flavor': 'Google' } })
      ).text();

      const ca = await readFile(summary.caCertFile, 'utf8');
      const client = connect(summary.url, { ca });
      try {
        const status = (headers: Record<string, string>) =>
          new Promise<number>((resolve, reject) => {
            const stream = client.request({ ':path': '/', ...headers });
            stream.on('response', (received) => resolve(Number(received[':status'])));
            stream.on('error', reject);
            stream.resume();
          });
        expect(await status({})).toBe(401);
        expect(await status({ authorization: `Bearer ${token}` })).toBe(200);
      } finally {
        client.close();
      }
    } finally {
      child.kill('SIGTERM');
    }
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
  }, 30_000);

  it('runs without auth on --no-auth and removes its temporary CA file when stopped', async () => {
    const child = spawn(
      process.execPath,
      [CLI, '--upstream', upstream, '--protocol', 'h2c', '--no-auth'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = once(child, 'exit');
    let caCertFile = '';
    try {
      const summary = JSON.parse(await firstLine(child)) as Summary;
      caCertFile = summary.caCertFile;
      expect(summary.auth).toBe(false);
      expect(summary.metadataHost).toBeUndefined();
      expect(existsSync(caCertFile)).toBe(true);
    } finally {
      child.kill('SIGINT');
    }
    expect((await exited)[0]).toBe(0);
    expect(existsSync(caCertFile)).toBe(false);
  }, 30_000);

  it('fails with a usage message when --upstream is missing', async () => {
    const failure = await execFileAsync(process.execPath, [CLI, '--protocol', 'h2c']).then(
      () => undefined,
      (error: { code?: number; stderr?: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain('--upstream is required');
  });
});
