// The packages the production bundle (scripts/build.mjs) leaves out and loads from node_modules
// at run time. The image ships these and their dependencies, nothing else
// (scripts/runtime-deps.mjs): a package added here is in the image too.
export const bundleExternals = [
  // Loaded only when stdout is a terminal.
  'pino-pretty',
  // Serves Swagger UI's assets from its own folder.
  '@fastify/swagger-ui',
];
