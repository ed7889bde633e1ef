import { type ClientHttp2Session, connect } from 'node:http2';
import {
  decodeGreetResponse,
  encodeGreetRequest,
  GREET_PATH,
  type GreetRequest,
  grpcFrame,
  grpcUnframe,
} from '../lib/greet-wire.ts';

/*
 * What the framework-free api does for a greeting, shared with the Fastify variant: check the
 * body by hand, call the backend over one `node:http2` session with a hand-framed message.
 */

const BACKEND_TIMEOUT_MS = 5_000;

export class CallError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The name and flag from a parsed JSON body, or a 400. */
export function validateGreet(body: unknown): GreetRequest {
  if (typeof body !== 'object' || body === null) throw new CallError(400, 'body must be an object');
  const { name, withError = false } = body as { name?: unknown; withError?: unknown };
  if (typeof name !== 'string' || name.trim().length === 0 || name.trim().length > 256) {
    throw new CallError(400, 'name is required (1-256 characters)');
  }
  if (typeof withError !== 'boolean') throw new CallError(400, 'withError must be a boolean');
  return { name: name.trim(), withError };
}

export type GreetCaller = { greet(request: GreetRequest): Promise<string>; close(): void };

export function createGreetCaller(backendUrl: string): GreetCaller {
  let session: ClientHttp2Session | undefined;
  function backendSession(): ClientHttp2Session {
    if (session && !session.closed && !session.destroyed) return session;
    const fresh = connect(backendUrl);
    fresh.on('error', () => {});
    fresh.once('close', () => {
      if (session === fresh) session = undefined;
    });
    session = fresh;
    return fresh;
  }

  function greet(request: GreetRequest): Promise<string> {
    return new Promise((resolve, reject) => {
      const stream = backendSession().request({
        ':method': 'POST',
        ':path': GREET_PATH,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.setTimeout(BACKEND_TIMEOUT_MS, () => stream.close());
      const chunks: Buffer[] = [];
      let grpcStatus: string | undefined;
      let grpcMessage = '';
      const readStatus = (headers: Record<string, unknown>) => {
        if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
        if (headers['grpc-message'] !== undefined)
          grpcMessage = decodeURIComponent(String(headers['grpc-message']));
      };
      stream.on('response', readStatus);
      stream.on('trailers', readStatus);
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', (error) => reject(new CallError(503, error.message)));
      stream.on('close', () => {
        if (grpcStatus === undefined) {
          reject(new CallError(503, 'backend closed the stream without a gRPC status'));
        } else if (grpcStatus === '0') {
          try {
            resolve(decodeGreetResponse(grpcUnframe(Buffer.concat(chunks))));
          } catch (error) {
            reject(new CallError(502, (error as Error).message));
          }
        } else {
          reject(
            new CallError(
              grpcStatus === '3' ? 400 : 500,
              grpcMessage || `gRPC status ${grpcStatus}`,
            ),
          );
        }
      });
      stream.end(grpcFrame(encodeGreetRequest(request)));
    });
  }

  return { greet, close: () => session?.close() };
}
