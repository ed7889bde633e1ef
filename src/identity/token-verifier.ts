import { Code, ConnectError, createContextKey, type Interceptor } from '@connectrpc/connect';
import { trace } from '@opentelemetry/api';
import { OAuth2Client } from 'google-auth-library';
import type { Config } from '../config.js';
import { INFRASTRUCTURE_SERVICES } from '../rpc/index.js';

const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];
const CERTS_MAX_AGE_MS = 60 * 60_000;

export type VerifiedCaller = { email: string | undefined; subject: string };

/** The verified caller of the current RPC, for handlers: `context.values.get(CALLER)`. */
export const CALLER = createContextKey<VerifiedCaller | undefined>(undefined, {
  description: 'verified caller',
});

/** Where the verified caller's service account is recorded on the server span. */
export const ATTR_CALLER_SERVICE_ACCOUNT = 'caller.service_account';

/**
 * The in-app check for running outside Cloud Run's IAM (Knative, GKE, a VM): a Google-signed
 * ID token for our audience, unexpired, from an allowed service account. Health and reflection
 * are exempt so probes and tools work without tokens.
 */
export function createTokenVerifier(config: Config): Interceptor {
  const audience = config.AUTH_AUDIENCE;
  if (!audience) throw new Error('AUTH_AUDIENCE is required when AUTH_VERIFY_TOKENS=true');
  const allowed = config.AUTH_ALLOWED_CALLERS ? new Set(config.AUTH_ALLOWED_CALLERS) : undefined;
  const client = new OAuth2Client();
  const certs = createCertsCache(config.AUTH_CERTS_URL);

  return (next) => async (request) => {
    if (INFRASTRUCTURE_SERVICES.has(request.service.typeName)) return next(request);
    const match = /^Bearer\s+(\S+)$/i.exec(request.header.get('authorization') ?? '');
    if (!match?.[1]) {
      throw new ConnectError(
        'missing bearer token: send a Google ID token in authorization',
        Code.Unauthenticated,
      );
    }
    let payload: { email?: string; sub?: string } | undefined;
    try {
      const ticket = await client.verifySignedJwtWithCertsAsync(
        match[1],
        await certs(),
        audience,
        GOOGLE_ISSUERS,
      );
      payload = ticket.getPayload();
    } catch (error) {
      throw new ConnectError(
        `invalid ID token: ${(error as Error).message.split('\n', 1)[0]}`,
        Code.Unauthenticated,
      );
    }
    const caller: VerifiedCaller = { email: payload?.email, subject: payload?.sub ?? '' };
    if (allowed && !(caller.email && allowed.has(caller.email))) {
      throw new ConnectError(
        'this caller is not allowed (AUTH_ALLOWED_CALLERS)',
        Code.PermissionDenied,
      );
    }
    if (caller.email)
      trace.getActiveSpan()?.setAttribute(ATTR_CALLER_SERVICE_ACCOUNT, caller.email);
    request.contextValues.set(CALLER, caller);
    return next(request);
  };
}

/** Google's signing certificates (or a local issuer's), fetched once an hour. */
function createCertsCache(url: string): () => Promise<Record<string, string>> {
  let cached: { certs: Record<string, string>; fetchedAt: number } | undefined;
  let pending: Promise<Record<string, string>> | undefined;
  return () => {
    if (cached && Date.now() - cached.fetchedAt < CERTS_MAX_AGE_MS)
      return Promise.resolve(cached.certs);
    pending ??= (async () => {
      const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      if (!response.ok)
        throw new Error(`fetching signing certificates from ${url} gave HTTP ${response.status}`);
      const certs = (await response.json()) as Record<string, string>;
      cached = { certs, fetchedAt: Date.now() };
      return certs;
    })().finally(() => {
      pending = undefined;
    });
    return pending;
  };
}
