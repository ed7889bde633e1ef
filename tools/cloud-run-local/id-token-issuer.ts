import { createHash, X509Certificate } from 'node:crypto';
import { type JsonObject, signRs256Jwt } from './jwt.ts';
import { createSelfSignedCertificate } from './self-signed-certificate.ts';

export const GOOGLE_ISSUER = 'https://accounts.google.com';

export interface IssueIdTokenOptions {
  audience: string;
  email: string;
  /** Add `email` and `email_verified`, as the metadata server does for `format=full`. */
  includeEmail: boolean;
  /** Seconds since the epoch; default now. */
  issuedAt?: number;
  /** Default 3600, as Google's. Negative values give a token that is already expired. */
  expiresInSeconds?: number;
}

export interface IdTokenIssuer {
  kid: string;
  certificatePem: string;
  /** Google's `oauth2/v1/certs` shape: kid to PEM certificate. */
  pemCertificates(): Record<string, string>;
  /** Google's `oauth2/v3/certs` shape. */
  jwks(): { keys: JsonObject[] };
  issue(options: IssueIdTokenOptions): string;
}

/** Signs Google-shaped ID tokens (RS256, `kid` header) with a key made for this process. */
export async function createIdTokenIssuer(): Promise<IdTokenIssuer> {
  const { privateKey, certificatePem } = await createSelfSignedCertificate({
    commonName: 'cloud-run-local id token signer',
  });
  const publicKey = new X509Certificate(certificatePem).publicKey;
  const kid = createHash('sha1')
    .update(publicKey.export({ type: 'spki', format: 'der' }))
    .digest('hex');
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  return {
    kid,
    certificatePem,
    pemCertificates: () => ({ [kid]: certificatePem }),
    jwks: () => ({ keys: [jwk] }),
    issue(options) {
      const iat = options.issuedAt ?? Math.floor(Date.now() / 1000);
      const subject = numericId(options.email, 21);
      const claims: JsonObject = { aud: options.audience, azp: subject };
      if (options.includeEmail) {
        claims.email = options.email;
        claims.email_verified = true;
      }
      Object.assign(claims, {
        exp: iat + (options.expiresInSeconds ?? 3600),
        iat,
        iss: GOOGLE_ISSUER,
        sub: subject,
      });
      return signRs256Jwt({ alg: 'RS256', kid, typ: 'JWT' }, claims, privateKey);
    },
  };
}

/** A stable decimal id of `digits` digits (first digit 1) derived from `seed`. */
export function numericId(seed: string, digits: number): string {
  const hash = createHash('sha256').update(seed).digest('hex');
  const value = BigInt(`0x${hash}`).toString().padStart(digits, '0');
  return `1${value.slice(0, digits - 1)}`;
}
