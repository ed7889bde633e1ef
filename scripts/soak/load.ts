import { randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';

/** One request of the load and what came of it. */
export type Sent = {
  traceId: string;
  /** The span id we sent as the parent in `traceparent`. */
  parentSpanId: string;
  atMs: number;
  latencyMs: number;
  status?: number;
  error?: string;
};

export type Load = {
  /** Everything sent so far (grows while running). */
  readonly sent: readonly Sent[];
  /** Stops issuing requests and resolves once every open one has an outcome. */
  stop(): Promise<readonly Sent[]>;
};

/**
 * Closed-loop load: `concurrency` keep-alive clients, each sending POST /greet back to back,
 * every request with a fresh sampled W3C trace context so its trace can be found and checked.
 */
export function startLoad(apiUrl: string, concurrency: number): Load {
  const url = new URL(apiUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const sent: Sent[] = [];
  const started = performance.now();
  let stopped = false;

  const one = () =>
    new Promise<Sent>((resolve) => {
      const record: Sent = {
        traceId: randomBytes(16).toString('hex'),
        parentSpanId: randomBytes(8).toString('hex'),
        atMs: performance.now() - started,
        latencyMs: 0,
      };
      const finish = (outcome: Partial<Sent>) => {
        Object.assign(record, outcome, { latencyMs: performance.now() - started - record.atMs });
        resolve(record);
      };
      const outgoing = request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method: 'POST',
          path: '/greet',
          headers: {
            'content-type': 'application/json',
            traceparent: `00-${record.traceId}-${record.parentSpanId}-01`,
          },
        },
        (response) => {
          response.resume();
          response.on('end', () => finish({ status: response.statusCode ?? 0 }));
          response.on('error', (error: NodeJS.ErrnoException) =>
            finish({ error: error.code ?? error.message }),
          );
        },
      );
      outgoing.on('error', (error: NodeJS.ErrnoException) =>
        finish({ error: error.code ?? error.message }),
      );
      outgoing.end('{"name":"Soak"}');
    });

  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped) sent.push(await one());
  });
  return {
    sent,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      agent.destroy();
      return sent;
    },
  };
}
