import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { isGrpcFamily } from '../grpc/envelope.js';

/**
 * A gRPC or gRPC-Web request whose `grpc-encoding` the server does not have is refused with
 * UNIMPLEMENTED; gRPC's compression spec (doc/compression.md) asks that answer to list the
 * encodings the server takes in `grpc-accept-encoding`. Connect-ES builds that header but drops
 * it (setTrailerStatus leaves protocol headers out of an error's metadata), and answers to unknown
 * methods are ours: it is set here, on the response every answer is written to, with the value
 * Connect builds (names joined by commas).
 */
export function advertiseCompression(
  request: Http2ServerRequest,
  response: Http2ServerResponse,
  accepted: readonly string[],
): void {
  const requested = request.headers['grpc-encoding'];
  if (requested === undefined || requested === 'identity') return;
  if (!isGrpcFamily(request.headers['content-type'])) return;
  // A repeated header, which Connect reads as its values joined, names no encoding.
  if (typeof requested === 'string' && accepted.includes(requested)) return;
  response.setHeader('grpc-accept-encoding', accepted.join(','));
}
