import Fastify from 'fastify';
import { CallError, createGreetCaller, validateGreet } from '../baseline/greet-call.ts';

/*
 * The framework-free api's handler on Fastify with its defaults (JSON body parser, no schema,
 * no logger): what Fastify itself costs per request next to `node:http`.
 * Env: PORT (default 0), HOST (default 127.0.0.1), BACKEND_URL (required).
 */

const backendUrl = process.env.BACKEND_URL;
if (!backendUrl) {
  console.error('BACKEND_URL is required (http://host:port of an h2c gRPC backend)');
  process.exit(78);
}
const backend = createGreetCaller(backendUrl);

const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
app.setErrorHandler((error, _request, reply) => {
  const status =
    error instanceof CallError
      ? error.status
      : ((error as { statusCode?: number }).statusCode ?? 500);
  void reply.status(status).send({ title: (error as Error).message, status });
});
app.post('/greet', async (request) => ({
  reply: await backend.greet(validateGreet(request.body)),
}));
app.get('/healthz', async () => ({ status: 'ok' }));

const address = await app.listen({
  port: Number(process.env.PORT ?? 0),
  host: process.env.HOST ?? '127.0.0.1',
});
process.stdout.write(
  `${JSON.stringify({ message: 'fastify api listening', port: Number(new URL(address).port) })}\n`,
);

const stop = () => {
  backend.close();
  void app.close().then(() => process.exit(0));
  setTimeout(() => process.exit(0), 1_000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
