import type { RouteOptions } from 'fastify';
import FindMyWay from 'find-my-way';

export type RouteTemplates = {
  /** Fastify's `onRoute` hook: keeps the route's template. */
  add(route: Pick<RouteOptions, 'method' | 'url'>): void;
  /** The template a route of `method` has for `path` (without its query), if any. */
  find(method: string, path: string): string | undefined;
};

/**
 * The route templates of an app, matched as Fastify matches them (the same router, find-my-way,
 * with the same options), for requests Fastify did not route: a path with a route for another
 * method (405) is named by that route in its span and metrics. Fastify's `findRoute` says only
 * whether a route matches, not which.
 */
export function createRouteTemplates(
  routerOptions: { maxParamLength?: number } = {},
): RouteTemplates {
  // Only paths Fastify matched are looked up: one whose parameter is over Fastify's limit (its
  // 414) is still named, so there is no limit here.
  const router = FindMyWay({ ...routerOptions, maxParamLength: Number.MAX_SAFE_INTEGER });
  const noop = () => {};
  return {
    add({ method, url }) {
      if (!url) return;
      for (const one of Array.isArray(method) ? method : [method]) {
        // Another route for the same method and template (a constraint's): the template is kept.
        if (!router.hasRoute(one as FindMyWay.HTTPMethod, url)) {
          router.on(one as FindMyWay.HTTPMethod, url, noop, url);
        }
      }
    },
    find(method, path) {
      const found =
        router.find(method as FindMyWay.HTTPMethod, path) ??
        // A plugin's '/' route under a prefix: Fastify serves `/v1/` too, but reports only `/v1`.
        (path.length > 1 && path.endsWith('/')
          ? router.find(method as FindMyWay.HTTPMethod, path.slice(0, -1))
          : null);
      return typeof found?.store === 'string' ? found.store : undefined;
    },
  };
}
