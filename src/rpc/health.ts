import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { echoed } from '../errors/caller-text.js';
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from '../gen/grpc/health/v1/health_pb.js';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';

export type HealthChangeListener = (service: string, status: ServingStatus) => void;

/**
 * Serving status per service name, as `grpc.health.v1.Health` reports it. The empty name is the
 * whole server. A service that was never `set` is unknown to the protocol.
 */
export interface HealthStatus {
  /** Ignored after `shutdown()`, so a late `set('SERVING')` cannot undo a drain. */
  set(service: string, status: ServingStatus): void;
  get(service: string): ServingStatus | undefined;
  entries(): ReadonlyMap<string, ServingStatus>;
  /** Called on every real change (setting the current value again is no change). */
  onChange(listener: HealthChangeListener): () => void;
  /** Sets every service NOT_SERVING, then ends open Watch streams. Idempotent. */
  shutdown(): void;
  /** Aborted by `shutdown()`, after the NOT_SERVING changes were announced. */
  readonly shutdownSignal: AbortSignal;
}

/** The gRPC health protocol caps List at 100 services. */
const maxListedServices = 100;

export function createHealthStatus(
  initial: Readonly<Record<string, ServingStatus>> = {},
): HealthStatus {
  const statuses = new Map<string, ServingStatus>(Object.entries(initial));
  const listeners = new Set<HealthChangeListener>();
  const shutdownController = new AbortController();

  function update(service: string, status: ServingStatus): void {
    if (statuses.get(service) === status) return;
    statuses.set(service, status);
    for (const listener of [...listeners]) listener(service, status);
  }

  return {
    set(service, status) {
      if (!shutdownController.signal.aborted) update(service, status);
    },
    get: (service) => statuses.get(service),
    entries: () => new Map(statuses),
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    shutdown() {
      if (shutdownController.signal.aborted) return;
      for (const service of statuses.keys()) update(service, 'NOT_SERVING');
      shutdownController.abort();
    },
    shutdownSignal: shutdownController.signal,
  };
}

/** Registers `grpc.health.v1.Health` (Check, List, Watch) answering from `status`. */
export function registerHealth(router: ConnectRouter, status: HealthStatus): void {
  router.service(Health, {
    check(request) {
      const current = status.get(request.service);
      if (current === undefined) {
        throw new ConnectError(
          `no health status for service "${echoed(request.service)}"; ask for "" (the whole server) or a registered service`,
          Code.NotFound,
        );
      }
      return response(toWire(current));
    },
    list() {
      const entries = status.entries();
      if (entries.size > maxListedServices) {
        throw new ConnectError(
          `${entries.size} services exceed the List limit of ${maxListedServices}; use Check or Watch per service`,
          Code.ResourceExhausted,
        );
      }
      const statuses: Record<string, HealthCheckResponse> = {};
      for (const [service, current] of entries) statuses[service] = response(toWire(current));
      return { statuses };
    },
    watch: (request, context) => watch(status, request.service, context.signal),
  });
}

/**
 * Sends the current status, then each change, until the client cancels or the status shuts down.
 * Like grpc-go, it sends only the latest status when several changes arrive between two sends.
 */
async function* watch(
  status: HealthStatus,
  service: string,
  signal: AbortSignal,
): AsyncGenerator<HealthCheckResponse> {
  let changed = true;
  let wake: (() => void) | undefined;
  const notify = () => wake?.();
  const unsubscribe = status.onChange((name) => {
    if (name !== service) return;
    changed = true;
    notify();
  });
  signal.addEventListener('abort', notify);
  status.shutdownSignal.addEventListener('abort', notify);
  try {
    let sent: HealthCheckResponse_ServingStatus | undefined;
    while (!signal.aborted) {
      if (changed) {
        changed = false;
        const current = status.get(service);
        const wire =
          current === undefined
            ? HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN
            : toWire(current);
        if (wire !== sent) {
          sent = wire;
          yield response(wire);
        }
        continue;
      }
      if (status.shutdownSignal.aborted) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
      wake = undefined;
    }
    // The caller's deadline (or cancel) ended the stream: say so, as gRPC servers do.
    throw ConnectError.from(signal.reason);
  } finally {
    unsubscribe();
    signal.removeEventListener('abort', notify);
    status.shutdownSignal.removeEventListener('abort', notify);
  }
}

function toWire(status: ServingStatus): HealthCheckResponse_ServingStatus {
  return status === 'SERVING'
    ? HealthCheckResponse_ServingStatus.SERVING
    : HealthCheckResponse_ServingStatus.NOT_SERVING;
}

function response(status: HealthCheckResponse_ServingStatus): HealthCheckResponse {
  return create(HealthCheckResponseSchema, { status });
}
