import { constants, Http2ServerResponse } from 'node:http2';
import type { ConnectNodeAdapterOptions } from '@connectrpc/connect-node';

const GRPC_UNIMPLEMENTED = '12';

type Fallback = NonNullable<ConnectNodeAdapterOptions['fallback']>;

/**
 * Answers a path no RPC is registered for. gRPC and gRPC-Web callers get status UNIMPLEMENTED
 * naming the path (what grpc-go sends, instead of an HTTP 404 that each client must translate);
 * anything else gets 404, which is what the Connect protocol specifies.
 */
export const answerUnknownMethod: Fallback = (request, response) => {
  const contentType = request.headers['content-type'] ?? '';
  if (!contentType.startsWith('application/grpc') || !(response instanceof Http2ServerResponse)) {
    response.writeHead(404);
    response.end();
    return;
  }
  const path = (request.url ?? '').split('?', 1)[0] ?? '';
  // Trailers-only: one HEADERS frame that ends the stream, as gRPC clients expect.
  response.stream.respond(
    {
      ':status': 200,
      'content-type': contentType.startsWith('application/grpc-web')
        ? 'application/grpc-web+proto'
        : 'application/grpc',
      'grpc-status': GRPC_UNIMPLEMENTED,
      'grpc-message': encodeURIComponent(`unknown method ${path.slice(0, 200)}`),
    },
    { endStream: true },
  );
  if (!request.complete) response.stream.close(constants.NGHTTP2_NO_ERROR);
};
