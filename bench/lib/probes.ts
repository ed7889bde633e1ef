import { request as httpRequest } from 'node:http';
import { connect } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  decodeGreetResponse,
  encodeGreetRequest,
  GREET_PATH,
  grpcFrame,
  grpcUnframe,
} from './greet-wire.ts';

/** One attempt: resolves with what came back, or rejects (connection refused and the like). */
export type Probe = () => Promise<void>;

const PROBE_TIMEOUT_MS = 2_000;

export type HttpReply = { status: number; body: string };

export function httpCall(url: string, method: 'GET' | 'POST', body?: string): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method,
        agent: false,
        timeout: PROBE_TIMEOUT_MS,
        headers:
          body === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(new Error(`no answer from ${url} within ${PROBE_TIMEOUT_MS} ms`)),
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** GET `url` answers 200. */
export function httpOkProbe(url: string): Probe {
  return async () => {
    const reply = await httpCall(url, 'GET');
    if (reply.status !== 200) throw new Error(`GET ${url}: ${reply.status} ${reply.body}`);
  };
}

/** A real gRPC Greet over a fresh h2c connection; resolves with the reply. */
export function grpcGreet(baseUrl: string, name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = connect(baseUrl);
    const fail = (error: Error) => {
      session.destroy();
      reject(error);
    };
    session.on('error', fail);
    session.setTimeout(PROBE_TIMEOUT_MS, () =>
      fail(new Error(`no gRPC answer from ${baseUrl} within ${PROBE_TIMEOUT_MS} ms`)),
    );
    const stream = session.request({
      ':method': 'POST',
      ':path': GREET_PATH,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const chunks: Buffer[] = [];
    let status: string | undefined;
    let message = '';
    const read = (headers: Record<string, unknown>) => {
      if (headers['grpc-status'] !== undefined) status = String(headers['grpc-status']);
      if (headers['grpc-message'] !== undefined) message = String(headers['grpc-message']);
    };
    stream.on('response', read);
    stream.on('trailers', read);
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', fail);
    stream.on('close', () => {
      session.close();
      if (status !== '0') {
        reject(
          new Error(`gRPC Greet: status ${status ?? 'missing'} ${decodeURIComponent(message)}`),
        );
        return;
      }
      try {
        resolve(decodeGreetResponse(grpcUnframe(Buffer.concat(chunks))));
      } catch (error) {
        reject(error);
      }
    });
    stream.end(grpcFrame(encodeGreetRequest({ name, withError: false })));
  });
}

export function grpcGreetProbe(baseUrl: string): Probe {
  return async () => {
    const reply = await grpcGreet(baseUrl, 'probe');
    if (reply !== 'Hello probe!!') throw new Error(`gRPC Greet replied ${JSON.stringify(reply)}`);
  };
}

/**
 * Retries `probe` every `intervalMs` until it succeeds; resolves with performance.now() at the
 * first success. Rejects at the deadline or as soon as `failed()` returns an error message.
 */
export async function untilFirstSuccess(
  probe: Probe,
  options: { timeoutMs: number; intervalMs: number; failed?: () => string | undefined },
): Promise<number> {
  const deadline = performance.now() + options.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      await probe();
      return performance.now();
    } catch (error) {
      lastError = error;
    }
    const failure = options.failed?.();
    if (failure) throw new Error(failure);
    if (performance.now() > deadline) {
      throw new Error(
        `no successful response within ${options.timeoutMs} ms; last error: ${String(lastError)}`,
      );
    }
    await sleep(options.intervalMs);
  }
}
