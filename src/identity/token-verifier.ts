import {
  Code,
  ConnectError,
  createContextKey,
  type HandlerContext,
  type Interceptor,
} from '@connectrpc/connect';
import { trace } from '@opentelemetry/api';
import type { OAuth2Client } from 'google-auth-library';
import type { Config } from '../config.js';
import { lazy } from '../lazy.js';
import { INFRASTRUCTURE_SERVICES } from '../rpc/index.js';
import type { Logger } from '../telemetry/logger.js';
import { markCallerRefusal } from './caller-refusal.js';
import { loadGoogleAuthLibrary } from './google-auth-library.js';
import { decodeJwtPart } from './jwt-part.js';
import {
  createSigningKeySource,
  MIN_REFETCH_INTERVAL_MS,
  type SigningKeys,
} from './signing-keys.js';

const GOOGLE_ISSUERS = ['https://accounts.google.com', 'accounts.google.com'];
/** A JWT is three base64url parts; anything longer than this is not a Google ID token. */
const MAX_TOKEN_LENGTH = 8 * 1024;
/** Google's key ids are 40 hex digits; this keeps a made-up one short in the log. */
const KEY_ID = /^[\w-]{1,128}$/;
/** google-auth-library's (`OAuth2Client.CLOCK_SKEW_SECS_`), on both `iat` and `exp`. */
const CLOCK_SKEW_SECONDS = 300;

/** `email` only when the token says Google verified it (`email_verified: true`). */
export type VerifiedCaller = { email: string | undefined; subject: string };

/** The verified caller of the current RPC, for handlers: `context.values.get(CALLER)`. */
export const CALLER = createContextKey<VerifiedCaller | undefined>(undefined, {
  description: 'verified caller',
});

/** Where the verified caller's service account is recorded on the server span. */
export const ATTR_CALLER_SERVICE_ACCOUNT = 'caller.service_account';

export type TokenVerifier = {
  /**
   * Connect's `requestGate`: runs on the headers, before the request body is read, so a caller
   * without a valid token cannot make the server read, decompress or parse anything.
   */
  requestGate(context: HandlerContext): Promise<void>;
  /** Puts the verified caller on the call's span (place it after the tracing interceptor). */
  recordCaller: Interceptor;
};

/**
 * The in-app check for running outside Cloud Run's IAM (Knative, GKE, a VM): a Google-signed
 * ID token for our audience, unexpired, from an allowed service account whose email is
 * verified. Health and reflection are exempt so probes and tools work without tokens. Refused
 * calls end before any span starts (as they would at Cloud Run's front end), so each is logged
 * here: at info with the reason in full (the token's audience, issuer or email where that is
 * the reason, never the token), while the caller gets the reason without claims.
 */
export function createTokenVerifier(config: Config, logger: Logger): TokenVerifier {
  const audience = audienceOf(config);
  const allowed = config.AUTH_ALLOWED_CALLERS ? new Set(config.AUTH_ALLOWED_CALLERS) : undefined;
  if (!allowed) {
    logger.warn(
      'AUTH_ALLOWED_CALLERS is not set: any Google service account, from any project, that asks for a token for this audience is let in. List the callers (comma-separated emails) to admit only them, as Cloud Run IAM would.',
    );
  }
  if (isCleartextRemote(config.AUTH_CERTS_URL)) {
    logger.warn(
      `AUTH_CERTS_URL (${config.AUTH_CERTS_URL}) is plain http:// to another host: whoever sits on the path can hand this service signing keys and so pass any token. Use https:// (Google's default is right), or http:// on loopback only.`,
    );
  }
  // Loaded with the first token to check, off the start-up path.
  const oauthClient = lazy(async () => new (await loadGoogleAuthLibrary()).OAuth2Client());
  const signingKeys = createSigningKeySource(config.AUTH_CERTS_URL, logger);

  async function keysFor(kid: string): Promise<SigningKeys> {
    try {
      return await signingKeys.forKid(kid);
    } catch (error) {
      // Our failure, not the caller's: UNAVAILABLE, which callers retry. Where the keys are
      // and why they failed is for our log only.
      throw refusal(
        Code.Unavailable,
        "cannot check ID tokens right now: the signing keys could not be fetched (the reason is in this service's log); call again later",
        `cannot check ID tokens right now: ${messageOf(error)} (AUTH_CERTS_URL)`,
      );
    }
  }

  async function checkSignedToken(token: string, jwt: DecodedJwt): Promise<JwtClaims> {
    const keys = await keysFor(jwt.kid);
    let verifier: OAuth2Client;
    try {
      verifier = await oauthClient();
    } catch (error) {
      throw refusal(
        Code.Unavailable,
        'cannot check ID tokens right now: call again later',
        `cannot check ID tokens right now: loading google-auth-library failed: ${messageOf(error)}`,
      );
    }
    try {
      await verifier.verifySignedJwtWithCertsAsync(token, keys, audience, GOOGLE_ISSUERS);
    } catch (error) {
      const { reason, detail } = libraryRefusal(messageOf(error), jwt, audience);
      throw refusal(
        Code.Unauthenticated,
        `invalid ID token: ${reason}`,
        `invalid ID token: ${reason}${detail ? `: ${detail}` : ''}`,
      );
    }
    return jwt.claims;
  }

  async function verify(authorization: string | null): Promise<VerifiedCaller> {
    const token = bearerTokenOf(authorization);
    const claims = await checkSignedToken(token, decodeJwt(token));
    const caller: VerifiedCaller = {
      email:
        typeof claims.email === 'string' && claims.email_verified === true
          ? claims.email
          : undefined,
      subject: typeof claims.sub === 'string' ? claims.sub : '',
    };
    if (allowed) checkAllowed(allowed, claims);
    return caller;
  }

  return {
    async requestGate(context) {
      if (INFRASTRUCTURE_SERVICES.has(context.service.typeName)) return;
      try {
        context.values.set(CALLER, await verify(context.requestHeader.get('authorization')));
      } catch (error) {
        const refused = ConnectError.from(error);
        const { code, rawMessage, cause } = refused;
        const fields = {
          rpc: `${context.service.typeName}/${context.method.name}`,
          code: Code[code],
        };
        const line = `call refused: ${typeof cause === 'string' ? cause : rawMessage}`;
        if (code === Code.Unavailable) {
          logger.warn(fields, line);
          throw refused;
        }
        logger.info(fields, line);
        throw markCallerRefusal(refused, 'id-token');
      }
    },
    recordCaller: (next) => (request) => {
      const email = request.contextValues.get(CALLER)?.email;
      if (email) trace.getActiveSpan()?.setAttribute(ATTR_CALLER_SERVICE_ACCOUNT, email);
      return next(request);
    },
  };
}

function audienceOf(config: Config): string {
  if (!config.AUTH_AUDIENCE) {
    throw new Error('AUTH_AUDIENCE is required when AUTH_VERIFY_TOKENS=true');
  }
  return config.AUTH_AUDIENCE;
}

type JwtClaims = Record<string, unknown>;
type DecodedJwt = { kid: string; claims: JwtClaims };

/** A refusal: `message` goes to the caller, `logged` (kept as the cause) to our INFO line. */
function refusal(code: Code, message: string, logged = message): ConnectError {
  return new ConnectError(message, code, undefined, undefined, logged);
}

function bearerTokenOf(authorization: string | null): string {
  const token = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1];
  if (!token) {
    throw refusal(
      Code.Unauthenticated,
      'missing bearer token: send a Google ID token as "authorization: Bearer <token>"',
    );
  }
  if (token.length > MAX_TOKEN_LENGTH) {
    throw refusal(Code.Unauthenticated, 'invalid ID token: too long');
  }
  return token;
}

/**
 * The token's key id and claims, read before anything is fetched, so that what is not even a
 * Google-shaped JWT is refused on its own. Nothing here is trusted until the signature is checked.
 */
function decodeJwt(token: string): DecodedJwt {
  const segments = token.split('.');
  const header = decodeJwtPart(segments[0]);
  const claims = decodeJwtPart(segments[1]);
  if (!header || !claims || segments.length !== 3 || !segments[2]) {
    throw refusal(
      Code.Unauthenticated,
      'invalid ID token: not a JWT (three base64url parts: header, claims, signature)',
    );
  }
  if (header.alg !== 'RS256' || typeof header.kid !== 'string' || !KEY_ID.test(header.kid)) {
    throw refusal(
      Code.Unauthenticated,
      "invalid ID token: not signed with RS256 and a key id (kid), as Google's ID tokens are",
    );
  }
  return { kid: header.kid, claims };
}

/**
 * The allow-list matches the token's email (lower case, as Google's service-account emails
 * are) and only when Google says the email is verified.
 */
function checkAllowed(allowed: ReadonlySet<string>, claims: JwtClaims): void {
  const email = typeof claims.email === 'string' ? claims.email.toLowerCase() : undefined;
  let why: string | undefined;
  if (email === undefined) {
    why =
      'caller (token has no email: ask for format=full / includeEmail) is not in AUTH_ALLOWED_CALLERS';
  } else if (!allowed.has(email)) {
    why = `caller ${quote(email)} is not in AUTH_ALLOWED_CALLERS`;
  } else if (claims.email_verified !== true) {
    why = `caller ${quote(email)} is in AUTH_ALLOWED_CALLERS, but its token says email_verified ${quote(claims.email_verified)}, not true`;
  }
  if (why) {
    throw refusal(
      Code.PermissionDenied,
      'this caller is not allowed (AUTH_ALLOWED_CALLERS)',
      `this caller is not allowed: ${why}`,
    );
  }
}

type LibraryRefusal = { reason: string; detail?: string };

/**
 * google-auth-library's messages quote the token or its claims, so none is passed on: each is
 * mapped to our own reason, and the log's detail names only the claim at fault. The claims
 * named are those of a token whose signature has already been checked (the library checks
 * times, issuer and audience after the signature).
 */
const LIBRARY_REFUSALS: ReadonlyArray<
  readonly [prefix: string, refusal: (jwt: DecodedJwt, audience: string) => LibraryRefusal]
> = [
  ['Wrong number of segments', () => ({ reason: 'not a JWT' })],
  ["Can't parse token envelope", () => ({ reason: 'its header is not base64url JSON' })],
  ["Can't parse token payload", () => ({ reason: 'its claims are not base64url JSON' })],
  [
    'No pem found for envelope',
    (jwt) => ({
      reason: 'signed by a key that is not in the published key set',
      detail: `key id ${quote(jwt.kid)} is not at AUTH_CERTS_URL (fetched again for an unknown key at most every ${MIN_REFETCH_INTERVAL_MS / 1000} s)`,
    }),
  ],
  ['Invalid token signature', () => ({ reason: 'bad signature' })],
  ['No issue time in token', () => ({ reason: 'no issue time (iat)' })],
  ['No expiration time in token', () => ({ reason: 'no expiry (exp)' })],
  ['iat field using invalid format', () => ({ reason: 'its issue time (iat) is not a number' })],
  ['exp field using invalid format', () => ({ reason: 'its expiry (exp) is not a number' })],
  [
    'Expiration time too far in future',
    (jwt) => ({
      reason: 'expires more than a day ahead, which no Google ID token does',
      detail: `exp ${isoOf(jwt.claims.exp)}`,
    }),
  ],
  [
    'Token used too early',
    (jwt) => ({
      reason: 'issued in the future',
      detail: `iat ${isoOf(jwt.claims.iat)} is more than ${CLOCK_SKEW_SECONDS} s (the clock skew allowed) after this server's clock, ${new Date().toISOString()}: check the clocks`,
    }),
  ],
  [
    'Token used too late',
    (jwt) => ({
      reason: 'expired',
      detail: `exp ${isoOf(jwt.claims.exp)} is more than ${CLOCK_SKEW_SECONDS} s (the clock skew allowed) before this server's clock, ${new Date().toISOString()}`,
    }),
  ],
  [
    'Invalid issuer',
    (jwt) => ({
      reason: 'not issued by Google (wrong issuer, iss)',
      detail: `token issuer ${quote(jwt.claims.iss)} is not one of ${GOOGLE_ISSUERS.map(quote).join(', ')}`,
    }),
  ],
  [
    'Wrong recipient',
    (jwt, audience) => ({
      reason: 'for another audience (aud)',
      detail: `token aud ${quote(jwt.claims.aud)} is not AUTH_AUDIENCE ${quote(audience)}`,
    }),
  ],
];

function libraryRefusal(message: string, jwt: DecodedJwt, audience: string): LibraryRefusal {
  const known = LIBRARY_REFUSALS.find(([prefix]) => message.startsWith(prefix));
  return known ? known[1](jwt, audience) : { reason: 'not accepted' };
}

/** A claim for the log: JSON, at most 200 characters. */
function quote(value: unknown): string {
  const json = JSON.stringify(value) ?? String(value);
  return json.length > 200 ? `${json.slice(0, 197)}...` : json;
}

function isoOf(seconds: unknown): string {
  const ms = Number(seconds) * 1000;
  return Number.isFinite(ms) && Math.abs(ms) < 8.64e15
    ? new Date(ms).toISOString()
    : quote(seconds);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** http:// to a host other than this one: the keys could be swapped on the way. */
function isCleartextRemote(url: string): boolean {
  const { protocol, hostname } = new URL(url);
  if (protocol !== 'http:') return false;
  return !(
    hostname === 'localhost' ||
    hostname === '[::1]' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
  );
}
