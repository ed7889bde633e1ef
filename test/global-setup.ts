import { execFileSync } from 'node:child_process';

/** Every end-to-end test runs the production build, as the container does. */
export default function buildOnce(): void {
  execFileSync(process.execPath, ['scripts/build.mjs'], { stdio: 'inherit' });
}
