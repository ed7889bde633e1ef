import { once } from 'node:events';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect } from 'node:http2';

/** A request with exactly the headers given (`Host` among them, which fetch does not let us set). */
export async function sendRaw(
  url: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number }> {
  const request = httpRequest(new URL(path, url), { method, headers });
  request.end(body);
  const [response] = (await once(request, 'response')) as [IncomingMessage];
  response.resume();
  await once(response, 'end');
  return { status: response.statusCode ?? 0 };
}

/** POST /greet with a JSON body (objects are serialised; strings are sent as they are). */
export function postGreet(
  baseUrl: string,
  body: unknown = { name: 'David' },
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<Response> {
  return fetch(`${baseUrl}/greet`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...(signal ? { signal } : {}),
  });
}

/** POST /greet over HTTPS (HTTP/2) trusting `ca`: for the local Cloud Run front ends. */
export async function postGreetTls(
  baseUrl: string,
  ca: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const session = connect(baseUrl, { ca });
  try {
    const request = session.request({
      ':method': 'POST',
      ':path': '/greet',
      'content-type': 'application/json',
      ...headers,
    });
    request.end(JSON.stringify(body));
    const status = await new Promise<number>((resolve, reject) => {
      request.on('response', (responseHeaders) => resolve(Number(responseHeaders[':status'])));
      request.on('error', reject);
    });
    let text = '';
    for await (const chunk of request) text += chunk;
    return { status, body: JSON.parse(text) as Record<string, unknown> };
  } finally {
    session.close();
  }
}

/** A method the backend does not have, and that the README's examples never add. */
export const UNKNOWN_METHOD = 'backend_service.v1.BackendService/NoSuchMethod';

/**
 * A gRPC call over h2c to `path` with an empty message (or the raw `body`): resolves with the
 * grpc-status as soon as a trailers-only answer (a failure decided before any message) arrives.
 */
export async function grpcCallTo(
  baseUrl: string,
  path: string,
  headers: Record<string, string> = {},
  body: Buffer = Buffer.alloc(5),
): Promise<string | undefined> {
  const session = connect(baseUrl);
  try {
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    stream.end(body);
    const [answer] = (await once(stream, 'response')) as [Record<string, string | undefined>];
    stream.resume();
    return answer['grpc-status'];
  } finally {
    session.close();
  }
}
