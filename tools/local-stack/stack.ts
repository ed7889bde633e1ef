import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type FrontEnd,
  type MetadataServer,
  startFrontEnd,
  startMetadataServer,
} from '../cloud-run-local/index.ts';
import { freePort } from './free-port.ts';

/** Starts one role (`node dist/entry/main.js`) with extra env; resolves once it listens. */
export type RoleStarter = (
  role: 'api' | 'backend',
  env: Record<string, string>,
) => Promise<{ url: string; stop(): Promise<unknown> }>;

export type LocalStackOptions = {
  startRole: RoleStarter;
  /** Run both roles behind local Cloud Run front ends: TLS, ID tokens, trace-header rewrite. */
  cloud?: boolean;
  /** Env for both roles (e.g. OTEL_EXPORTER_OTLP_ENDPOINT). */
  env?: Record<string, string>;
  apiEnv?: Record<string, string>;
  backendEnv?: Record<string, string>;
};

export type LocalStack = {
  /** Where users call the api: the front end in cloud mode, else the role itself. */
  apiUrl: string;
  /** Where the api calls the backend (the backend's front end in cloud mode). */
  backendUrl: string;
  /** The backend role itself, h2c, behind no front end. */
  backendDirectUrl: string;
  cloud?: {
    metadata: MetadataServer;
    apiFrontEnd: FrontEnd;
    backendFrontEnd: FrontEnd;
    caFile: string;
    apiServiceAccount: string;
  };
  stop(): Promise<void>;
};

const PROJECT_ID = 'local-project';
const API_SERVICE_ACCOUNT = `greeter-api@${PROJECT_ID}.iam.gserviceaccount.com`;

/**
 * Backend first, then the api pointed at it. In cloud mode the production path runs on
 * this machine: the api mints ID tokens from a local metadata server and calls the backend
 * over TLS through a front end that checks them and rewrites trace headers as Google's does.
 */
export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const fn of stops.reverse()) await fn().catch(() => undefined);
  };
  try {
    if (!options.cloud) {
      const backend = await options.startRole('backend', { ...options.env, ...options.backendEnv });
      stops.push(() => backend.stop());
      const api = await options.startRole('api', {
        ...options.env,
        BACKEND_URL: backend.url,
        ...options.apiEnv,
      });
      stops.push(() => api.stop());
      return { apiUrl: api.url, backendUrl: backend.url, backendDirectUrl: backend.url, stop };
    }

    const metadata = await startMetadataServer({
      serviceAccountEmail: API_SERVICE_ACCOUNT,
      projectId: PROJECT_ID,
    });
    stops.push(() => metadata.close());
    const caDir = await mkdtemp(join(tmpdir(), 'cloud-run-local-'));
    stops.push(() => rm(caDir, { recursive: true, force: true }));

    // The backend is told its own URL (the audience) before it starts, so the front end comes
    // first, pointed at the port the backend will take.
    const backendPort = await freePort();
    const backendDirectUrl = `http://127.0.0.1:${backendPort}`;
    const backendFrontEnd = await startFrontEnd({
      upstream: backendDirectUrl,
      upstreamProtocol: 'h2c',
      auth: { certsUrl: metadata.certsUrl, allowedEmails: [API_SERVICE_ACCOUNT] },
    });
    stops.push(() => backendFrontEnd.close());
    const caFile = join(caDir, 'front-end-ca.pem');
    await writeFile(caFile, backendFrontEnd.caCertPem);

    const backend = await options.startRole('backend', {
      ...options.env,
      PORT: String(backendPort),
      // Both services of a Cloud Run deployment live in one project: one trace path in the logs.
      GOOGLE_CLOUD_PROJECT: PROJECT_ID,
      AUTH_VERIFY_TOKENS: 'true',
      AUTH_AUDIENCE: backendFrontEnd.audience,
      AUTH_CERTS_URL: metadata.certsUrl,
      AUTH_ALLOWED_CALLERS: API_SERVICE_ACCOUNT,
      ...options.backendEnv,
    });
    stops.push(() => backend.stop());

    const emptyGcloudConfig = join(caDir, 'gcloud');
    const api = await options.startRole('api', {
      ...options.env,
      BACKEND_URL: backendFrontEnd.url,
      BACKEND_AUDIENCE: backendFrontEnd.audience,
      GCE_METADATA_HOST: metadata.host,
      NODE_EXTRA_CA_CERTS: caFile,
      // Keep a developer's own gcloud credentials out of the way: the metadata server answers.
      CLOUDSDK_CONFIG: emptyGcloudConfig,
      GOOGLE_CLOUD_PROJECT: PROJECT_ID,
      ...options.apiEnv,
    });
    stops.push(() => api.stop());
    const apiFrontEnd = await startFrontEnd({ upstream: api.url, upstreamProtocol: 'http1' });
    stops.push(() => apiFrontEnd.close());
    // One CA file that trusts both front ends, for curl --cacert and test clients.
    await writeFile(caFile, `${backendFrontEnd.caCertPem}\n${apiFrontEnd.caCertPem}`);

    return {
      apiUrl: apiFrontEnd.url,
      backendUrl: backendFrontEnd.url,
      backendDirectUrl,
      cloud: {
        metadata,
        apiFrontEnd,
        backendFrontEnd,
        caFile,
        apiServiceAccount: API_SERVICE_ACCOUNT,
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
