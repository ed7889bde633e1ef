import { constants } from 'node:http2';
import type { ClientResponse, HeaderMap } from './internal-types.ts';

/** Connection-specific headers (forbidden in HTTP/2) and `host` (sent as authority). */
const NOT_FORWARDED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'http2-settings',
]);

/**
 * Copies end-to-end headers: drops pseudo headers, hop-by-hop headers and those the
 * `connection` header names. `te: trailers` is kept when `keepTeTrailers` (HTTP/2 upstreams).
 */
export function endToEndHeaders(
  source: Record<string, string | string[] | undefined>,
  keepTeTrailers = false,
): HeaderMap {
  const named = new Set(
    String(source.connection ?? '')
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter(Boolean),
  );
  const headers: HeaderMap = {};
  for (const [name, value] of Object.entries(source)) {
    if (value === undefined || name.startsWith(':')) continue;
    const lower = name.toLowerCase();
    if (NOT_FORWARDED.has(lower) || named.has(lower)) continue;
    headers[lower] = value;
  }
  if (keepTeTrailers && String(source.te ?? '').toLowerCase() === 'trailers') {
    headers.te = 'trailers';
  }
  return headers;
}

/** A short plain-text answer from the front end itself. */
export function sendPlain(
  response: ClientResponse,
  status: number,
  body: string,
  headers: HeaderMap = {},
): void {
  const gone = 'stream' in response ? response.stream.destroyed : response.destroyed;
  if (gone || response.writableEnded) return;
  if (response.headersSent) {
    abortResponse(response);
    return;
  }
  writeHead(response, status, { 'content-type': 'text/plain; charset=utf-8', ...headers });
  response.end(`${body}\n`);
}

/** `writeHead` for either protocol (the union of both signatures is not callable). */
export function writeHead(response: ClientResponse, status: number, headers: HeaderMap): void {
  if ('stream' in response) response.writeHead(status, headers);
  else response.writeHead(status, headers);
}

/** Breaks the response off mid-way: RST_STREAM on HTTP/2, a closed socket on HTTP/1.1. */
export function abortResponse(
  response: ClientResponse,
  code: number = constants.NGHTTP2_INTERNAL_ERROR,
): void {
  if ('stream' in response) {
    if (!response.stream.destroyed) response.stream.close(code);
  } else {
    response.destroy();
  }
}
