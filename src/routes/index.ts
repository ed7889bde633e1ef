import { greetRoute } from './greet.js';

export { healthRoutes, PROBE_PATHS, UNTRACED_PATHS } from './health.js';
export type { RouteDeps } from './route-deps.js';

/** The REST routes. Adding one: a file in src/routes/ and one entry here. */
export const routes = [greetRoute];
