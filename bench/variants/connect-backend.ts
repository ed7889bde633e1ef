import { createServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { ConnectRouter } from '@connectrpc/connect';
import { fastifyConnectPlugin } from '@connectrpc/connect-fastify';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { fastify } from 'fastify';
import { registerBackendService } from '../../src/rpc/backend-service.ts';

/*
 * The product's Greet implementation served two ways, with no telemetry and no logging, to
 * choose the backend's server by measurement: SERVER=node is `http2.createServer` +
 * `connectNodeAdapter` (what the product uses), SERVER=fastify is `fastify({ http2: true })` +
 * `@connectrpc/connect-fastify`. Bundled by the bench (src/ uses .js import suffixes).
 * Env: SERVER, PORT (default 0), HOST (default 127.0.0.1).
 */

const routes = (router: ConnectRouter) => registerBackendService(router);
const port = Number(process.env.PORT ?? 0);
const host = process.env.HOST ?? '127.0.0.1';
const kind = process.env.SERVER;

const announce = (listening: number) =>
  process.stdout.write(
    `${JSON.stringify({ message: `connect-${kind} backend listening`, port: listening })}\n`,
  );

let close: () => Promise<void>;
if (kind === 'node') {
  const server = createServer(connectNodeAdapter({ routes }));
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  announce((server.address() as AddressInfo).port);
  close = () => new Promise((resolve) => server.close(() => resolve()));
} else if (kind === 'fastify') {
  const server = fastify({ http2: true, logger: false });
  await server.register(fastifyConnectPlugin, { routes });
  await server.listen({ port, host });
  announce((server.server.address() as AddressInfo).port);
  close = () => server.close();
} else {
  console.error(`SERVER must be node or fastify (got ${JSON.stringify(kind)})`);
  process.exit(78);
}

const stop = () => {
  void close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 1_000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
