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

FROM node:24-slim AS runtime
ENV NODE_ENV=production \
    NODE_OPTIONS="--max-semi-space-size=16"
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
USER node
EXPOSE 8080
# Start node directly (not npm) so SIGTERM reaches the process.
CMD ["node", "dist/entry/main.js"]
