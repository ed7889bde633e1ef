import { once } from 'node:events';
import { Code, ConnectError } from '@connectrpc/connect';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { callerSignal } from '../src/api/caller-signal.js';

/*
 * The signal a route passes to the calls it makes for a request: aborted when the caller goes
 * away before the answer, whenever the route asks for it. A real server and real requests.
 */

let close: () => Promise<void> = async () => {};
afterEach(() => close());

/** A route that asks for the signal once `ask` resolves, reports it, then awaits `work`. */
async function serve(ask: Promise<void>, work: () => Promise<void> = async () => {}) {
  let arrived: () => void = () => {};
  const running = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  let report: (signal: AbortSignal) => void = () => {};
  const signal = new Promise<AbortSignal>((resolve) => {
    report = resolve;
  });
  const app = Fastify();
  app.post('/work', async (_request, reply) => {
    arrived();
    await ask;
    report(callerSignal(reply));
    await work();
    return { done: true };
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  close = () => app.close();
  return { url: `${url}/work`, running, signal };
}

const post = (url: string, signal?: AbortSignal) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
    ...(signal ? { signal } : {}),
  });

describe('callerSignal', () => {
  it('aborts, with CANCELED, for a caller who left while the route awaited something else', async () => {
    let proceed: () => void = () => {};
    const server = await serve(
      new Promise<void>((resolve) => {
        proceed = resolve;
      }),
    );
    const caller = new AbortController();
    const answered = post(server.url, caller.signal).catch((error: unknown) => error);
    await server.running;
    caller.abort();
    await answered;
    // Give the server the turn in which it sees the connection close.
    await new Promise((resolve) => setTimeout(resolve, 100));
    proceed();
    const signal = await server.signal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(ConnectError);
    expect((signal.reason as ConnectError).code).toBe(Code.Canceled);
  });

  it('aborts when the caller leaves after the route asked for it', async () => {
    let hold: () => void = () => {};
    const server = await serve(
      Promise.resolve(),
      () =>
        new Promise<void>((resolve) => {
          hold = resolve;
        }),
    );
    const caller = new AbortController();
    const answered = post(server.url, caller.signal).catch((error: unknown) => error);
    const signal = await server.signal;
    expect(signal.aborted).toBe(false);
    caller.abort();
    await answered;
    if (!signal.aborted) await once(signal, 'abort');
    expect(signal.aborted).toBe(true);
    hold();
  });

  it('never aborts for a request that was answered', async () => {
    const server = await serve(Promise.resolve());
    const response = await post(server.url);
    expect(await response.json()).toEqual({ done: true });
    const signal = await server.signal;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(signal.aborted).toBe(false);
  });
});
