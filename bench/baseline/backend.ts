import { createServer, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import {
  decodeGreetRequest,
  encodeGreetResponse,
  GREET_PATH,
  grpcFrame,
  grpcUnframe,
} from '../lib/greet-wire.ts';

/*
 * The framework-free backend: `node:http2` alone, serving gRPC Greet with the product's wire
 * contract. No Connect, no telemetry, no logging: the near-limit the product is compared with.
 * Env: PORT (default 0), HOST (default 127.0.0.1). Prints one JSON line containing "listening".
 */

const GRPC = { OK: '0', INVALID_ARGUMENT: '3', UNIMPLEMENTED: '12', INTERNAL: '13' } as const;
const MAX_BODY_BYTES = 4 * 1024 * 1024;

function finish(
  stream: ServerHttp2Stream,
  status: string,
  message?: Buffer,
  detail?: string,
): void {
  if (stream.destroyed) return;
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.once('wantTrailers', () =>
    stream.sendTrailers({
      'grpc-status': status,
      ...(detail ? { 'grpc-message': encodeURIComponent(detail) } : {}),
    }),
  );
  stream.end(message ? grpcFrame(message) : undefined);
}

function greet(stream: ServerHttp2Stream, body: Buffer): void {
  let request: ReturnType<typeof decodeGreetRequest>;
  try {
    request = decodeGreetRequest(grpcUnframe(body));
  } catch (error) {
    finish(stream, GRPC.INVALID_ARGUMENT, undefined, (error as Error).message);
    return;
  }
  const name = request.name.trim();
  if (name.length === 0 || name.length > 256) {
    finish(stream, GRPC.INVALID_ARGUMENT, undefined, 'name is required (1-256 characters)');
  } else if (request.withError) {
    finish(stream, GRPC.INTERNAL, undefined, 'greeting failed on purpose (with_error=true)');
  } else {
    finish(stream, GRPC.OK, encodeGreetResponse(`Hello ${name}!!`));
  }
}

const server = createServer();
server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  const contentType = String(headers['content-type'] ?? '');
  if (headers[':path'] !== GREET_PATH || !contentType.startsWith('application/grpc')) {
    stream.resume();
    finish(stream, GRPC.UNIMPLEMENTED, undefined, `no method ${String(headers[':path'])}`);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  stream.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  });
  stream.on('end', () => {
    if (size > MAX_BODY_BYTES)
      finish(stream, GRPC.INVALID_ARGUMENT, undefined, 'message too large');
    else greet(stream, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
  });
});

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
server.listen(port, host, () => {
  const address = server.address() as AddressInfo;
  process.stdout.write(
    `${JSON.stringify({ message: 'baseline backend listening', port: address.port })}\n`,
  );
});

const stop = () => {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1_000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
