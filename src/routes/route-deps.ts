import type { BackendClient } from '../api/backend-client.js';

/** What every REST route plugin receives as its options. */
export type RouteDeps = { backend: BackendClient };
