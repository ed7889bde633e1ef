import { request } from 'node:http';
import { request as requestTls } from 'node:https';
import { loadGoogleAuthLibrary } from './google-auth-library.js';
import type { IdTokenSource } from './id-token-credentials.js';
import { settledOrAborted } from './settled-or-aborted.js';

const METADATA_ADDRESS = '169.254.169.254';
/** An ID token is about 1 KiB; an answer far larger is not one, and is not read to its end. */
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * Google ID tokens from google-auth-library's application default credentials: the metadata
 * server on Cloud Run, a service-account key or impersonated credentials locally. The credentials
 * are found once (which can take a project-id lookup) and kept until a fetch fails or is given
 * up; then the next fetch looks again, with gcp-metadata's memory of its metadata-server probe
 * cleared. A search given up is not stopped (gcp-metadata takes no signal): while the metadata
 * server hangs, one is left waiting per 3 s cap, each ending when the server answers.
 * `signal` ends the request when it is given up. gcp-metadata sets no time limit of its own on
 * Google Cloud and takes no signal, so the metadata server is asked here directly, as
 * google-auth-library's Compute client would ask it; other credentials can only be given up.
 */
export function createGoogleIdTokenSource(): IdTokenSource {
  let provider: Promise<IdTokenSource> | undefined;

  const findProvider = async (audience: string): Promise<IdTokenSource> => {
    const { Compute, GoogleAuth } = await loadGoogleAuthLibrary();
    const client = await new GoogleAuth().getIdTokenClient(audience);
    const found = client.idTokenProvider;
    if (found instanceof Compute) {
      return (forAudience, signal) =>
        fetchFromMetadataServer(forAudience, found.serviceAccountEmail, signal);
    }
    return (forAudience) => found.fetchIdToken(forAudience);
  };

  return async (audience, signal) => {
    provider ??= findProvider(audience);
    const finding = provider;
    try {
      // A search given up (it can wait on the metadata server for ever) is not joined again.
      return await (await settledOrAborted(finding, signal))(audience, signal);
    } catch (error) {
      if (provider === finding) provider = undefined;
      const { gcpMetadata } = await loadGoogleAuthLibrary();
      gcpMetadata.resetIsAvailableCache();
      throw error;
    }
  };
}

/**
 * `service-accounts/<account>/identity` with `format=full` (so the token carries `email`), at
 * the address gcp-metadata uses (`GCE_METADATA_IP`, else `GCE_METADATA_HOST`, else
 * 169.254.169.254). Errors name the status, never the body: a wrong address can reach a proxy
 * that answers anything.
 */
function fetchFromMetadataServer(
  audience: string,
  account: string,
  signal: AbortSignal,
): Promise<string> {
  const address = process.env.GCE_METADATA_IP || process.env.GCE_METADATA_HOST || METADATA_ADDRESS;
  const base = /^https?:\/\//.test(address) ? address : `http://${address}`;
  const url = new URL(
    `/computeMetadata/v1/instance/service-accounts/${encodeURIComponent(account)}/identity`,
    base,
  );
  url.searchParams.set('audience', audience);
  url.searchParams.set('format', 'full');
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? requestTls : request;
    const call = send(url, { headers: { 'Metadata-Flavor': 'Google' }, signal });
    call.on('error', reject);
    call.on('response', (response) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        chunks.push(chunk);
        if (bytes > MAX_ANSWER_BYTES) {
          call.destroy(
            new Error(`the metadata server answered more than ${MAX_ANSWER_BYTES} bytes`),
          );
        }
      });
      response.on('error', reject);
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        if (response.headers['metadata-flavor'] !== 'Google') {
          reject(
            new Error(
              `${url.host} answered without "Metadata-Flavor: Google": it is not a metadata server (check GCE_METADATA_HOST)`,
            ),
          );
        } else if (status !== 200) {
          reject(new Error(`the metadata server answered HTTP ${status} for the ID token`));
        } else {
          resolve(Buffer.concat(chunks).toString('utf8'));
        }
      });
    });
    call.end();
  });
}
