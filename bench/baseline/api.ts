import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GreetRequest } from '../lib/greet-wire.ts';
import { CallError, createGreetCaller, validateGreet } from './greet-call.ts';

/*
 * The framework-free api: `node:http` for REST, one `node:http2` session to the backend for
 * gRPC, the product's wire contract on both sides. No framework, no validation library, no
 * telemetry, no logging: the near-limit the product is compared with.
 * Env: PORT (default 0), HOST (default 127.0.0.1), BACKEND_URL (required).
 */

const MAX_BODY_BYTES = 64 * 1024;

const backendUrl = process.env.BACKEND_URL;
if (!backendUrl) {
  console.error('BACKEND_URL is required (http://host:port of an h2c gRPC backend)');
  process.exit(78);
}
const backend = createGreetCaller(backendUrl);

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) reject(new CallError(413, 'body too large'));
      else chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function parseGreet(text: string): GreetRequest {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CallError(400, 'body must be JSON');
  }
  return validateGreet(body);
}

async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
  const path = (request.url ?? '/').split('?', 1)[0];
  if (request.method === 'GET' && path === '/healthz') {
    send(response, 200, { status: 'ok' });
  } else if (request.method === 'POST' && path === '/greet') {
    const reply = await backend.greet(parseGreet(await readBody(request)));
    send(response, 200, { reply });
  } else {
    send(response, 404, { title: 'Not Found', status: 404 });
  }
}

const server = createServer((request, response) => {
  handle(request, response).catch((error: unknown) => {
    const status = error instanceof CallError ? error.status : 500;
    if (!response.headersSent)
      send(response, status, { title: String((error as Error).message), status });
  });
});
server.keepAliveTimeout = 65_000;

const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
server.listen(port, host, () => {
  const address = server.address() as AddressInfo;
  process.stdout.write(
    `${JSON.stringify({ message: 'baseline api listening', port: address.port })}\n`,
  );
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  backend.close();
  setTimeout(() => process.exit(0), 1_000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
