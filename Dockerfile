# syntax=docker/dockerfile:1
# One image, two roles: SERVICE_ROLE=api or SERVICE_ROLE=backend picks the role at start.

FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci
COPY tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build

# The bundle loads only the packages scripts/build.mjs keeps external from node_modules: those
# and their dependencies, at the versions package-lock.json pins, are all the image ships.
FROM node:24-slim AS runtime-deps
WORKDIR /deps
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev
COPY scripts/bundle-externals.mjs scripts/runtime-deps.mjs ./scripts/
RUN node scripts/runtime-deps.mjs . /runtime

FROM node:24-slim AS runtime
# --max-semi-space-size bounds V8's young generation: peak memory under load (docs/benchmarks.md).
ENV NODE_ENV=production \
    NODE_OPTIONS="--max-semi-space-size=8"
WORKDIR /app
RUN install -d -o node -g node .compile-cache
# Its "type": "module" makes Node read dist/*.js as ES modules.
COPY package.json ./
COPY --from=runtime-deps /runtime/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY scripts/warm-compile-cache.mjs ./scripts/
# Instances read V8's compiled code from here instead of compiling at every start. It is filled
# as the user that runs the image (Node keys the cache by user id), by starting both roles once:
# also a smoke test, the build fails if either role cannot start or serve a greeting.
ENV NODE_COMPILE_CACHE=/app/.compile-cache
# Emulated builds (linux/amd64 on an arm64 host) are slower: --build-arg WARM_DEADLINE_MS=300000
# (a build argument is in the environment of the RUN steps that follow it).
ARG WARM_DEADLINE_MS=60000
USER node
RUN node scripts/warm-compile-cache.mjs
EXPOSE 8080
# Start node directly (not npm) so SIGTERM reaches the process.
CMD ["node", "dist/entry/main.js"]
