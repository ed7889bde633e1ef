/**
 * A `grpc-timeout` value in milliseconds. gRPC's TimeoutValue is a positive whole number of at
 * most 8 digits: rounded up, at least 1.
 */
export function grpcTimeout(ms: number): string {
  return `${Math.min(Math.max(Math.ceil(ms), 1), 99_999_999)}m`;
}
