import type { ClientSessionRequestOptions } from 'node:http2';
import type { GrpcTransportOptions } from '@connectrpc/connect-node';

type SessionManager = NonNullable<GrpcTransportOptions['sessionManager']>;

/**
 * Node's `stream.close(code)` on a stream whose request is still open sends END_STREAM before
 * RST_STREAM, and Connect's transport closes a stream so when its call is aborted: the server
 * then takes a request cut short (an upload whose caller left, or whose deadline passed) for a
 * whole one. Streams from the returned manager are reset without the end instead, as Node does
 * when a request's own signal aborts: RST_STREAM CANCEL, a client's cancel in gRPC's terms.
 */
export function resetUnendedStreams(manager: SessionManager): SessionManager {
  return {
    get authority() {
      return manager.authority;
    },
    async request(method, path, headers, options) {
      const cancel = new AbortController();
      // Connect's type leaves `signal` out; the manager hands the options to Node as they are.
      const withSignal: ClientSessionRequestOptions = { ...options, signal: cancel.signal };
      const stream = await manager.request(method, path, headers, withSignal);
      const close = stream.close.bind(stream);
      stream.close = (code, callback) => {
        if (stream.writableEnded || stream.closed) return close(code, callback);
        if (callback) stream.once('close', callback);
        cancel.abort();
      };
      return stream;
    },
    notifyResponseByteRead: (stream) => manager.notifyResponseByteRead(stream),
  };
}
