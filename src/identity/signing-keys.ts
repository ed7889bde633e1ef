import { X509Certificate } from 'node:crypto';
import type { Logger } from '../telemetry/logger.js';

/** Signing certificates as PEM by key id: Google's v1 format (`oauth2/v1/certs`). */
export type SigningKeys = Record<string, string>;

export type SigningKeySource = {
  /**
   * The key set to check a token signed with key `kid` against. A key id not in the set held
   * makes it fetch the set again (a key rotation), at most once per `MIN_REFETCH_INTERVAL_MS`
   * for unknown key ids, and as often after a failed fetch.
   * Rejects when no usable set can be had: the fault is ours, never the caller's.
   */
  forKid(kid: string): Promise<SigningKeys>;
};

/** How long a key set is kept when its answer has no `Cache-Control: max-age`. */
const DEFAULT_MAX_AGE_MS = 60 * 60_000;
const MIN_MAX_AGE_MS = 60_000;
const MAX_MAX_AGE_MS = 24 * 60 * 60_000;
/** So that tokens naming made-up key ids, or a failing URL, cannot drive fetches. */
export const MIN_REFETCH_INTERVAL_MS = 30_000;
/** How long past its max-age a key set is still used while fetching a new one fails. */
export const STALE_GRACE_MS = 60 * 60_000;
const FETCH_TIMEOUT_MS = 5_000;

type HeldKeys = { keys: SigningKeys; fetchedAt: number; expiresAt: number };

/**
 * The signing keys at `url`, kept for their answer's max-age, fetched again for an unknown key
 * id, and used for up to `STALE_GRACE_MS` past their max-age while the URL fails (with one
 * WARNING line). google-auth-library's own cache keeps them by max-age too.
 */
export function createSigningKeySource(url: string, logger: Logger): SigningKeySource {
  let held: HeldKeys | undefined;
  let pending: Promise<HeldKeys> | undefined;
  let lastFetchAt = Number.NEGATIVE_INFINITY;
  let lastUnknownKidFetchAt = Number.NEGATIVE_INFINITY;
  let warnedStale = false;

  const fetchAgain = (): Promise<HeldKeys> => {
    if (pending) return pending;
    lastFetchAt = Date.now();
    pending = fetchSigningKeys(url)
      .then((fetched) => {
        if (warnedStale) logger.info(`signing keys fetched again from AUTH_CERTS_URL (${url})`);
        warnedStale = false;
        held = fetched;
        return fetched;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };

  const warnStale = (stale: HeldKeys, error: unknown) => {
    if (warnedStale) return;
    warnedStale = true;
    logger.warn(
      `could not fetch the signing keys again (AUTH_CERTS_URL): ${messageOf(error)}. Tokens are checked with the keys fetched at ${iso(stale.fetchedAt)} until ${iso(stale.expiresAt + STALE_GRACE_MS)}; after that every call gets UNAVAILABLE until the URL answers. Check the URL and this service's egress.`,
    );
  };

  return {
    async forKid(kid) {
      const now = Date.now();
      if (held && now >= held.expiresAt + STALE_GRACE_MS) held = undefined;
      if (!held) return (await fetchAgain()).keys;
      if (!Object.hasOwn(held.keys, kid)) {
        if (pending) return (await pending).keys;
        if (now - lastUnknownKidFetchAt < MIN_REFETCH_INTERVAL_MS) return held.keys;
        lastUnknownKidFetchAt = now;
        return (await fetchAgain()).keys;
      }
      if (now >= held.expiresAt && !pending && now - lastFetchAt >= MIN_REFETCH_INTERVAL_MS) {
        // The token's key is known: answer with the set in hand and renew it meanwhile.
        const stale = held;
        fetchAgain().catch((error: unknown) => warnStale(stale, error));
      }
      return held.keys;
    },
  };
}

async function fetchSigningKeys(url: string): Promise<HeldKeys> {
  let response: Response;
  let body: unknown;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    body = response.ok ? await response.json().catch(() => undefined) : undefined;
  } catch (error) {
    throw new Error(`fetching ${url} failed: ${messageOf(error)}`);
  }
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  if (!isPemMap(body)) {
    throw new Error(
      `${url} did not answer with PEM certificates by key id; AUTH_CERTS_URL takes Google's v1 format (https://www.googleapis.com/oauth2/v1/certs), not JWK (v3)`,
    );
  }
  if (Object.keys(body).length === 0) {
    throw new Error(`${url} answered an empty key set: no token could be checked against it`);
  }
  const fetchedAt = Date.now();
  return {
    keys: body,
    fetchedAt,
    expiresAt: fetchedAt + maxAgeOf(response.headers.get('cache-control')),
  };
}

/** `Cache-Control: max-age`, kept between a minute and a day; an hour when absent. */
export function maxAgeOf(cacheControl: string | null): number {
  const seconds = /(?:^|[,\s])max-age\s*=\s*"?(\d{1,10})"?/i.exec(cacheControl ?? '')?.[1];
  if (seconds === undefined) return DEFAULT_MAX_AGE_MS;
  return Math.min(MAX_MAX_AGE_MS, Math.max(MIN_MAX_AGE_MS, Number(seconds) * 1000));
}

function isPemMap(value: unknown): value is Record<string, string> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every(isCertificate)
  );
}

function isCertificate(pem: unknown): boolean {
  if (typeof pem !== 'string') return false;
  try {
    new X509Certificate(pem);
    return true;
  } catch {
    return false;
  }
}

/** The error's message, with undici's reason (`fetch failed` says nothing) and timeouts named. */
function messageOf(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error.name === 'TimeoutError') return `no answer within ${FETCH_TIMEOUT_MS} ms`;
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${error.message}${cause}`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
