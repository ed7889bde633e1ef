import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';

/** A request on the TLS port: HTTP/2 (compatibility API) or HTTP/1.1. */
export type ClientRequest = Http2ServerRequest | IncomingMessage;
export type ClientResponse = Http2ServerResponse | ServerResponse;

export type HeaderMap = Record<string, string | string[]>;

export interface UpstreamRequest {
  method: string;
  path: string;
  authority: string;
  /** Headers to send, already free of pseudo and hop-by-hop headers. */
  headers: HeaderMap;
}

export interface Upstream {
  /** Streams the request body up and the response (and its trailers) back. */
  forward(request: ClientRequest, response: ClientResponse, target: UpstreamRequest): void;
  close(): Promise<void>;
}
