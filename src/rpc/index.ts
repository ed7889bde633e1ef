import type { ConnectRouter } from '@connectrpc/connect';
import { Health } from '../gen/grpc/health/v1/health_pb.js';
import { ServerReflection as ServerReflectionV1 } from '../gen/grpc/reflection/v1/reflection_pb.js';
import { ServerReflection as ServerReflectionV1alpha } from '../gen/grpc/reflection/v1alpha/reflection_pb.js';
import { registerBackendService } from './backend-service.js';
import { type HealthStatus, registerHealth } from './health.js';
import { registerReflection, registerReflectionOff } from './reflection.js';

export { createHealthStatus, type HealthStatus } from './health.js';

export type RpcOptions = { health: HealthStatus; reflection: boolean };

/** Registers every RPC service. Adding a service: one file in src/rpc/ and one line here. */
export function registerRpcs(router: ConnectRouter, options: RpcOptions): void {
  registerBackendService(router);
  registerHealth(router, options.health);
  if (options.reflection) registerReflection(router);
  else registerReflectionOff(router);
}

/**
 * Services that need no token and make no spans: probes and tooling. One set decides both; a
 * service that should be one and not the other needs a set of its own.
 */
export const INFRASTRUCTURE_SERVICES: ReadonlySet<string> = new Set([
  Health.typeName,
  ServerReflectionV1.typeName,
  ServerReflectionV1alpha.typeName,
]);

/** The services registered on `router` that health reports on: all but the infrastructure's. */
export function applicationServices(router: ConnectRouter): string[] {
  const names = new Set(router.handlers.map((handler) => handler.service.typeName));
  return [...names].filter((name) => !INFRASTRUCTURE_SERVICES.has(name));
}
