/**
 * An error's type for spans and log lines: its `name`, which libraries set on their errors
 * (`ConnectError`) and bundlers leave alone; its class's name only for a subclass that kept
 * `Error`, as the bundle may rename classes (esbuild's `_ConnectError`).
 */
export function errorType(error: Error): string {
  if (error.name && error.name !== 'Error') return error.name;
  return error.constructor?.name || 'Error';
}
