import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import type { Logger } from '../telemetry/logger.js';
import { isTokenRefusal } from './caller-refusal.js';
import { createGoogleIdTokenSource } from './google-id-token-source.js';
import { decodeJwtPart } from './jwt-part.js';
import { settledOrAborted } from './settled-or-aborted.js';

/** Refresh this long before expiry, so a token never expires on the wire. */
const REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;
/** A token source that does not answer in this time is reported as down, and its request ended. */
const FETCH_TIMEOUT_MS = 3_000;
/** Below this much remaining lifetime a token is not sent: it could expire on the wire. */
const STILL_USABLE_MS = 60_000;
/** After a failed refresh, calls use the token in hand this long before asking again. */
const QUIET_AFTER_FAILURE_MS = 10_000;
/** After the backend refused a token, another refusal forgets the next one only this much later. */
const REFETCH_AFTER_REFUSAL_MS = 15_000;
/** Google's ID tokens live an hour: one that claims more is not kept longer. */
const MAX_LIFETIME_MS = 60 * 60_000;
/** A compact JWS: three base64url parts. Nothing else may reach a header. */
const COMPACT_JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

export type IdTokenCredentials = {
  /** The `authorization` header value; throws a credentials error (see isCredentialsError). */
  authorization(): Promise<string>;
  /**
   * The backend refused this `authorization` value (see isTokenRefusal): forget the token, so
   * that the next call fetches another; at most once every 15 s.
   */
  refused(authorization: string): void;
};

const CREDENTIALS_FAILURE = Symbol('credentials failure');

/**
 * Whether an error is a failure to obtain credentials, as opposed to a failure of the backend.
 * (A tag, not a subclass: Connect only passes through errors that are plain ConnectErrors.)
 */
export function isCredentialsError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && CREDENTIALS_FAILURE in error;
}

/** The reason is in the message, once: no `cause`, whose message the log line would repeat. */
function credentialsError(audience: string, reason: string): ConnectError {
  const error = new ConnectError(
    `could not get a Google ID token for audience ${audience}: ${reason}`,
    Code.Unavailable,
  );
  Object.defineProperty(error, CREDENTIALS_FAILURE, { value: true });
  return error;
}

type CachedToken = { token: string; expiresAt: number };

/** Asks for a token; `signal` is aborted when the answer is no longer waited for. */
export type IdTokenSource = (audience: string, signal: AbortSignal) => Promise<string>;

/** Where a refresh that fails while calls go on with the token in hand is reported. */
export type RefreshLogger = Pick<Logger, 'warn' | 'info'>;

/**
 * Google ID tokens for calling a private Cloud Run service, minted by google-auth-library (the
 * metadata server on Cloud Run; a service-account key or impersonated credentials locally).
 * Only a JWT with at least a minute left is taken from the source: any other answer is a
 * credentials error that does not quote it, and is not kept. Cached per audience; from five
 * minutes before expiry each call sends the token in hand and sets off a refresh in the
 * background (one at a time, and none for 10 s after one failed), so a slow or failing source
 * delays no call while that token has a minute or more left. Only a call without such a token
 * waits for the source, at most 3 s. A token the backend refuses is forgotten, so that the next
 * call fetches a new one (a new signing key, a key set the backend had not yet fetched).
 * Fetched before the RPC starts, so a slow token source is not mistaken for a slow backend.
 * A background refresh that fails is no call's failure: `logger` gets one WARNING when refreshes
 * start failing and one INFO line when a token is fetched again, not a line per attempt.
 */
export function createIdTokenCredentials(
  audience: string,
  source: IdTokenSource = createGoogleIdTokenSource(),
  logger?: RefreshLogger,
): IdTokenCredentials {
  let cached: CachedToken | undefined;
  let pending: Promise<CachedToken> | undefined;
  let quietUntil = 0;
  let forgetAgainAt = 0;
  /** Background refreshes failed since the last token fetched; warned at the first. */
  let failedRefreshes = 0;

  const refreshFailed = (error: unknown, inHand: CachedToken) => {
    quietUntil = Date.now() + QUIET_AFTER_FAILURE_MS;
    failedRefreshes++;
    if (failedRefreshes > 1) return;
    const reason = error instanceof ConnectError ? error.rawMessage : String(error);
    const sentUntil = new Date(inHand.expiresAt - STILL_USABLE_MS).toISOString();
    logger?.warn(
      `the ID token for the backend could not be refreshed in the background: ${reason.replace(/\.$/, '')}. Calls go on with the token in hand until ${sentUntil}, trying again at most every ${QUIET_AFTER_FAILURE_MS / 1000} s; if it still fails then, calls fail with 503 until a token is fetched.`,
    );
  };

  async function refresh(): Promise<CachedToken> {
    const signal = AbortSignal.timeout(FETCH_TIMEOUT_MS);
    let answer: unknown;
    try {
      answer = await settledOrAborted(source(audience, signal), signal);
    } catch (error) {
      throw credentialsError(
        audience,
        signal.aborted
          ? `the token source did not answer within ${FETCH_TIMEOUT_MS} ms; the next call asks again`
          : `${(error instanceof Error ? error.message : String(error)).replace(/\.$/, '')}. On Cloud Run check the ` +
              'service account of this service; locally set GOOGLE_APPLICATION_CREDENTIALS to ' +
              'impersonated or service-account credentials.',
      );
    }
    const checked = checkIdToken(answer, Date.now());
    if (typeof checked === 'string') throw credentialsError(audience, checked);
    cached = checked;
    if (failedRefreshes > 0) {
      logger?.info(
        `the ID token for the backend (audience ${audience}) was fetched again after ${failedRefreshes} failed background refresh${failedRefreshes === 1 ? '' : 'es'}`,
      );
      failedRefreshes = 0;
    }
    return checked;
  }

  const refreshOnce = (): Promise<CachedToken> => {
    pending ??= refresh().finally(() => {
      pending = undefined;
    });
    return pending;
  };

  return {
    async authorization() {
      const now = Date.now();
      const left = cached ? cached.expiresAt - now : 0;
      if (cached && left > STILL_USABLE_MS) {
        // One refresh at a time, and one report of its failure.
        if (left <= REFRESH_BEFORE_EXPIRY_MS && now >= quietUntil && !pending) {
          const inHand = cached;
          refreshOnce().catch((error: unknown) => refreshFailed(error, inHand));
        }
        return `Bearer ${cached.token}`;
      }
      return `Bearer ${(await refreshOnce()).token}`;
    },
    refused(authorization) {
      const now = Date.now();
      if (!cached || authorization !== `Bearer ${cached.token}` || now < forgetAgainAt) return;
      cached = undefined;
      quietUntil = 0;
      forgetAgainAt = now + REFETCH_AFTER_REFUSAL_MS;
    },
  };
}

/**
 * Gives every call attempt its `authorization` header, asked of `credentials` each time, so that
 * a retry never sends a token that expired meanwhile; tells them when the backend refused it.
 * Placed outside the tracing interceptor: a slow or failing token source is not counted as the
 * backend's time or failure.
 */
export function createCredentialsInterceptor(credentials: IdTokenCredentials): Interceptor {
  return (next) => async (req) => {
    const authorization = await credentials.authorization();
    req.header.set('authorization', authorization);
    try {
      return await next(req);
    } catch (error) {
      if (error instanceof ConnectError && isTokenRefusal(error)) {
        credentials.refused(authorization);
      }
      throw error;
    }
  };
}

/**
 * The token and its expiry, or what is wrong with the answer, in words that never quote it:
 * whatever answered may have sent a valid token with something after it.
 */
function checkIdToken(answer: unknown, now: number): CachedToken | string {
  if (typeof answer !== 'string' || !COMPACT_JWT.test(answer)) {
    return 'the token source answered something that is not an ID token (a JWT). On Cloud Run this is the metadata server; locally check GCE_METADATA_HOST and GOOGLE_APPLICATION_CREDENTIALS';
  }
  const exp = expiryOf(answer);
  if (exp === undefined) {
    return 'the token source answered a JWT without a numeric expiry (exp): not an ID token';
  }
  const expiresAt = exp * 1000;
  if (expiresAt - now <= STILL_USABLE_MS) {
    const when = new Date(expiresAt).toISOString();
    const clock = new Date(now).toISOString();
    return expiresAt <= now
      ? `the token source answered an ID token that expired at ${when} (this clock: ${clock}): check the clock`
      : `the token source answered an ID token that expires at ${when}, in less than ${STILL_USABLE_MS / 1000} s (this clock: ${clock}): check the clock`;
  }
  return { token: answer, expiresAt: Math.min(expiresAt, now + MAX_LIFETIME_MS) };
}

/** `exp` from the JWT payload, in seconds; undefined when there is no date to read. */
function expiryOf(token: string): number | undefined {
  const exp = decodeJwtPart(token.split('.')[1])?.exp;
  return typeof exp === 'number' && !Number.isNaN(new Date(exp * 1000).getTime()) ? exp : undefined;
}
