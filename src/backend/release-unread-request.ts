import { constants, type Http2ServerRequest } from 'node:http2';

/**
 * An answer sent before the request body was read (a call refused by the token check, a message
 * over the size limit) leaves the caller's half of the stream open: a caller that keeps sending
 * stalls on flow control, and the stream stays open on both sides until it gives up. Once the
 * answer's trailers are out, RST_STREAM NO_ERROR asks it to stop (RFC 9113, section 8.1).
 */
export function releaseUnreadRequest(request: Http2ServerRequest): void {
  const { stream } = request;
  stream.once('wantTrailers', () =>
    // After the response's own listener has sent the trailers.
    setImmediate(() => {
      if (!request.complete && !stream.closed) stream.close(constants.NGHTTP2_NO_ERROR);
    }),
  );
}
