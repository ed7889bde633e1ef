import { X509Certificate } from 'node:crypto';
import type { Logger } from '../telemetry/logger.js';

/** Signing certificates as PEM by key id: Google's v1 format (`oauth2/v1/certs`). */
export type SigningKeys = Record<string, string>;

export type SigningKeySource = {
  /**
   * The key set to check a token signed with key `kid` against. A key id not in the set held
   * makes it fetch the set again (a key rotation), at most once per `MIN_REFETCH_INTERVAL_MS`
   * for unknown key ids. With no set held, a failed fetch is tried again at most once per
   * `RETRY_AFTER_FAILURE_MS`; the calls in between get its failure.
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
/** With no key set held, so that callers (their tokens unchecked yet) cannot drive fetches. */
const RETRY_AFTER_FAILURE_MS = 5_000;
const FETCH_TIMEOUT_MS = 5_000;
/** Google's answer is a few KiB; one far larger is not a key set, and is not read to its end. */
const MAX_ANSWER_BYTES = 1024 * 1024;

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
  let lastFailure: { error: unknown; at: number } | undefined;
  let warnedStale = false;

  const fetchAgain = (): Promise<HeldKeys> => {
    if (pending) return pending;
    lastFetchAt = Date.now();
    pending = fetchSigningKeys(url)
      .then((fetched) => {
        if (warnedStale) logger.info(`signing keys fetched again from AUTH_CERTS_URL (${url})`);
        warnedStale = false;
        lastFailure = undefined;
        held = fetched;
        return fetched;
      })
      .catch((error: unknown) => {
        lastFailure = { error, at: Date.now() };
        throw error;
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
      if (!held) {
        if (!pending && lastFailure && now - lastFailure.at < RETRY_AFTER_FAILURE_MS) {
          throw lastFailure.error;
        }
        return (await fetchAgain()).keys;
      }
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
  let text = '';
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (response.ok) text = await readCapped(response);
    else await response.body?.cancel();
  } catch (error) {
    throw new Error(`fetching ${url} failed: ${messageOf(error)}`);
  }
  if (!response.ok) throw new Error(`${url} answered HTTP ${response.status}`);
  const body = parseJson(text);
  if (!isRsaCertificateMap(body)) throw new Error(`${url} ${notAKeySet(body)}`);
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

/** The body as text, refused past `MAX_ANSWER_BYTES` without reading the rest. */
async function readCapped(response: Response): Promise<string> {
  if (Number(response.headers.get('content-length')) > MAX_ANSWER_BYTES) {
    await response.body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for await (const chunk of response.body ?? []) {
    bytes += chunk.length;
    if (bytes > MAX_ANSWER_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function tooLarge(): Error {
  return new Error(`the answer is over ${MAX_ANSWER_BYTES} bytes: it is not a key set`);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Why an answer is not Google's v1 key set, with the JWK (v3) URL named when it is that. */
function notAKeySet(body: unknown): string {
  const v1 =
    "AUTH_CERTS_URL takes Google's v1 format: RSA certificates (PEM) by key id, as https://www.googleapis.com/oauth2/v1/certs answers";
  if (body === undefined) return `did not answer with JSON; ${v1}`;
  if (isObject(body) && Array.isArray(body.keys)) return `answered a JWK set (v3); ${v1}`;
  return `did not answer with RSA certificates (PEM) by key id; ${v1}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isRsaCertificateMap(value: unknown): value is Record<string, string> {
  return isObject(value) && Object.values(value).every(isRsaCertificate);
}

/** Google signs ID tokens with RSA (RS256): a key of another type must not verify one. */
function isRsaCertificate(pem: unknown): boolean {
  if (typeof pem !== 'string') return false;
  try {
    return new X509Certificate(pem).publicKey.asymmetricKeyType === 'rsa';
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
