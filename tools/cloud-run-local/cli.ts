import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startFrontEnd } from './front-end.ts';
import { startMetadataServer } from './metadata-server.ts';

const USAGE = `Usage: node tools/cloud-run-local/cli.ts --upstream http://127.0.0.1:9000 [options]

Runs Cloud Run's front end (TLS, ID-token check, trace-header rewrite) in front of a local
container, and a metadata server that issues the ID tokens. Prints one JSON line, then runs
until SIGINT or SIGTERM.

  --upstream URL                the container, http://127.0.0.1:PORT (required)
  --protocol h2c|http1          how to reach it (default h2c, as with --use-http2)
  --port N                      front end port (default: free port)
  --audience URL                required token audience (default: the front end URL)
  --allowed-email EMAIL         only this caller may invoke (repeatable; default: any)
  --service-account-email EMAIL identity the metadata server hands out
  --metadata-port N             metadata server port (default: free port)
  --no-auth                     no metadata server, no token check (--allow-unauthenticated)
  --ca-file PATH                where to write the front end certificate (default: a temp file)`;

interface Closeable {
  close(): Promise<void>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      upstream: { type: 'string' },
      protocol: { type: 'string', default: 'h2c' },
      port: { type: 'string' },
      audience: { type: 'string' },
      'allowed-email': { type: 'string', multiple: true },
      'service-account-email': { type: 'string' },
      'metadata-port': { type: 'string' },
      'no-auth': { type: 'boolean', default: false },
      'ca-file': { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const protocol = values.protocol;
  if (!values.upstream || (protocol !== 'h2c' && protocol !== 'http1')) {
    throw new Error(`--upstream is required and --protocol must be h2c or http1.\n\n${USAGE}`);
  }
  const open: Closeable[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  const metadata = values['no-auth']
    ? undefined
    : await startMetadataServer({
        ...optional('serviceAccountEmail', values['service-account-email']),
        ...optional('port', portNumber(values['metadata-port'], '--metadata-port')),
      });
  if (metadata) open.push(metadata);
  const frontEnd = await startFrontEnd({
    upstream: values.upstream,
    upstreamProtocol: protocol,
    ...optional('port', portNumber(values.port, '--port')),
    ...(metadata
      ? {
          auth: {
            certsUrl: metadata.certsUrl,
            ...optional('audience', values.audience),
            ...optional('allowedEmails', values['allowed-email']),
          },
        }
      : {}),
  });
  open.unshift(frontEnd);
  let caCertFile = values['ca-file'];
  if (!caCertFile) {
    const dir = await mkdtemp(join(tmpdir(), 'cloud-run-local-ca-'));
    caCertFile = join(dir, 'front-end-ca.pem');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
  }
  await writeFile(caCertFile, frontEnd.caCertPem);

  const stop = async (): Promise<void> => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const server of open) await server.close();
    for (const cleanup of cleanups) await cleanup();
  };
  const onSignal = () => {
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const env: Record<string, string> = { NODE_EXTRA_CA_CERTS: caCertFile };
  if (metadata) env.GCE_METADATA_HOST = metadata.host;
  const summary = {
    url: frontEnd.url,
    audience: frontEnd.audience,
    auth: metadata !== undefined,
    caCertFile,
    ...(metadata
      ? {
          metadataHost: metadata.host,
          metadataUrl: metadata.url,
          certsUrl: metadata.certsUrl,
          jwksUrl: metadata.jwksUrl,
          serviceAccountEmail: metadata.serviceAccountEmail,
        }
      : {}),
    env,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

function portNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`${flag} must be a port number from 0 to 65535, got "${value}".`);
  }
  return port;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
