import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';

/** Refresh this long before expiry, so a token never expires on the wire. */
const REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;

/** A failure to obtain credentials, as opposed to a failure of the backend itself. */
export class CredentialsError extends ConnectError {
  override name = 'CredentialsError';
}

/** ConnectError's `instanceof` matches any ConnectError, so subclasses are told apart by name. */
export function isCredentialsError(error: unknown): error is CredentialsError {
  return error instanceof Error && error.name === 'CredentialsError';
}

type CachedToken = { token: string; expiresAt: number };

export type IdTokenSource = (audience: string) => Promise<string>;

/**
 * Google ID tokens for calling a private Cloud Run service, minted by google-auth-library (the
 * metadata server on Cloud Run; a service-account key or impersonated credentials locally).
 * Cached per audience and refreshed before expiry; a failure is retried by the next call with a
 * fresh client, because google-auth-library remembers a failed metadata-server probe.
 */
export function createIdTokenCredentials(
  audience: string,
  source: IdTokenSource = fetchIdToken,
): Interceptor {
  let cached: CachedToken | undefined;
  let pending: Promise<string> | undefined;

  async function refresh(): Promise<string> {
    try {
      const token = await source(audience);
      cached = { token, expiresAt: expiryOf(token) };
      return token;
    } catch (error) {
      throw new CredentialsError(
        `could not get a Google ID token for audience ${audience}: ${(error as Error).message}. ` +
          'On Cloud Run check the service account of this service; locally set ' +
          'GOOGLE_APPLICATION_CREDENTIALS to impersonated or service-account credentials.',
        Code.Unavailable,
        undefined,
        undefined,
        error,
      );
    }
  }

  function token(): Promise<string> {
    if (cached && cached.expiresAt - Date.now() > REFRESH_BEFORE_EXPIRY_MS) {
      return Promise.resolve(cached.token);
    }
    pending ??= refresh().finally(() => {
      pending = undefined;
    });
    return pending;
  }

  return (next) => async (request) => {
    request.header.set('authorization', `Bearer ${await token()}`);
    return next(request);
  };
}

async function fetchIdToken(audience: string): Promise<string> {
  const { GoogleAuth } = await import('google-auth-library');
  const client = await new GoogleAuth().getIdTokenClient(audience);
  return client.idTokenProvider.fetchIdToken(audience);
}

/** Reads `exp` from the JWT payload; an unreadable token is treated as already stale. */
function expiryOf(token: string): number {
  try {
    const payload = token.split('.')[1] ?? '';
    const { exp } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as {
      exp?: unknown;
    };
    return typeof exp === 'number' ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}
