import { execFile } from 'node:child_process';
import { createPublicKey, verify } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OAuth2Client } from 'google-auth-library';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MetadataServer, startMetadataServer } from '../tools/cloud-run-local/index.js';

const execFileAsync = promisify(execFile);
const AUDIENCE = 'https://backend-abc123-uc.a.run.app';
const GOOGLE = ['https://accounts.google.com'];

let metadata: MetadataServer;
let emptyGcloudConfig: string;

beforeAll(async () => {
  metadata = await startMetadataServer({
    serviceAccountEmail: 'api-caller@demo-project.iam.gserviceaccount.com',
    projectId: 'demo-project',
  });
  emptyGcloudConfig = await mkdtemp(join(tmpdir(), 'cloud-run-local-gcloud-'));
});

afterAll(async () => {
  await metadata.close();
  await rm(emptyGcloudConfig, { recursive: true, force: true });
});

function get(path: string, headers: Record<string, string> = { 'metadata-flavor': 'Google' }) {
  return fetch(`${metadata.url}${path}`, { headers });
}

async function certs(): Promise<Record<string, string>> {
  return (await (await fetch(metadata.certsUrl)).json()) as Record<string, string>;
}

function claims(token: string): Record<string, unknown> {
  const payload = token.split('.')[1] ?? '';
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** google-auth-library in its own process: gcp-metadata caches its first probe per process. */
async function idTokenFromGoogleAuthLibrary(audience: string) {
  const script = `
    import { GoogleAuth } from 'google-auth-library';
    const auth = new GoogleAuth();
    const client = await auth.getIdTokenClient(process.argv[1]);
    const first = (await client.getRequestHeaders()).get('authorization');
    const second = (await client.getRequestHeaders()).get('authorization');
    const projectId = await auth.getProjectId();
    const { client_email } = await auth.getCredentials();
    console.log(JSON.stringify({ first, second, projectId, email: client_email }));`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    GCE_METADATA_HOST: metadata.host,
    // Keep a developer's gcloud ADC out of the way.
    CLOUDSDK_CONFIG: emptyGcloudConfig,
    HOME: emptyGcloudConfig,
  };
  const { stdout } = await execFileAsync(
    process.execPath,
    ['--input-type=module', '-e', script, audience],
    { cwd: process.cwd(), env, timeout: 20_000 },
  );
  return JSON.parse(stdout) as { first: string; second: string; projectId: string; email: string };
}

describe('metadata server protocol', () => {
  it.each([
    '/',
    '/computeMetadata/v1/instance',
    '/computeMetadata/v1/project/project-id',
    '/computeMetadata/v1/instance/service-accounts/default/identity?audience=x',
  ])('rejects %s without Metadata-Flavor: Google', async (path) => {
    const response = await get(path, {});
    expect(response.status).toBe(403);
    expect(response.headers.get('metadata-flavor')).toBe('Google');
    expect(await response.text()).toContain('Metadata-Flavor');
    expect((await get(path, { 'metadata-flavor': 'google-ish' })).status).toBe(403);
  });

  it.each([
    ['/computeMetadata/v1/project/project-id', 'demo-project'],
    [
      '/computeMetadata/v1/instance/service-accounts/default/email',
      'api-caller@demo-project.iam.gserviceaccount.com',
    ],
    ['/computeMetadata/v1/universe/universe-domain', 'googleapis.com'],
  ])('answers %s', async (path, expected) => {
    const response = await get(path);
    expect(response.status).toBe(200);
    expect(response.headers.get('metadata-flavor')).toBe('Google');
    expect(await response.text()).toBe(expected);
  });

  it('answers the probes, ids and region gcp-metadata and the GCP resource detector read', async () => {
    expect((await get('/computeMetadata/v1/instance')).status).toBe(200);
    expect(await (await get('/computeMetadata/v1/project/numeric-project-id')).text()).toMatch(
      /^\d{12}$/,
    );
    expect(await (await get('/computeMetadata/v1/instance/region')).text()).toMatch(
      /^projects\/\d{12}\/regions\/us-central1$/,
    );
    expect((await get('/computeMetadata/v1/instance/machine-type')).status).toBe(404);
  });

  it('hands out an opaque access token that lasts 3599 seconds', async () => {
    const response = await get('/computeMetadata/v1/instance/service-accounts/default/token');
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 3599 });
    expect(body.access_token).toEqual(expect.any(String));
  });

  it('needs an audience for identity, and adds email claims only for format=full', async () => {
    const path = '/computeMetadata/v1/instance/service-accounts/default/identity';
    expect((await get(path)).status).toBe(400);
    const standard = claims(await (await get(`${path}?audience=${AUDIENCE}`)).text());
    expect(standard).not.toHaveProperty('email');
    const full = claims(await (await get(`${path}?audience=${AUDIENCE}&format=full`)).text());
    expect(full).toMatchObject({
      aud: AUDIENCE,
      iss: 'https://accounts.google.com',
      email: metadata.serviceAccountEmail,
      email_verified: true,
    });
    expect(full.sub).toMatch(/^\d{21}$/);
    expect(full.azp).toBe(full.sub);
    expect(Number(full.exp) - Number(full.iat)).toBe(3600);
  });

  it('answers 503 while down and delays answers when told', async () => {
    metadata.setDown(true);
    try {
      expect((await get('/computeMetadata/v1/project/project-id')).status).toBe(503);
      expect((await fetch(metadata.certsUrl)).status).toBe(200);
    } finally {
      metadata.setDown(false);
    }
    metadata.setDelayMs(300);
    try {
      const started = performance.now();
      expect((await get('/computeMetadata/v1/project/project-id')).status).toBe(200);
      expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    } finally {
      metadata.setDelayMs(0);
    }
  });
});

describe('ID tokens', () => {
  it('are fetched by google-auth-library and verified with the published certificates', async () => {
    const before = metadata.idTokenRequests();
    const result = await idTokenFromGoogleAuthLibrary(AUDIENCE);
    expect(result.first).toMatch(/^Bearer ey/);
    expect(result.second).toBe(result.first);
    expect(metadata.idTokenRequests() - before).toBe(1);
    expect(result.projectId).toBe('demo-project');
    expect(result.email).toBe(metadata.serviceAccountEmail);

    const token = result.first.slice('Bearer '.length);
    const ticket = await new OAuth2Client().verifySignedJwtWithCertsAsync(
      token,
      await certs(),
      AUDIENCE,
      GOOGLE,
    );
    expect(ticket.getPayload()?.email).toBe(metadata.serviceAccountEmail);

    // The library's own download of PEM certificates accepts the certs URL's shape too.
    const client = new OAuth2Client({
      endpoints: { oauth2FederatedSignonPemCertsUrl: metadata.certsUrl },
    });
    const viaDownload = await client.verifyIdToken({ idToken: token, audience: AUDIENCE });
    expect(viaDownload.getPayload()?.aud).toBe(AUDIENCE);
  }, 30_000);

  it('minted directly verify too, and the JWKS carries the same key', async () => {
    const token = metadata.mintIdToken(AUDIENCE, {
      email: 'other@demo-project.iam.gserviceaccount.com',
    });
    const ticket = await new OAuth2Client().verifySignedJwtWithCertsAsync(
      token,
      await certs(),
      AUDIENCE,
      GOOGLE,
    );
    expect(ticket.getPayload()?.email).toBe('other@demo-project.iam.gserviceaccount.com');

    const [header = '', payload = '', signature = ''] = token.split('.');
    const { kid } = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as {
      kid: string;
    };
    const jwks = (await (await fetch(metadata.jwksUrl)).json()) as {
      keys: ({ kid: string } & Record<string, unknown>)[];
    };
    const jwk = jwks.keys.find((key) => key.kid === kid);
    expect(jwk).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig' });
    const key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    const signed = Buffer.from(`${header}.${payload}`);
    expect(verify('sha256', signed, key, Buffer.from(signature, 'base64url'))).toBe(true);
  });

  it('that are expired or for another audience are refused by google-auth-library', async () => {
    const longAgo = Math.floor(Date.now() / 1000) - 7200;
    const expired = metadata.mintIdToken(AUDIENCE, { issuedAt: longAgo });
    const verifier = new OAuth2Client();
    await expect(
      verifier.verifySignedJwtWithCertsAsync(expired, await certs(), AUDIENCE, GOOGLE),
    ).rejects.toThrow(/too late/);
    await expect(
      verifier.verifySignedJwtWithCertsAsync(
        metadata.mintIdToken('https://elsewhere.example'),
        await certs(),
        AUDIENCE,
        GOOGLE,
      ),
    ).rejects.toThrow(/audience/);
  });
});
