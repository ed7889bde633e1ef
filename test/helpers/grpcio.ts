import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Debian's Python, which has python3-grpcio and python3-grpc-tools. */
export const PYTHON = '/usr/bin/python3';

export type GrpcioStubs = { dir: string; remove(): Promise<void> };

/** Python grpcio stubs for `protoFile` (relative to `includeDir`), in a temporary folder. */
export async function generateGrpcioStubs(
  includeDir: string,
  protoFile: string,
): Promise<GrpcioStubs> {
  const dir = await mkdtemp(join(tmpdir(), 'grpcio-stubs-'));
  await run(PYTHON, [
    '-m',
    'grpc_tools.protoc',
    `-I${includeDir}`,
    `--python_out=${dir}`,
    `--grpc_python_out=${dir}`,
    protoFile,
  ]);
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Stubs for backend_service.v1, for `grpcioGreet`. */
export function generateGreeterStubs(): Promise<GrpcioStubs> {
  return generateGrpcioStubs('proto', 'backend_service/v1/backend_service.proto');
}

/** One Greet through Python's grpcio client: `{ reply }` or `{ code, details }`. */
export async function grpcioGreet(
  stubs: GrpcioStubs,
  target: string,
  name: string,
  withError: boolean,
  timeoutMs = 10_000,
): Promise<Record<string, string>> {
  const { stdout } = await run(
    PYTHON,
    ['test/fixtures/python/greet_client.py', stubs.dir, target, name, withError ? '1' : '0'],
    { timeout: timeoutMs },
  );
  return JSON.parse(stdout) as Record<string, string>;
}
