// `npm start`: both roles from the production build, logs readable, each request's trace
// printed as a tree. `npm run start:cloud` puts them behind local Cloud Run front ends.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { freePort, startLocalStack } from '../tools/local-stack/index.ts';
import { createTraceTreePrinter, startOtlpReceiver } from '../tools/otlp-receiver/index.ts';

const cloud = process.argv.includes('--cloud');
const ports = { api: process.env.PORT ?? '8080', backend: process.env.BACKEND_PORT ?? '8081' };
const color = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: number, text: string) => (color ? `\u001b[${code}m${text}\u001b[0m` : text);

/** A start that cannot go on: one line saying what to do, not a stack. */
function fail(message: string): never {
  process.stderr.write(`${paint(31, 'start failed:')} ${message}\n`);
  process.exit(1);
}

const otlpPort = Number(process.env.OTLP_PORT ?? 4318);
const receiver = await startOtlpReceiver({ port: otlpPort }).catch((error: Error) =>
  fail(
    `the trace receiver cannot listen on port ${otlpPort} (${error.message}): set OTLP_PORT to a free port.`,
  ),
);
const printer = createTraceTreePrinter({
  color,
  write: (text) => process.stdout.write(`${text}\n`),
});
receiver.onSpans(printer.add);

/**
 * Ctrl-C reaches the whole process group, the roles too, and they start their drain on it:
 * they are given time to finish before being sent SIGTERM (which they would log as ignored).
 */
let interrupted = false;
const DRAIN_AFTER_CTRL_C_MS = 3_000;

const stack = await startLocalStack({
  cloud,
  env: {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_BSP_SCHEDULE_DELAY: '200',
    OTEL_METRIC_EXPORT_INTERVAL: '15000',
    LOG_FORMAT: 'pretty',
    // The roles' output comes through a pipe: colours only if this terminal takes them.
    ...(color ? { FORCE_COLOR: '1' } : { NO_COLOR: '1' }),
  },
  // Behind the front end the api's own port is private: any free one.
  apiEnv: { PORT: cloud ? String(await freePort()) : ports.api },
  backendEnv: cloud ? {} : { PORT: ports.backend },
  async startRole(role, env) {
    const child = spawn(process.execPath, ['dist/entry/main.js'], {
      env: { ...process.env, SERVICE_ROLE: role, HOST: '127.0.0.1', ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const tag = paint(role === 'api' ? 36 : 35, `[${role}]`.padEnd(9));
    let listening: ((url: string) => void) | undefined;
    const ready = new Promise<string>((resolve) => {
      listening = resolve;
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      process.stdout.write(`${tag} ${line}\n`);
      const match = /listening on (http:\/\/[\d.:]+)/.exec(line);
      if (match?.[1]) listening?.(match[1]);
    });
    const exited = once(child, 'exit');
    const url = await Promise.race([
      ready,
      exited.then(([code]) => {
        throw new Error(`${role} exited with ${code} before listening`);
      }),
    ]);
    return {
      url,
      async stop() {
        if (interrupted && child.exitCode === null) {
          await Promise.race([exited, delay(DRAIN_AFTER_CTRL_C_MS)]);
        }
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          await exited;
        }
      },
    };
  },
}).catch(async (error: Error) => {
  await receiver.close();
  return fail(
    `${error.message}. Its own lines above say why; if a port is taken, set PORT (the api's, ${ports.api}) or BACKEND_PORT (${ports.backend}).`,
  );
});

const call = `curl -s${cloud ? ` --cacert ${stack.cloud?.caFile}` : ''} -X POST ${stack.apiUrl}/greet -H 'content-type: application/json' -d '{"name":"David"}'`;
const grpcCall = `npx buf curl --protocol grpc --http2-prior-knowledge -d '{"name":"David"}' ${stack.backendDirectUrl}/backend_service.v1.BackendService/Greet`;
// The example request hook (src/api/request-hooks.ts) puts this id on every span of the trace.
const withUser = `${call} -H 'x-user-id: u-123'`;
const tryLines = [`  ${withUser}`, `  ${call.replace('"David"}', '"David","withError":true}')}`];
if (stack.cloud) {
  // Like Cloud Run's, the front end starts an unsampled trace for a request that brings none.
  const sampled = `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
  // The backend checks ID tokens here as on Cloud Run: a fresh one for the api's service
  // account from the local metadata server, as google-auth-library would fetch it.
  const identity = new URL(
    'computeMetadata/v1/instance/service-accounts/default/identity',
    stack.cloud.metadata.url,
  );
  identity.searchParams.set('audience', stack.cloud.backendFrontEnd.audience);
  identity.searchParams.set('format', 'full');
  const token = `$(curl -s -H 'Metadata-Flavor: Google' '${identity}')`;
  tryLines.push(
    `  ${withUser} -H 'traceparent: ${sampled}'   # sampled: its trace is printed`,
    `  ${grpcCall.replace('npx buf curl', `npx buf curl -H "authorization: Bearer ${token}"`)}`,
  );
} else {
  tryLines.push(`  ${grpcCall}`);
}
process.stdout.write(
  [
    '',
    paint(1, cloud ? 'Both roles are up behind local Cloud Run front ends.' : 'Both roles are up.'),
    `  api      ${stack.apiUrl}   (docs: ${stack.apiUrl}/docs)`,
    `  backend  ${stack.backendUrl}${cloud ? `   (role itself: ${stack.backendDirectUrl})` : ''}`,
    cloud
      ? `  traces   of sampled requests printed below (OTLP receiver ${receiver.url}); the front end samples none by itself`
      : `  traces   printed below as each request completes (OTLP receiver ${receiver.url})`,
    '',
    'Try:',
    ...tryLines,
    '',
    'Ctrl-C stops everything.',
    '',
  ].join('\n'),
);

let stopping = false;
const stopAll = async () => {
  if (stopping) return;
  stopping = true;
  await stack.stop();
  printer.flush();
  printer.close();
  await receiver.close();
  process.exit(0);
};
process.on('SIGINT', () => {
  interrupted = true;
  void stopAll();
});
process.on('SIGTERM', () => void stopAll());
