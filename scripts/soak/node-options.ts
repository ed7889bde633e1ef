import { readFileSync } from 'node:fs';

const DOCKERFILE = new URL('../../Dockerfile', import.meta.url);

/**
 * Node options as on a Cloud Run instance of `memoryMiB`: the image's own NODE_OPTIONS (read
 * from the Dockerfile, so the two cannot drift apart) plus the heap limit Node derives from
 * the container's memory limit (half of it, up to 2 GiB; Node has been cgroup-aware since v12).
 * On a machine without that limit V8 sizes its heap from the host's memory instead and lets RSS
 * balloon long before it collects, which says nothing about the service.
 */
export function instanceNodeOptions(memoryMiB: number): string {
  let image = '';
  try {
    image = /NODE_OPTIONS="([^"]*)"/.exec(readFileSync(DOCKERFILE, 'utf8'))?.[1] ?? '';
  } catch {
    // No Dockerfile: only the heap limit.
  }
  const heapMiB = Math.min(2048, Math.floor(memoryMiB / 2));
  return `${image} --max-old-space-size=${heapMiB}`.trim();
}
