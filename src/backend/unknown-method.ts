import { constants, Http2ServerResponse } from 'node:http2';
import type { ConnectNodeAdapterOptions } from '@connectrpc/connect-node';
import { unknownMethodMessage } from '../errors/caller-text.js';

const GRPC_UNIMPLEMENTED = '12';
/** The gRPC family's media types: the protocol, then the codec after a `+`. */
const GRPC_CONTENT_TYPE = /^application\/(grpc-web-text|grpc-web|grpc)(?:\+([^;\s]*))?/i;

type Fallback = NonNullable<ConnectNodeAdapterOptions['fallback']>;

/**
 * Answers a path no RPC is registered for. gRPC and gRPC-Web callers get status UNIMPLEMENTED
 * naming the path (what grpc-go sends, instead of an HTTP 404 that each client must translate);
 * anything else gets 404, which is what the Connect protocol specifies. Headers already set on
 * the response (`grpc-accept-encoding`, see advertise-compression.ts) go with the answer.
 */
export const answerUnknownMethod: Fallback = (request, response) => {
  const match = GRPC_CONTENT_TYPE.exec(request.headers['content-type'] ?? '');
  if (!match?.[1] || !(response instanceof Http2ServerResponse)) {
    response.writeHead(404);
    response.end();
    return;
  }
  const path = (request.url ?? '').split('?', 1)[0] ?? '';
  // Trailers-only: one HEADERS frame that ends the stream, as gRPC clients expect.
  response.stream.respond(
    {
      ...response.getHeaders(),
      ':status': 200,
      'content-type': answerContentType(match[1], match[2]),
      'grpc-status': GRPC_UNIMPLEMENTED,
      'grpc-message': encodeURIComponent(unknownMethodMessage(path)),
    },
    { endStream: true },
  );
  if (!request.complete) response.stream.close(constants.NGHTTP2_NO_ERROR);
};

/**
 * The request's protocol with its codec named, as Connect's handlers answer (`application/grpc`
 * gets `application/grpc+proto`); gRPC-Web-text, which Connect does not serve, keeps its `-text`.
 */
function answerContentType(protocol: string, codec: string | undefined): string {
  return `application/${protocol.toLowerCase()}+${codec?.toLowerCase() === 'json' ? 'json' : 'proto'}`;
}
