import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { createSecureServer, type ServerHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { endToEndHeaders, sendPlain } from './forwarding.ts';
import { createH2cUpstream } from './h2c-upstream.ts';
import { createHttp1Upstream } from './http1-upstream.ts';
import { createIdTokenVerifier, type IdTokenVerifier } from './id-token-verifier.ts';
import type { ClientRequest, ClientResponse, Upstream } from './internal-types.ts';
import { createSelfSignedCertificate } from './self-signed-certificate.ts';
import { rewriteTraceHeaders, type TraceRewrite } from './trace-rewrite.ts';

export interface FrontEndAuthOptions {
  /** Where to fetch the signing certificates (the metadata server's `certsUrl`). */
  certsUrl: string;
  /** The audience tokens must carry; default the front end's own `url`. */
  audience?: string;
  /** When set, only these service accounts may call (others get 403, like no run.invoker). */
  allowedEmails?: string[];
}

export interface FrontEndOptions {
  /** The container, `http://127.0.0.1:PORT`. */
  upstream: string;
  /** `h2c` is Cloud Run with `--use-http2`; `http1` is its default. */
  upstreamProtocol: 'h2c' | 'http1';
  /** Require Google ID tokens, like a service deployed with `--no-allow-unauthenticated`. */
  auth?: FrontEndAuthOptions;
  /** Default 0: a free port. */
  port?: number;
}

export interface FrontEnd {
  /** `https://localhost:PORT` */
  url: string;
  /** The audience ID tokens must carry (the URL unless set in `auth`). */
  audience: string;
  /** The self-signed certificate served, to trust as a CA (`ca` option, NODE_EXTRA_CA_CERTS). */
  caCertPem: string;
  /** Requests received, including rejected ones. */
  requests(): number;
  /** The trace headers of the last forwarded request. */
  lastRewrite(): TraceRewrite | undefined;
  close(): Promise<void>;
}

/**
 * Cloud Run's front end on 127.0.0.1: TLS with HTTP/2 (ALPN) and HTTP/1.1, optional IAM check of
 * Google ID tokens, Google's trace-header rewrite, then a proxy to the container.
 */
export async function startFrontEnd(options: FrontEndOptions): Promise<FrontEnd> {
  const upstreamUrl = checkUpstreamUrl(options.upstream);
  const upstream: Upstream =
    options.upstreamProtocol === 'h2c'
      ? createH2cUpstream(upstreamUrl)
      : createHttp1Upstream(upstreamUrl);
  const tls = await createSelfSignedCertificate({
    // A distinct subject per front end, so one CA file can trust several of them.
    commonName: `cloud-run-local front end ${randomUUID().slice(0, 8)}`,
    subjectAltNames: ['DNS:localhost', 'IP:127.0.0.1'],
  });
  let verifier: IdTokenVerifier | undefined;
  let requests = 0;
  let last: TraceRewrite | undefined;

  const handle = async (request: ClientRequest, response: ClientResponse): Promise<void> => {
    requests++;
    if (verifier) {
      const verdict = await verifier.verify(request.headers.authorization);
      if (!verdict.ok) {
        request.resume();
        const challenge = verdict.status === 401 ? { 'www-authenticate': 'Bearer' } : {};
        sendPlain(
          response,
          verdict.status,
          `${verdict.status} ${STATUS_CODES[verdict.status]}: ${verdict.reason}`,
          challenge,
        );
        return;
      }
    }
    const rewrite = rewriteTraceHeaders(
      single(request.headers.traceparent),
      single(request.headers['x-cloud-trace-context']),
    );
    last = rewrite;
    const headers = endToEndHeaders(request.headers, options.upstreamProtocol === 'h2c');
    headers.traceparent = rewrite.outgoing;
    headers['x-cloud-trace-context'] = rewrite.cloudTraceContext;
    const client = request.socket.remoteAddress ?? '127.0.0.1';
    const forwardedFor = single(request.headers['x-forwarded-for']);
    headers['x-forwarded-for'] = forwardedFor ? `${forwardedFor}, ${client}` : client;
    headers['x-forwarded-proto'] = 'https';
    upstream.forward(request, response, {
      method: request.method ?? 'GET',
      path: request.url ?? '/',
      authority: single(request.headers[':authority']) ?? request.headers.host ?? 'localhost',
      headers,
    });
  };

  const server = createSecureServer(
    { key: tls.privateKeyPem, cert: tls.certificatePem, allowHTTP1: true },
    (request: ClientRequest, response: ClientResponse) => {
      handle(request, response).catch((error: unknown) => {
        sendPlain(response, 500, `cloud-run-local front end failed: ${String(error)}`);
      });
    },
  );
  const sessions = new Set<ServerHttp2Session>();
  const sockets = new Set<TLSSocket>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  server.on('secureConnection', (socket: TLSSocket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const url = `https://localhost:${(server.address() as AddressInfo).port}`;
  const audience = options.auth?.audience ?? url;
  if (options.auth) {
    verifier = createIdTokenVerifier({
      certsUrl: options.auth.certsUrl,
      audience,
      ...(options.auth.allowedEmails ? { allowedEmails: options.auth.allowedEmails } : {}),
    });
  }

  return {
    url,
    audience,
    caCertPem: tls.certificatePem,
    requests: () => requests,
    lastRewrite: () => last,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      for (const socket of sockets) if (socket.alpnProtocol !== 'h2') socket.destroy();
      // Sessions with streams still open get a short grace, then go.
      const grace = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, 1000);
      await closed;
      clearTimeout(grace);
      await upstream.close();
    },
  };
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(',') : value;
}

function checkUpstreamUrl(upstream: string): string {
  let parsed: URL | undefined;
  try {
    parsed = new URL(upstream);
  } catch {
    parsed = undefined;
  }
  if (parsed?.protocol !== 'http:') {
    throw new Error(
      `cloud-run-local: upstream must be a cleartext http:// URL like http://127.0.0.1:9000 ` +
        `(the container behind Cloud Run's front end), got "${upstream}".`,
    );
  }
  return parsed.origin;
}
