import type { ColdStartCase } from './cold-start.ts';
import type { PairConfig } from './end-to-end.ts';
import type { BenchBuild } from './servers.ts';
import type { SpanSink } from './span-sinks.ts';

/** The configurations under test: how each process is started, by name. */

export type Telemetry = 'off' | 'default' | 'export' | 'cloud-run';

const TELEMETRY: readonly Telemetry[] = ['off', 'default', 'export', 'cloud-run'];

/*
 * What Cloud Run's front end adds to a request it does not sample (it samples about 0.1 request
 * per second per instance): its own span as the parent, flags 00, in both headers.
 */
const FRONT_END_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const FRONT_END_UNSAMPLED_HEADERS: Readonly<Record<string, string>> = {
  traceparent: `00-${FRONT_END_TRACE}-00f067aa0ba902b7-00`,
  'x-cloud-trace-context': `${FRONT_END_TRACE}/67667974448284343;o=0`,
};

/** The headers each load request carries under a telemetry setting. */
export function loadHeaders(telemetry: Telemetry): Readonly<Record<string, string>> {
  return telemetry === 'cloud-run' ? FRONT_END_UNSAMPLED_HEADERS : {};
}

/** Spans one POST /greet of the load makes, per role. */
function spansPerRequest(telemetry: Telemetry): { api: number; backend: number } {
  if (telemetry === 'off' || telemetry === 'cloud-run') return { api: 0, backend: 0 };
  return { api: 2, backend: 1 };
}

/** A `--telemetry` option's value, checked. */
export function parseTelemetry(value: string): Telemetry {
  if (!(TELEMETRY as readonly string[]).includes(value))
    throw new Error(`--telemetry ${value}: use ${TELEMETRY.join(', ')}`);
  return value as Telemetry;
}

/** What every product process shares: the build it runs, where it exports, the image's flags. */
export type Product = { entry: string; sink: SpanSink; shippedNodeOptions: string | undefined };

/** The product's log level under load: the default, so each request writes its access line. */
export const LOG_LEVEL = 'info';

export function productEnv(
  product: Product,
  telemetry: Telemetry,
  configId: string,
  logLevel = LOG_LEVEL,
): Record<string, string> {
  const env: Record<string, string> = { NODE_ENV: 'production', LOG_LEVEL: logLevel };
  if (telemetry === 'off') env.OTEL_SDK_DISABLED = 'true';
  if (telemetry === 'export') env.OTEL_TRACES_SAMPLER = 'always_on';
  // cloud-run keeps the default sampler (parent-based: the front end's flag decides) and flushes
  // spans before each answer, as Cloud Run's default billing (CPU only during requests) has it.
  if (telemetry === 'cloud-run') env.TELEMETRY_EXPORT_MODE = 'request';
  if (telemetry === 'export' || telemetry === 'cloud-run') {
    Object.assign(env, {
      OTEL_EXPORTER_OTLP_ENDPOINT: product.sink.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      // Lets the sink count spans per configuration.
      OTEL_RESOURCE_ATTRIBUTES: `bench.config=${configId}`,
    });
  }
  return env;
}

type ProductPairOptions = {
  id: string;
  label: string;
  telemetry: Telemetry;
  /** Default: the Dockerfile's. */
  nodeOptions?: string | undefined;
  /** Default: LOG_LEVEL, so each request writes its access line. */
  logLevel?: string;
};

export function productPair(product: Product, options: ProductPairOptions): PairConfig {
  const role = {
    script: product.entry,
    env: productEnv(product, options.telemetry, options.id, options.logLevel),
    nodeOptions: 'nodeOptions' in options ? options.nodeOptions : product.shippedNodeOptions,
  };
  return {
    id: options.id,
    label: options.label,
    api: role,
    backend: role,
    headers: loadHeaders(options.telemetry),
    spansPerRequest: spansPerRequest(options.telemetry),
  };
}

export function baselinePair(bundles: BenchBuild): PairConfig {
  return {
    id: 'baseline',
    label: 'framework-free baseline (node:http + node:http2)',
    api: { script: bundles['baseline-api'], env: {} },
    backend: { script: bundles['baseline-backend'], env: {} },
  };
}

/**
 * Where the api's cost per request comes from, between the baseline and the product: the
 * baseline api's handler on Fastify (against the baseline backend), and the product with
 * telemetry off and without its access line.
 */
export function breakdownConfigs(product: Product, bundles: BenchBuild): PairConfig[] {
  return [
    {
      id: 'fastify',
      label: "the baseline api's handler on Fastify (no schema, no logger), baseline backend",
      api: { script: bundles['fastify-api'], env: {} },
      backend: { script: bundles['baseline-backend'], env: {} },
    },
    productPair(product, {
      id: 'off-quiet',
      label: 'product, telemetry off, no access line (LOG_LEVEL=warn)',
      telemetry: 'off',
      logLevel: 'warn',
    }),
  ];
}

/** The exported configuration with other NODE_OPTIONS, derived from the Dockerfile's. */
export type MemoryVariant = {
  id: string;
  label: string;
  /** undefined: V8's own defaults. */
  nodeOptions: (shipped: string | undefined) => string | undefined;
};

/**
 * Baseline, the four telemetry settings with the Dockerfile's NODE_OPTIONS, and the exported
 * setting again with each memory variant that differs from the Dockerfile's.
 */
export function endToEndConfigs(
  product: Product,
  bundles: BenchBuild,
  memoryVariants: readonly MemoryVariant[],
  breakdown: boolean,
): PairConfig[] {
  const configs = [
    baselinePair(bundles),
    productPair(product, { id: 'off', label: 'product, telemetry off', telemetry: 'off' }),
    productPair(product, {
      id: 'default',
      label: 'product, telemetry on (default sampler, no exporter)',
      telemetry: 'default',
    }),
    productPair(product, {
      id: 'export',
      label: 'product, 100% sampled + OTLP export',
      telemetry: 'export',
    }),
    productPair(product, {
      id: 'cloud-run',
      label:
        "product as on Cloud Run: OTLP export, default sampler, the front end's unsampled traceparent",
      telemetry: 'cloud-run',
    }),
  ];
  if (breakdown) configs.push(...breakdownConfigs(product, bundles));
  for (const variant of memoryVariants) {
    const nodeOptions = variant.nodeOptions(product.shippedNodeOptions);
    if (nodeOptions === product.shippedNodeOptions) continue;
    configs.push(
      productPair(product, {
        id: `export-${variant.id}`,
        label: `product, 100% sampled + OTLP export, ${variant.label}`,
        telemetry: 'export',
        nodeOptions,
      }),
    );
  }
  return configs;
}

/**
 * Each role as the image starts it: the full telemetry SDK (OTLP traces and metrics) and the
 * compile cache the image fills at build (`scripts/warm-compile-cache.mjs`); the same as on
 * Cloud Run (`K_SERVICE` set, a local metadata server at `metadataHost`), where each role also
 * asks the metadata server for its resource attributes and flushes a sampled answer's spans before
 * sending it (spans still go to the local sink, so no Google token is needed); the same without
 * the cache; and the framework-free servers as the floor.
 */
export function coldStartCases(
  product: Product,
  bundles: BenchBuild,
  backendUrl: string,
  compileCache: string,
  metadataHost: string,
): ColdStartCase[] {
  const uncached = productEnv(product, 'export', 'cold-start');
  const env = { ...uncached, NODE_COMPILE_CACHE: compileCache };
  const onCloudRun = (service: string) => ({
    ...env,
    K_SERVICE: service,
    K_REVISION: `${service}-00001-abc`,
    K_CONFIGURATION: service,
    GCE_METADATA_HOST: metadataHost,
  });
  const common = { script: product.entry, nodeOptions: product.shippedNodeOptions };
  const asShipped =
    'as the image starts it (full telemetry SDK, compile cache from the image build)';
  const asOnCloudRun =
    'the same as on Cloud Run (K_SERVICE, a local metadata server; OTLP still to the local sink)';
  return [
    {
      id: 'backend',
      label: `backend role, ${asShipped}`,
      spec: { ...common, name: 'backend', role: 'backend', env },
    },
    {
      id: 'api',
      label: `api role, ${asShipped}`,
      spec: { ...common, name: 'api', role: 'api', env, backendUrl },
    },
    {
      id: 'backend-cloud-run',
      label: `backend role, ${asOnCloudRun}`,
      spec: { ...common, name: 'backend', role: 'backend', env: onCloudRun('greeter-backend') },
    },
    {
      id: 'api-cloud-run',
      label: `api role, ${asOnCloudRun}`,
      spec: { ...common, name: 'api', role: 'api', env: onCloudRun('greeter-api'), backendUrl },
    },
    {
      id: 'backend-uncached',
      label: 'backend role, same without the compile cache',
      spec: { ...common, name: 'backend', role: 'backend', env: uncached },
    },
    {
      id: 'api-uncached',
      label: 'api role, same without the compile cache',
      spec: { ...common, name: 'api', role: 'api', env: uncached, backendUrl },
    },
    {
      id: 'baseline-backend',
      label: 'framework-free backend (floor: Node start + node:http2)',
      spec: {
        name: 'baseline backend',
        role: 'backend',
        script: bundles['baseline-backend'],
        env: {},
      },
    },
    {
      id: 'baseline-api',
      label: 'framework-free api (floor: Node start + node:http)',
      spec: {
        name: 'baseline api',
        role: 'api',
        script: bundles['baseline-api'],
        env: {},
        backendUrl,
      },
    },
  ];
}
