import { type KeyObject, verify, X509Certificate } from 'node:crypto';
import { parseJwt } from './jwt.ts';

export interface IdTokenVerifierOptions {
  /** Serves `{ "<kid>": "<PEM certificate>" }`, like https://www.googleapis.com/oauth2/v1/certs. */
  certsUrl: string;
  audience: string;
  /** When set, a valid token whose `email` is not listed gets 403, like a missing run.invoker. */
  allowedEmails?: string[];
}

export type IdTokenVerdict =
  | { ok: true; email: string | undefined }
  | { ok: false; status: 401 | 403 | 500; reason: string };

export interface IdTokenVerifier {
  /** Checks an `authorization` header value the way Cloud Run IAM does. */
  verify(authorization: string | undefined): Promise<IdTokenVerdict>;
}

const ISSUERS = new Set(['https://accounts.google.com', 'accounts.google.com']);

export function createIdTokenVerifier(options: IdTokenVerifierOptions): IdTokenVerifier {
  const certificates = createCertificateCache(options.certsUrl);
  const allowed = options.allowedEmails ? new Set(options.allowedEmails) : undefined;
  const reject = (reason: string): IdTokenVerdict => ({ ok: false, status: 401, reason });

  return {
    async verify(authorization) {
      const match = /^Bearer +(\S+)$/i.exec(authorization ?? '');
      if (!match?.[1]) return reject('no "authorization: Bearer <Google ID token>" header');
      const jwt = parseJwt(match[1]);
      if (!jwt) return reject('the bearer token is not a JWT');
      const { header, payload } = jwt;
      if (header.alg !== 'RS256' || typeof header.kid !== 'string') {
        return reject('the token is not an RS256 JWT with a kid');
      }
      let key: KeyObject | undefined;
      try {
        key = await certificates.get(header.kid);
      } catch (error) {
        return { ok: false, status: 500, reason: `could not fetch certificates: ${String(error)}` };
      }
      if (!key) return reject(`no certificate for kid ${header.kid} at ${options.certsUrl}`);
      if (!verify('sha256', Buffer.from(jwt.signingInput), key, jwt.signature)) {
        return reject('bad token signature');
      }
      if (typeof payload.iss !== 'string' || !ISSUERS.has(payload.iss)) {
        return reject(`issuer ${String(payload.iss)} is not accounts.google.com`);
      }
      const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
      if (!audiences.includes(options.audience)) {
        return reject(`audience ${String(payload.aud)} is not ${options.audience}`);
      }
      if (typeof payload.exp !== 'number' || payload.exp <= Date.now() / 1000) {
        return reject('the token has expired');
      }
      const email = typeof payload.email === 'string' ? payload.email : undefined;
      if (allowed && !(email && payload.email_verified === true && allowed.has(email))) {
        return {
          ok: false,
          status: 403,
          reason: `${email ?? 'a token without email'} may not invoke this service`,
        };
      }
      return { ok: true, email };
    },
  };
}

/** Certificates by kid, fetched once and again when an unknown kid shows up (key rotation). */
function createCertificateCache(certsUrl: string) {
  let keys = new Map<string, KeyObject>();
  let refreshing: Promise<void> | undefined;

  const refresh = async (): Promise<void> => {
    const response = await fetch(certsUrl);
    if (!response.ok) throw new Error(`GET ${certsUrl} answered ${response.status}`);
    const body = (await response.json()) as Record<string, unknown>;
    const next = new Map<string, KeyObject>();
    for (const [kid, pem] of Object.entries(body)) {
      if (typeof pem === 'string') next.set(kid, new X509Certificate(pem).publicKey);
    }
    keys = next;
  };

  return {
    async get(kid: string): Promise<KeyObject | undefined> {
      if (!keys.has(kid)) {
        refreshing ??= refresh().finally(() => {
          refreshing = undefined;
        });
        await refreshing;
      }
      return keys.get(kid);
    },
  };
}
