import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import {
  createIdTokenIssuer,
  GOOGLE_ISSUER,
  type IdTokenIssuer,
  numericId,
} from './id-token-issuer.ts';

export interface MetadataServerOptions {
  serviceAccountEmail?: string;
  projectId?: string;
  /** Default `us-central1`. */
  region?: string;
  /** `instance/id`; default a 19-digit number derived from the project id. */
  instanceId?: string;
  /** Default 0: a free port. */
  port?: number;
}

export interface MintIdTokenOptions {
  /** Default: the server's service account email. */
  email?: string;
  /** Default 3600. Negative values give an expired token. */
  expiresInSeconds?: number;
  /** Seconds since the epoch; default now. */
  issuedAt?: number;
  /**
   * Default true (`format=full`). False gives what the identity endpoint's default format and
   * IAM's `generateIdToken` give: a token without `email` and `email_verified`.
   */
  includeEmail?: boolean;
}

/**
 * What the identity endpoint answers instead of a token, to test a token source that fails:
 * exactly this status and body (a proxy's HTML, garbage, a token with a CR/LF after it), or no
 * answer at all (`hang`: the request stays open until the client gives up).
 */
export type IdentityAnswer = { status?: number; body: string } | 'hang';

export interface MetadataServer {
  /** `127.0.0.1:PORT`, the value for `GCE_METADATA_HOST`. */
  host: string;
  url: string;
  /** `iss` of the tokens it signs (Google's). */
  issuer: string;
  /** Certificates by kid, shaped like https://www.googleapis.com/oauth2/v1/certs. */
  certsUrl: string;
  /** JWKS, shaped like https://www.googleapis.com/oauth2/v3/certs. */
  jwksUrl: string;
  serviceAccountEmail: string;
  mintIdToken(audience: string, options?: MintIdTokenOptions): string;
  /** Identity (ID token) requests so far, however they were answered. */
  idTokenRequests(): number;
  /** Connections open now, idle keep-alive ones included (to see what clients leave open). */
  openConnections(): number;
  /** While down, metadata paths answer 503; the certificate URLs stay up (Google serves them). */
  setDown(down: boolean): void;
  /** Delay every metadata answer by this many milliseconds. */
  setDelayMs(ms: number): void;
  /** Lifetime of the ID tokens the identity endpoint issues from now on (default 3600 s). */
  setIdTokenLifetimeSeconds(seconds: number): void;
  /** Answer identity requests this way from now on; undefined: with tokens again (the default). */
  setIdentityAnswer(answer: IdentityAnswer | undefined): void;
  /**
   * Sign with a new key from now on, and publish only that one (as a restarted metadata server
   * would): tokens issued before are refused by a verifier that fetches the certificates again.
   */
  rotateSigningKey(): Promise<void>;
  close(): Promise<void>;
}

const METADATA_PREFIX = '/computeMetadata/v1/';
const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';

interface Reply {
  status: number;
  body: string;
  contentType?: string;
}

/**
 * A GCE/Cloud Run metadata server on 127.0.0.1 that speaks enough of the real protocol for
 * gcp-metadata and google-auth-library: point `GCE_METADATA_HOST` at `host`.
 */
export async function startMetadataServer(
  options: MetadataServerOptions = {},
): Promise<MetadataServer> {
  const projectId = options.projectId ?? 'local-project';
  const email = options.serviceAccountEmail ?? `local-caller@${projectId}.iam.gserviceaccount.com`;
  let issuer = await createIdTokenIssuer();
  const values = describeInstance(projectId, options.region ?? 'us-central1', email);
  if (options.instanceId !== undefined) values['instance/id'] = options.instanceId;
  let down = false;
  let delayMs = 0;
  let idTokenRequests = 0;
  let idTokenLifetimeSeconds = 3600;
  let identityAnswer: IdentityAnswer | undefined;

  const metadata = (path: string, query: URLSearchParams): Promise<Reply> | Reply | undefined => {
    const fixed = values[path];
    if (fixed !== undefined) return text(fixed);
    const account = /^instance\/service-accounts\/([^/]+)\/(.*)$/.exec(path);
    if (!account || (account[1] !== 'default' && account[1] !== email)) return undefined;
    switch (account[2]) {
      case '':
        return query.get('recursive') === 'true'
          ? json({ aliases: ['default'], email, scopes: [CLOUD_PLATFORM_SCOPE] })
          : text('aliases\nemail\nidentity\nscopes\ntoken\n');
      case 'email':
        return text(email);
      case 'aliases':
        return text('default\n');
      case 'scopes':
        return text(`${CLOUD_PLATFORM_SCOPE}\n`);
      case 'token':
        return json({
          access_token: `ya29.local-${randomBytes(24).toString('base64url')}`,
          expires_in: 3599,
          token_type: 'Bearer',
        });
      case 'identity': {
        const reply = identity(issuer, email, query, idTokenLifetimeSeconds, () => {
          idTokenRequests++;
        });
        if (reply.status !== 200 || identityAnswer === undefined) return reply;
        if (identityAnswer === 'hang') return new Promise<never>(() => {});
        return { status: identityAnswer.status ?? 200, body: identityAnswer.body };
      }
      default:
        return undefined;
    }
  };

  const route = (request: IncomingMessage): Promise<Reply> | Reply => {
    const url = new URL(request.url ?? '/', 'http://metadata.google.internal');
    if (url.pathname === '/oauth2/v1/certs') return json(issuer.pemCertificates());
    if (url.pathname === '/oauth2/v3/certs') return json(issuer.jwks());
    if (request.headers['metadata-flavor'] !== 'Google') {
      return { status: 403, body: 'Missing Metadata-Flavor:Google header.\n' };
    }
    if (down) return { status: 503, body: 'cloud-run-local metadata server is down (setDown).\n' };
    const answer = (): Promise<Reply> | Reply => {
      if (url.pathname === '/') return text('computeMetadata/\n');
      if (url.pathname === '/computeMetadata/' || url.pathname === '/computeMetadata/v1') {
        return text('v1/\n');
      }
      if (!url.pathname.startsWith(METADATA_PREFIX)) return notFound();
      const path = url.pathname.slice(METADATA_PREFIX.length);
      return metadata(path, url.searchParams) ?? notFound();
    };
    return delayMs > 0 ? delay(delayMs).then(answer) : answer();
  };

  const connections = new Set<Socket>();
  const server = createServer((request, response) => {
    Promise.resolve(route(request)).then(
      (reply) => send(response, reply),
      (error: unknown) => send(response, { status: 500, body: `${String(error)}\n` }),
    );
  });
  server.on('connection', (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = `127.0.0.1:${port}`;
  const url = `http://${host}`;

  return {
    host,
    url,
    issuer: GOOGLE_ISSUER,
    certsUrl: `${url}/oauth2/v1/certs`,
    jwksUrl: `${url}/oauth2/v3/certs`,
    serviceAccountEmail: email,
    mintIdToken: (audience, mint = {}) =>
      issuer.issue({
        audience,
        email: mint.email ?? email,
        includeEmail: mint.includeEmail ?? true,
        ...(mint.expiresInSeconds === undefined ? {} : { expiresInSeconds: mint.expiresInSeconds }),
        ...(mint.issuedAt === undefined ? {} : { issuedAt: mint.issuedAt }),
      }),
    idTokenRequests: () => idTokenRequests,
    openConnections: () => connections.size,
    setDown: (value) => {
      down = value;
    },
    setIdTokenLifetimeSeconds: (seconds) => {
      idTokenLifetimeSeconds = seconds;
    },
    setDelayMs: (ms) => {
      delayMs = ms;
    },
    setIdentityAnswer: (answer) => {
      identityAnswer = answer;
    },
    rotateSigningKey: async () => {
      issuer = await createIdTokenIssuer();
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function identity(
  issuer: IdTokenIssuer,
  email: string,
  query: URLSearchParams,
  expiresInSeconds: number,
  count: () => void,
): Reply {
  const audience = query.get('audience');
  if (!audience) return { status: 400, body: 'non-empty audience parameter required\n' };
  count();
  const includeEmail = query.get('format') === 'full';
  return text(issuer.issue({ audience, email, includeEmail, expiresInSeconds }));
}

function describeInstance(
  projectId: string,
  region: string,
  email: string,
): Record<string, string> {
  const projectNumber = numericId(projectId, 12);
  const accounts = `default/\n${email}/\n`;
  return {
    instance: 'id\nregion\nservice-accounts/\nzone\n',
    'instance/': 'id\nregion\nservice-accounts/\nzone\n',
    'instance/id': numericId(`${projectId} instance`, 19),
    'instance/region': `projects/${projectNumber}/regions/${region}`,
    'instance/zone': `projects/${projectNumber}/zones/${region}-1`,
    'instance/service-accounts': accounts,
    'instance/service-accounts/': accounts,
    project: 'numeric-project-id\nproject-id\n',
    'project/': 'numeric-project-id\nproject-id\n',
    'project/project-id': projectId,
    'project/numeric-project-id': projectNumber,
    'universe/universe-domain': 'googleapis.com',
  };
}

function text(body: string): Reply {
  return { status: 200, body, contentType: 'application/text' };
}

function json(value: unknown): Reply {
  return { status: 200, body: JSON.stringify(value), contentType: 'application/json' };
}

function notFound(): Reply {
  return { status: 404, body: 'Not Found\n' };
}

function send(response: ServerResponse, reply: Reply): void {
  response.writeHead(reply.status, {
    'metadata-flavor': 'Google',
    'content-type': reply.contentType ?? 'text/plain; charset=utf-8',
    server: 'Metadata Server for VM',
  });
  response.end(reply.body);
}
