import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createIdTokenCredentials } from '../src/identity/id-token-credentials.js';
import { type MetadataServer, startMetadataServer } from '../tools/cloud-run-local/index.ts';
import { postGreet } from './helpers/http.js';
import { recordingLogger } from './helpers/recording-logger.js';
import { eventually, type RoleProcess, startRole } from './helpers/roles.js';

/*
 * A background refresh of the api's ID token that fails is no call's failure, so nothing else
 * would say it: one WARNING line when refreshes start failing (what to check, never the token),
 * one INFO line when a token is fetched again. Tokens come from a real local metadata server
 * through google-auth-library, as on Cloud Run; 4-minute tokens put every call inside the
 * 5-minute refresh window.
 */

const AUDIENCE = 'https://backend.example';
const SHORT_LIFETIME_SECONDS = 240;

type Line = Record<string, unknown>;

let metadata: MetadataServer;
let gcloudConfig = '';

beforeAll(async () => {
  metadata = await startMetadataServer();
  gcloudConfig = await mkdtemp(join(tmpdir(), 'gcloud-'));
});
afterAll(async () => {
  await metadata?.close();
  await rm(gcloudConfig, { recursive: true, force: true });
});

const refreshWarnings = (lines: Line[]) =>
  lines.filter(
    (line) =>
      line.severity === 'WARNING' && String(line.message).includes('could not be refreshed'),
  );

describe('the credentials module', () => {
  const saved = { ...process.env };
  beforeAll(() => {
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    Object.assign(process.env, {
      GCE_METADATA_HOST: metadata.host,
      CLOUDSDK_CONFIG: gcloudConfig,
      K_SERVICE: 'greeter-api',
    });
  });
  afterEach(() => {
    metadata.setIdentityAnswer(undefined);
    metadata.setDelayMs(0);
  });
  afterAll(() => {
    process.env = saved;
    metadata.setIdTokenLifetimeSeconds(3600);
  });

  it('one WARNING per streak of failed refreshes, one INFO line once a token is fetched again', async () => {
    const { logger, lines } = recordingLogger();
    metadata.setIdTokenLifetimeSeconds(SHORT_LIFETIME_SECONDS);
    const credentials = createIdTokenCredentials(AUDIENCE, undefined, logger);
    const inHand = await credentials.authorization();
    const token = inHand.replace('Bearer ', '');
    const before = metadata.idTokenRequests();

    metadata.setIdentityAnswer({ body: 'not a token' });
    expect(await credentials.authorization()).toBe(inHand);
    await eventually(() => expect(refreshWarnings(lines)).toHaveLength(1));
    expect(metadata.idTokenRequests() - before).toBe(1);
    // Within the 10 s after a failure, calls send the token in hand and leave the source alone.
    for (let i = 0; i < 3; i++) expect(await credentials.authorization()).toBe(inHand);
    const [warning] = refreshWarnings(lines);
    // Sent until a minute before it expires, as long as a token is used.
    const { exp } = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as {
      exp: number;
    };
    expect(warning?.message).toContain(
      `Calls go on with the token in hand until ${new Date(exp * 1000 - 60_000).toISOString()},`,
    );
    expect(warning?.message).toMatch(
      /^the ID token for the backend could not be refreshed in the background: could not get a Google ID token for audience https:\/\/backend\.example: the token source answered something that is not an ID token \(a JWT\)\. On Cloud Run this is the metadata server; locally check GCE_METADATA_HOST and GOOGLE_APPLICATION_CREDENTIALS\. Calls go on with the token in hand until \d{4}-\d\d-\d\dT[\d:.]+Z, trying again at most every 10 s; if it still fails then, calls fail with 503 until a token is fetched\.$/,
    );

    // The next attempt, 10 s later, fails too: the same streak, no second line.
    await new Promise((resolve) => setTimeout(resolve, 10_100));
    for (let i = 0; i < 3; i++) expect(await credentials.authorization()).toBe(inHand);
    await eventually(() => expect(metadata.idTokenRequests() - before).toBe(2));
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(refreshWarnings(lines)).toHaveLength(1);

    // The source answers again; the backend refusing the token in hand makes the next call fetch.
    metadata.setIdentityAnswer(undefined);
    credentials.refused(inHand);
    expect(await credentials.authorization()).not.toBe(inHand);
    expect(lines.filter((line) => line.severity === 'INFO').map((line) => line.message)).toEqual([
      `the ID token for the backend (audience ${AUDIENCE}) was fetched again after 2 failed background refreshes`,
    ]);
    expect(JSON.stringify(lines)).not.toContain(token.split('.')[2]);
  }, 30_000);

  it('counts a failed refresh once however many calls see it fail, and warns again for a later streak', async () => {
    const { logger, lines } = recordingLogger();
    metadata.setIdTokenLifetimeSeconds(SHORT_LIFETIME_SECONDS);
    const credentials = createIdTokenCredentials(AUDIENCE, undefined, logger);
    const inHand = await credentials.authorization();
    // A slow failure: every call below is made while the one refresh waits for it.
    metadata.setIdentityAnswer({ status: 500, body: 'metadata server down' });
    metadata.setDelayMs(1_000);
    for (let i = 0; i < 5; i++) expect(await credentials.authorization()).toBe(inHand);
    await eventually(() => expect(refreshWarnings(lines)).toHaveLength(1));
    metadata.setDelayMs(0);
    metadata.setIdentityAnswer(undefined);
    credentials.refused(inHand);
    const next = await credentials.authorization();
    expect(next).not.toBe(inHand);
    expect(lines.filter((line) => line.severity === 'INFO').map((line) => line.message)).toEqual([
      `the ID token for the backend (audience ${AUDIENCE}) was fetched again after 1 failed background refresh`,
    ]);

    // The next failure starts a new streak, reported as the first was.
    metadata.setIdentityAnswer({ body: 'not a token' });
    expect(await credentials.authorization()).toBe(next);
    await eventually(() => expect(refreshWarnings(lines)).toHaveLength(2));
  }, 30_000);
});

describe('the api', () => {
  let backend: RoleProcess;
  let api: RoleProcess;
  beforeAll(async () => {
    metadata.setIdTokenLifetimeSeconds(SHORT_LIFETIME_SECONDS);
    backend = await startRole('backend');
    api = await startRole('api', {
      env: {
        BACKEND_URL: backend.url,
        BACKEND_AUDIENCE: AUDIENCE,
        GCE_METADATA_HOST: metadata.host,
        CLOUDSDK_CONFIG: gcloudConfig,
      },
    });
  });
  afterAll(async () => {
    await Promise.all([api?.stop(), backend?.stop()]);
    metadata.setIdentityAnswer(undefined);
    metadata.setIdTokenLifetimeSeconds(3600);
  });

  it('answers every call with the token in hand while its refresh fails, and says so once', async () => {
    expect((await postGreet(api.url, { name: 'first' })).status).toBe(200);
    const before = metadata.idTokenRequests();
    metadata.setIdentityAnswer({ status: 500, body: 'metadata server down' });
    for (let i = 0; i < 5; i++) {
      expect((await postGreet(api.url, { name: `n${i}` })).status).toBe(200);
    }
    await eventually(() => expect(refreshWarnings(api.logs())).toHaveLength(1));
    expect(metadata.idTokenRequests() - before).toBe(1);
    expect(refreshWarnings(api.logs())[0]?.message).toContain(
      'the metadata server answered HTTP 500 for the ID token. On Cloud Run check the service account of this service',
    );
    // The reason's own full stop ends its sentence: one full stop, not two.
    expect(refreshWarnings(api.logs())[0]?.message).toContain(
      'impersonated or service-account credentials. Calls go on with the token in hand until',
    );
    expect(JSON.stringify(api.logs())).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+\./);
  });
});
