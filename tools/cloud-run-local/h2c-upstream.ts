import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
} from 'node:http2';
import { abortResponse, endToEndHeaders, sendPlain, writeHead } from './forwarding.ts';
import type { ClientRequest, ClientResponse, Upstream } from './internal-types.ts';

/**
 * Cleartext HTTP/2 (prior knowledge) to the container, like Cloud Run with `--use-http2`: one
 * session, reused, opened again after it closes or receives GOAWAY.
 */
export function createH2cUpstream(url: string): Upstream {
  let session: ClientHttp2Session | undefined;

  const currentSession = (): ClientHttp2Session => {
    if (session && !session.closed && !session.destroyed) return session;
    const opened = connect(url);
    const forget = () => {
      if (session === opened) session = undefined;
    };
    // Stream errors report the failure to each request; the session error needs no listener.
    opened.on('error', forget);
    opened.once('goaway', forget);
    opened.once('close', forget);
    session = opened;
    return opened;
  };

  return {
    forward(request, response, target) {
      let stream: ClientHttp2Stream;
      try {
        stream = currentSession().request({
          ...target.headers,
          ':method': target.method,
          ':path': target.path,
          ':authority': target.authority,
          ':scheme': 'http',
        });
      } catch (error) {
        sendPlain(response, 503, `upstream ${url} unavailable: ${String(error)}`);
        return;
      }
      relay(request, response, stream, url);
    },
    async close() {
      const closing = session;
      session = undefined;
      if (!closing || closing.destroyed) return;
      await new Promise<void>((resolve) => {
        closing.close(() => resolve());
        // Streams still open (a hanging test) must not hold the close forever.
        setTimeout(() => closing.destroy(), 1000).unref();
      });
    },
  };
}

function relay(
  request: ClientRequest,
  response: ClientResponse,
  stream: ClientHttp2Stream,
  url: string,
): void {
  let trailers: IncomingHttpHeaders | undefined;
  stream.on('response', (headers: IncomingHttpHeaders & IncomingHttpStatusHeader, flags) => {
    const status = Number(headers[':status']);
    const forwarded = endToEndHeaders(headers);
    if (flags & constants.NGHTTP2_FLAG_END_STREAM) {
      // Trailers-only (a gRPC error): keep it one HEADERS frame by sending it at end().
      response.statusCode = status;
      for (const [name, value] of Object.entries(forwarded)) response.setHeader(name, value);
      stream.resume();
      return;
    }
    writeHead(response, status, forwarded);
    stream.pipe(response, { end: false });
  });
  stream.on('trailers', (received: IncomingHttpHeaders) => {
    trailers = received;
  });
  stream.on('end', () => {
    if (trailers) response.addTrailers(endToEndHeaders(trailers));
    response.end();
  });
  stream.on('error', (error) => {
    if (response.headersSent) abortResponse(response);
    else sendPlain(response, 503, `upstream ${url} unavailable: ${error.message}`);
  });
  stream.on('close', () => {
    // A reset after the response started: break the client's stream off too.
    if (
      stream.rstCode &&
      stream.rstCode !== constants.NGHTTP2_NO_ERROR &&
      !response.writableEnded
    ) {
      if (response.headersSent) abortResponse(response, stream.rstCode);
      else sendPlain(response, 503, `upstream ${url} reset the stream (code ${stream.rstCode})`);
    }
  });
  response.on('close', () => {
    if (!response.writableEnded && !stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
  });
  request.pipe(stream);
}
