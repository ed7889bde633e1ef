import { createContextKey } from '@connectrpc/connect';

/**
 * An RPC as the server received it: when it arrived, so that its SERVER span and duration cover
 * reading its request, and whether anything records it yet.
 */
export type ServerCall = {
  /** `performance.now()` when its headers arrived. */
  readonly arrivedAt: number;
  /** Its SERVER span has started, or it was refused and logged: nothing else records it. */
  claimed: boolean;
};

/** The current RPC, for the tracing: `context.values.get(SERVER_CALL)`. */
export const SERVER_CALL = createContextKey<ServerCall | undefined>(undefined, {
  description: 'server call',
});

export function arrivingCall(): ServerCall {
  return { arrivedAt: performance.now(), claimed: false };
}
