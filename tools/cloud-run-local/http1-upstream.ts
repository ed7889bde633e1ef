import { Agent, request as httpRequest } from 'node:http';
import { abortResponse, endToEndHeaders, sendPlain, writeHead } from './forwarding.ts';
import type { Upstream } from './internal-types.ts';

/** HTTP/1.1 to the container, as Cloud Run does by default, with keep-alive connections. */
export function createHttp1Upstream(url: string): Upstream {
  const agent = new Agent({ keepAlive: true });
  return {
    forward(request, response, target) {
      const outgoing = httpRequest(url, {
        agent,
        method: target.method,
        path: target.path,
        headers: { ...target.headers, host: target.authority },
      });
      outgoing.on('response', (incoming) => {
        writeHead(response, incoming.statusCode ?? 502, endToEndHeaders(incoming.headers));
        incoming.pipe(response, { end: false });
        incoming.on('end', () => {
          const trailers = endToEndHeaders(incoming.trailers);
          if (Object.keys(trailers).length > 0) response.addTrailers(trailers);
          response.end();
        });
        incoming.on('error', () => abortResponse(response));
      });
      outgoing.on('error', (error) => {
        sendPlain(response, 503, `upstream ${url} unavailable: ${error.message}`);
      });
      response.on('close', () => {
        if (!response.writableEnded) outgoing.destroy();
      });
      request.pipe(outgoing);
    },
    async close() {
      agent.destroy();
    },
  };
}
