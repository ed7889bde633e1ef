import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { loadGoogleAuthLibrary } from './google-auth-library.js';

/** Refresh this long before expiry, so a token never expires on the wire. */
const REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;
/** A token source that does not answer in this time is reported as down. */
const FETCH_TIMEOUT_MS = 3_000;
/** Below this much remaining lifetime a token is not sent: it could expire on the wire. */
const STILL_USABLE_MS = 60_000;
/** After a failed refresh, calls use the token in hand this long before asking again. */
const QUIET_AFTER_FAILURE_MS = 10_000;

export type IdTokenCredentials = {
  /** The `authorization` header value; throws a credentials error (see isCredentialsError). */
  authorization(): Promise<string>;
};

const CREDENTIALS_FAILURE = Symbol('credentials failure');

/**
 * Whether an error is a failure to obtain credentials, as opposed to a failure of the backend.
 * (A tag, not a subclass: Connect only passes through errors that are plain ConnectErrors.)
 */
export function isCredentialsError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && CREDENTIALS_FAILURE in error;
}

function credentialsError(message: string, cause: unknown): ConnectError {
  const error = new ConnectError(message, Code.Unavailable, undefined, undefined, cause);
  Object.defineProperty(error, CREDENTIALS_FAILURE, { value: true });
  return error;
}

type CachedToken = { token: string; expiresAt: number };

export type IdTokenSource = (audience: string) => Promise<string>;

/**
 * Google ID tokens for calling a private Cloud Run service, minted by google-auth-library (the
 * metadata server on Cloud Run; a service-account key or impersonated credentials locally).
 * Cached per audience and refreshed from five minutes before expiry. If the refresh fails while
 * the token in hand still has a minute or more, that token is sent (and the source left alone
 * for 10 s), so a token source that is down or slow for a while fails no call. A failure is
 * retried by a later call with a fresh client, because google-auth-library remembers a failed
 * metadata-server probe. Fetched before the RPC starts, so a slow token source is not mistaken
 * for a slow backend.
 */
export function createIdTokenCredentials(
  audience: string,
  source: IdTokenSource = fetchIdToken,
): IdTokenCredentials {
  let cached: CachedToken | undefined;
  let pending: Promise<string> | undefined;

  async function refresh(): Promise<string> {
    try {
      const token = await withTimeout(source(audience), FETCH_TIMEOUT_MS);
      cached = { token, expiresAt: expiryOf(token) };
      return token;
    } catch (error) {
      throw credentialsError(
        `could not get a Google ID token for audience ${audience}: ${error instanceof Error ? error.message : String(error)}. ` +
          'On Cloud Run check the service account of this service; locally set ' +
          'GOOGLE_APPLICATION_CREDENTIALS to impersonated or service-account credentials.',
        error,
      );
    }
  }

  const refreshOnce = (): Promise<string> => {
    pending ??= refresh().finally(() => {
      pending = undefined;
    });
    return pending;
  };
  let quietUntil = 0;

  return {
    async authorization() {
      const left = cached ? cached.expiresAt - Date.now() : 0;
      if (cached && left > REFRESH_BEFORE_EXPIRY_MS) return `Bearer ${cached.token}`;
      const usable = cached && left > STILL_USABLE_MS ? cached.token : undefined;
      if (usable && Date.now() < quietUntil) return `Bearer ${usable}`;
      try {
        return `Bearer ${await refreshOnce()}`;
      } catch (error) {
        // The token source is down or slow, but the token in hand is still good for a while.
        if (!usable) throw error;
        quietUntil = Date.now() + QUIET_AFTER_FAILURE_MS;
        return `Bearer ${usable}`;
      }
    },
  };
}

/**
 * Gives every call attempt its `authorization` header, asked of `credentials` each time, so that
 * a retry never sends a token that expired meanwhile. Placed outside the tracing interceptor: a
 * slow or failing token source is not counted as the backend's time or failure.
 */
export function createCredentialsInterceptor(credentials: IdTokenCredentials): Interceptor {
  return (next) => async (req) => {
    req.header.set('authorization', await credentials.authorization());
    return next(req);
  };
}

async function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function fetchIdToken(audience: string): Promise<string> {
  const { GoogleAuth, gcpMetadata } = await loadGoogleAuthLibrary();
  try {
    const client = await new GoogleAuth().getIdTokenClient(audience);
    return await client.idTokenProvider.fetchIdToken(audience);
  } catch (error) {
    // gcp-metadata remembers "no metadata server" for the life of the process; forget it so
    // the next call can succeed once the metadata server answers again.
    gcpMetadata.resetIsAvailableCache();
    throw error;
  }
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
