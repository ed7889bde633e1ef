import { DiagLogLevel, diag } from '@opentelemetry/api';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  AlwaysOffSampler,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  batchOptionsFromEnv,
  diagLogLevelFromEnv,
  exporterChoices,
  hasOtlpEndpoint,
  isSdkDisabled,
  metricReaderTimingFromEnv,
  otlpEndpointIsGoogle,
  otlpProtocol,
  samplerFromEnv,
  spanLimitsFromEnv,
  warnIfPropagatorsSet,
} from '../src/telemetry/otel-env.js';

const LIMIT_VARIABLES = [
  'OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT',
  'OTEL_ATTRIBUTE_COUNT_LIMIT',
  'OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT',
  'OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT',
  'OTEL_SPAN_EVENT_COUNT_LIMIT',
  'OTEL_SPAN_LINK_COUNT_LIMIT',
  'OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT',
  'OTEL_LINK_ATTRIBUTE_COUNT_LIMIT',
] as const;

const VARIABLES = [
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_EXPORTER_OTLP_PROTOCOL',
  'OTEL_TRACES_EXPORTER',
  'OTEL_TRACES_SAMPLER',
  'OTEL_TRACES_SAMPLER_ARG',
  'OTEL_SDK_DISABLED',
  'OTEL_METRICS_EXPORTER',
  'OTEL_BSP_SCHEDULE_DELAY',
  'OTEL_BSP_EXPORT_TIMEOUT',
  'OTEL_BSP_MAX_QUEUE_SIZE',
  'OTEL_BSP_MAX_EXPORT_BATCH_SIZE',
  'OTEL_METRIC_EXPORT_INTERVAL',
  'OTEL_METRIC_EXPORT_TIMEOUT',
  'OTEL_LOG_LEVEL',
  'OTEL_PROPAGATORS',
  ...LIMIT_VARIABLES,
];

/** What the module said through diag, from warnings up, as the roles route it. */
const warnings: string[] = [];

beforeEach(() => {
  const ignore = () => {};
  diag.setLogger(
    {
      error: (message) => warnings.push(message),
      warn: (message) => warnings.push(message),
      info: ignore,
      debug: ignore,
      verbose: ignore,
    },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
});

afterEach(() => {
  for (const name of VARIABLES) delete process.env[name];
  diag.disable();
  warnings.length = 0;
});

const LONGEST_TIMER_MS = 2 ** 31 - 1;

describe("Google's token goes only to Google's endpoints", () => {
  it.each([
    ['https://telemetry.googleapis.com', true],
    ['https://telemetry.googleapis.com/v1/traces', true],
    ['https://europe-west1-telemetry.googleapis.com:443', true],
    ['http://telemetry.googleapis.com', false],
    ['https://googleapis.com.example.com', false],
    ['https://example.com/telemetry.googleapis.com', false],
    ['https://example.com/?host=.googleapis.com', false],
    ['http://localhost:4318', false],
    ['not a url', false],
  ])('OTEL_EXPORTER_OTLP_ENDPOINT=%s: %s', (endpoint, google) => {
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint;
    expect(otlpEndpointIsGoogle('TRACES')).toBe(google);
    expect(otlpEndpointIsGoogle('METRICS')).toBe(google);
  });

  it('the signal-specific endpoint wins over the general one', () => {
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = 'https://telemetry.googleapis.com';
    process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = 'http://collector:4318/v1/traces';
    expect(otlpEndpointIsGoogle('TRACES')).toBe(false);
    expect(otlpEndpointIsGoogle('METRICS')).toBe(true);
  });

  it('an endpoint that is not a URL is named once and counts as unset', () => {
    process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = 'collector';
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = 'https://telemetry.googleapis.com';
    expect(otlpEndpointIsGoogle('TRACES')).toBe(true);
    expect(otlpEndpointIsGoogle('TRACES')).toBe(true);
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = 'otel collector';
    expect(otlpEndpointIsGoogle('METRICS')).toBe(false);
    expect(hasOtlpEndpoint('METRICS')).toBe(false);
    expect(warnings).toEqual([
      'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector is not a URL (such as http://host:4318); ignored, as if unset.',
      'OTEL_EXPORTER_OTLP_ENDPOINT=otel collector is not a URL (such as http://host:4318); ignored, as if unset.',
    ]);
  });

  it('no endpoint set: the default is decided elsewhere', () => {
    expect(otlpEndpointIsGoogle('TRACES')).toBe(false);
  });
});

describe('enum values are case-insensitive, as the specification asks', () => {
  it('reads exporters, protocol, sampler and OTEL_SDK_DISABLED in any case, with blanks', () => {
    process.env.OTEL_TRACES_EXPORTER = 'OTLP, Console';
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL = ' HTTP/JSON ';
    process.env.OTEL_TRACES_SAMPLER = 'ParentBased_Always_Off';
    process.env.OTEL_SDK_DISABLED = ' TRUE ';
    expect(exporterChoices('OTEL_TRACES_EXPORTER', 'none')).toEqual(['otlp', 'console']);
    expect(otlpProtocol('TRACES')).toBe('http/json');
    expect(samplerFromEnv().toString()).toContain('AlwaysOffSampler');
    expect(isSdkDisabled()).toBe(true);
  });

  it('an OTLP protocol it cannot use is named once, with its variable and http/protobuf used', () => {
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'grpc';
    expect(otlpProtocol('TRACES')).toBe('http/protobuf');
    expect(otlpProtocol('METRICS')).toBe('http/protobuf');
    process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = 'Thrift';
    expect(otlpProtocol('TRACES')).toBe('http/protobuf');
    expect(warnings).toEqual([
      'OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported here (use http/protobuf or http/json); using http/protobuf.',
      'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=Thrift is not supported here (use http/protobuf or http/json); using http/protobuf.',
    ]);
    delete process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL;
  });

  it('TraceIdRatio with its argument, and ALWAYS_OFF', () => {
    process.env.OTEL_TRACES_SAMPLER = 'TraceIdRatio';
    process.env.OTEL_TRACES_SAMPLER_ARG = '0.25';
    const ratio = samplerFromEnv();
    expect(ratio).toBeInstanceOf(TraceIdRatioBasedSampler);
    expect(ratio.toString()).toContain('0.25');
    process.env.OTEL_TRACES_SAMPLER = 'ALWAYS_OFF';
    expect(samplerFromEnv()).toBeInstanceOf(AlwaysOffSampler);
  });

  it('an unset OTEL_SDK_DISABLED or "false" keeps the SDK on', () => {
    expect(isSdkDisabled()).toBe(false);
    process.env.OTEL_SDK_DISABLED = 'False';
    expect(isSdkDisabled()).toBe(false);
  });
});

describe('exporter lists: a value it cannot use is named, and the default is used when none is left', () => {
  const use = '(use otlp, console or none)';
  it.each([
    // variable, value, the role's default, exporters, warnings
    ['OTEL_TRACES_EXPORTER', undefined, 'otlp', ['otlp'], []],
    ['OTEL_TRACES_EXPORTER', 'none', 'otlp', [], []],
    [
      'OTEL_TRACES_EXPORTER',
      'zipkin',
      'otlp',
      ['otlp'],
      [`OTEL_TRACES_EXPORTER=zipkin names no supported exporter ${use}; using the default, otlp.`],
    ],
    [
      'OTEL_METRICS_EXPORTER',
      'Prometheus',
      'otlp',
      ['otlp'],
      [
        `OTEL_METRICS_EXPORTER=Prometheus names no supported exporter ${use}; using the default, otlp.`,
      ],
    ],
    [
      'OTEL_METRICS_EXPORTER',
      'prometheus',
      'none',
      [],
      [
        `OTEL_METRICS_EXPORTER=prometheus names no supported exporter ${use}; using the default, none: nothing is exported.`,
      ],
    ],
    [
      'OTEL_TRACES_EXPORTER',
      ' , ',
      'otlp',
      ['otlp'],
      [`OTEL_TRACES_EXPORTER=, names no supported exporter ${use}; using the default, otlp.`],
    ],
    [
      'OTEL_TRACES_EXPORTER',
      'zipkin,jaeger',
      'console',
      ['console'],
      [
        `OTEL_TRACES_EXPORTER=zipkin,jaeger names no supported exporter ${use}; using the default, console.`,
      ],
    ],
    [
      'OTEL_TRACES_EXPORTER',
      'console,zipkin',
      'otlp',
      ['console'],
      [`OTEL_TRACES_EXPORTER=console,zipkin: zipkin is not supported here ${use}; ignored.`],
    ],
    [
      'OTEL_TRACES_EXPORTER',
      'zipkin,none',
      'otlp',
      [],
      [`OTEL_TRACES_EXPORTER=zipkin,none: zipkin is not supported here ${use}; ignored.`],
    ],
    [
      'OTEL_TRACES_EXPORTER',
      'otlp,none',
      'otlp',
      [],
      ['OTEL_TRACES_EXPORTER=otlp,none includes none: nothing is exported.'],
    ],
    ['OTEL_TRACES_EXPORTER', 'otlp,console,otlp', 'none', ['otlp', 'console'], []],
  ] as const)('%s=%j with default %s: %j', (variable, value, fallback, exporters, said) => {
    if (value !== undefined) process.env[variable] = value;
    expect(exporterChoices(variable, fallback)).toEqual(exporters);
    expect(warnings).toEqual(said);
  });
});

describe('numbers: a value it cannot use is named with the default used instead', () => {
  const range = (unit: string, min: number) =>
    `a whole number of ${unit} from ${min} to ${LONGEST_TIMER_MS}`;
  it.each([
    // The spec's Duration: 0 is valid, and exports at once.
    ['OTEL_BSP_SCHEDULE_DELAY', '0', { scheduledDelayMillis: 0 }, []],
    ['OTEL_BSP_SCHEDULE_DELAY', '250', { scheduledDelayMillis: 250 }, []],
    [
      'OTEL_BSP_SCHEDULE_DELAY',
      '-5',
      {},
      [`OTEL_BSP_SCHEDULE_DELAY=-5 is not ${range('milliseconds', 0)}; using the default, 5000.`],
    ],
    // Past 2³¹ − 1 ms a Node timer fires after 1 ms: an export per span.
    [
      'OTEL_BSP_SCHEDULE_DELAY',
      '3000000000',
      {},
      [
        `OTEL_BSP_SCHEDULE_DELAY=3000000000 is not ${range('milliseconds', 0)}; using the default, 5000.`,
      ],
    ],
    // The spec's Timeout: 0 means no limit.
    ['OTEL_BSP_EXPORT_TIMEOUT', '0', { exportTimeoutMillis: LONGEST_TIMER_MS }, []],
    [
      'OTEL_BSP_EXPORT_TIMEOUT',
      'Infinity',
      {},
      [
        `OTEL_BSP_EXPORT_TIMEOUT=Infinity is not ${range('milliseconds', 0)}; using the default, 30000.`,
      ],
    ],
    ['OTEL_BSP_MAX_QUEUE_SIZE', '4', { maxQueueSize: 4 }, []],
    [
      'OTEL_BSP_MAX_QUEUE_SIZE',
      '0',
      {},
      [`OTEL_BSP_MAX_QUEUE_SIZE=0 is not ${range('spans', 1)}; using the default, 2048.`],
    ],
    [
      'OTEL_BSP_MAX_QUEUE_SIZE',
      '-1',
      {},
      [`OTEL_BSP_MAX_QUEUE_SIZE=-1 is not ${range('spans', 1)}; using the default, 2048.`],
    ],
    // A fractional batch size makes the processor export empty batches in a loop.
    [
      'OTEL_BSP_MAX_EXPORT_BATCH_SIZE',
      '0.5',
      {},
      [`OTEL_BSP_MAX_EXPORT_BATCH_SIZE=0.5 is not ${range('spans', 1)}; using the default, 512.`],
    ],
  ] as const)('%s=%s', (variable, value, options, said) => {
    process.env[variable] = value;
    expect(batchOptionsFromEnv()).toEqual(options);
    expect(warnings).toEqual(said);
  });

  it('text that is not a number is named once, with the default used instead', () => {
    process.env.OTEL_BSP_SCHEDULE_DELAY = 'soon';
    process.env.OTEL_METRIC_EXPORT_TIMEOUT = '5s';
    expect(batchOptionsFromEnv()).toEqual({});
    expect(metricReaderTimingFromEnv()).toEqual({
      exportIntervalMillis: 60_000,
      exportTimeoutMillis: 30_000,
    });
    expect(warnings).toEqual([
      `OTEL_BSP_SCHEDULE_DELAY=soon is not ${range('milliseconds', 0)}; using the default, 5000.`,
      `OTEL_METRIC_EXPORT_TIMEOUT=5s is not ${range('milliseconds', 0)}; using the default, 30000.`,
    ]);
  });

  it('OTEL_TRACES_SAMPLER_ARG that is not a number from 0 to 1 is named, and 1 used', () => {
    process.env.OTEL_TRACES_SAMPLER = 'traceidratio';
    for (const arg of ['half', '1.5']) {
      process.env.OTEL_TRACES_SAMPLER_ARG = arg;
      expect(samplerFromEnv().toString()).toBe('TraceIdRatioBased{1}');
    }
    expect(warnings).toEqual([
      'OTEL_TRACES_SAMPLER_ARG=half is not a number from 0 to 1; using 1.',
      'OTEL_TRACES_SAMPLER_ARG=1.5 is not a number from 0 to 1; using 1.',
    ]);
  });
});

describe('metric export interval and timeout', () => {
  const range = (min: number) =>
    `a whole number of milliseconds from ${min} to ${LONGEST_TIMER_MS}`;
  it.each([
    // interval, timeout, what the reader gets, warnings
    [undefined, undefined, [60_000, 30_000], []],
    // The default timeout follows a shorter interval quietly, as the SDK does.
    ['200', undefined, [200, 200], []],
    [undefined, '5000', [60_000, 5_000], []],
    // The spec's Timeout: 0 means no limit, which is the interval here.
    [undefined, '0', [60_000, 60_000], []],
    [
      '1000',
      '5000',
      [1_000, 1_000],
      ['OTEL_METRIC_EXPORT_TIMEOUT=5000 is longer than the export interval (1000 ms); using 1000.'],
    ],
    [
      '-5',
      undefined,
      [60_000, 30_000],
      [`OTEL_METRIC_EXPORT_INTERVAL=-5 is not ${range(1)}; using the default, 60000.`],
    ],
    [
      '0',
      undefined,
      [60_000, 30_000],
      [`OTEL_METRIC_EXPORT_INTERVAL=0 is not ${range(1)}; using the default, 60000.`],
    ],
    [
      '1e10',
      undefined,
      [60_000, 30_000],
      [`OTEL_METRIC_EXPORT_INTERVAL=1e10 is not ${range(1)}; using the default, 60000.`],
    ],
    [
      undefined,
      '-1',
      [60_000, 30_000],
      [`OTEL_METRIC_EXPORT_TIMEOUT=-1 is not ${range(0)}; using the default, 30000.`],
    ],
  ] as const)('interval %s, timeout %s: %j', (interval, timeout, [intervalMs, timeoutMs], said) => {
    if (interval !== undefined) process.env.OTEL_METRIC_EXPORT_INTERVAL = interval;
    if (timeout !== undefined) process.env.OTEL_METRIC_EXPORT_TIMEOUT = timeout;
    const timing = metricReaderTimingFromEnv();
    expect(timing).toEqual({ exportIntervalMillis: intervalMs, exportTimeoutMillis: timeoutMs });
    expect(warnings).toEqual(said);
    // The SDK's reader takes what it is given (it throws on a timeout longer than the interval).
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    expect(() => new PeriodicExportingMetricReader({ exporter, ...timing })).not.toThrow();
  });
});

describe('OTEL_LOG_LEVEL and OTEL_PROPAGATORS', () => {
  it.each([
    [undefined, undefined],
    ['NONE', DiagLogLevel.NONE],
    ['error', DiagLogLevel.ERROR],
    ['Warn', DiagLogLevel.WARN],
    ['info', DiagLogLevel.INFO],
    [' debug ', DiagLogLevel.DEBUG],
    ['VERBOSE', DiagLogLevel.VERBOSE],
    ['all', DiagLogLevel.ALL],
  ] as const)('OTEL_LOG_LEVEL=%j: %s', (value, level) => {
    if (value !== undefined) process.env.OTEL_LOG_LEVEL = value;
    expect(diagLogLevelFromEnv()).toBe(level);
    expect(warnings).toEqual([]);
  });

  it('an unknown OTEL_LOG_LEVEL is named, and the default (warn) stays', () => {
    process.env.OTEL_LOG_LEVEL = 'Loud';
    expect(diagLogLevelFromEnv()).toBeUndefined();
    expect(warnings).toEqual([
      'OTEL_LOG_LEVEL=Loud is not supported (use none, error, warn, info, debug, verbose or all); using the default, warn.',
    ]);
  });

  it('OTEL_PROPAGATORS set: one warning that it is ignored; unset or empty: nothing', () => {
    process.env.OTEL_PROPAGATORS = ' ';
    warnIfPropagatorsSet();
    expect(warnings).toEqual([]);
    process.env.OTEL_PROPAGATORS = 'b3,none';
    warnIfPropagatorsSet();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^OTEL_PROPAGATORS=b3,none is ignored: /);
  });
});

describe('span and attribute limits', () => {
  const SPEC_DEFAULTS = {
    attributeValueLengthLimit: Number.POSITIVE_INFINITY,
    attributeCountLimit: 128,
    eventCountLimit: 128,
    linkCountLimit: 128,
    attributePerEventCountLimit: 128,
    attributePerLinkCountLimit: 128,
  };
  const range = (unit: string, min: number) =>
    `a whole number of ${unit} from ${min} to ${LONGEST_TIMER_MS}`;
  type LimitVariable = (typeof LIMIT_VARIABLES)[number];

  it.each([
    // what is set, the limits in force (besides the spec's defaults), warnings
    [{}, {}, []],
    [
      { OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '8', OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '3' },
      { attributeValueLengthLimit: 8, attributeCountLimit: 3 },
      [],
    ],
    [
      {
        OTEL_SPAN_EVENT_COUNT_LIMIT: '4',
        OTEL_SPAN_LINK_COUNT_LIMIT: '5',
        OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT: '6',
        OTEL_LINK_ATTRIBUTE_COUNT_LIMIT: '7',
      },
      {
        eventCountLimit: 4,
        linkCountLimit: 5,
        attributePerEventCountLimit: 6,
        attributePerLinkCountLimit: 7,
      },
      [],
    ],
    // The general limits apply to every attribute collection: spans, events and links.
    [
      { OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '100', OTEL_ATTRIBUTE_COUNT_LIMIT: '10' },
      {
        attributeValueLengthLimit: 100,
        attributeCountLimit: 10,
        attributePerEventCountLimit: 10,
        attributePerLinkCountLimit: 10,
      },
      [],
    ],
    // The span-specific ones win over the general ones.
    [
      {
        OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '100',
        OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '20',
        OTEL_ATTRIBUTE_COUNT_LIMIT: '10',
        OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '50',
        OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT: '2',
      },
      {
        attributeValueLengthLimit: 20,
        attributeCountLimit: 50,
        attributePerEventCountLimit: 2,
        attributePerLinkCountLimit: 10,
      },
      [],
    ],
    // Counts of 0 are valid: nothing is kept.
    [
      { OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '0', OTEL_SPAN_EVENT_COUNT_LIMIT: '0' },
      { attributeCountLimit: 0, eventCountLimit: 0 },
      [],
    ],
    // A length of 0 is not: the SDK would ignore it, with a warning at every attribute.
    [
      { OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '0' },
      {},
      [
        `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT=0 is not ${range('characters', 1)}; using the default, no limit.`,
      ],
    ],
    // An unusable span-specific value counts as unset: the general one applies, and is named.
    [
      { OTEL_ATTRIBUTE_COUNT_LIMIT: '64', OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '-1' },
      { attributeCountLimit: 64, attributePerEventCountLimit: 64, attributePerLinkCountLimit: 64 },
      [
        `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=-1 is not ${range('attributes', 0)}; using the default, 64.`,
      ],
    ],
    [
      { OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '256', OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '1.5' },
      { attributeValueLengthLimit: 256 },
      [
        `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT=1.5 is not ${range('characters', 1)}; using the default, 256.`,
      ],
    ],
    [
      { OTEL_ATTRIBUTE_COUNT_LIMIT: '-5', OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '12' },
      { attributeCountLimit: 12 },
      [`OTEL_ATTRIBUTE_COUNT_LIMIT=-5 is not ${range('attributes', 0)}; using the default, 128.`],
    ],
    [
      { OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: 'Infinity', OTEL_SPAN_LINK_COUNT_LIMIT: '3000000000' },
      {},
      [
        `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=Infinity is not ${range('characters', 1)}; using the default, no limit.`,
        `OTEL_SPAN_LINK_COUNT_LIMIT=3000000000 is not ${range('links', 0)}; using the default, 128.`,
      ],
    ],
  ] as const)('%j', (set, limits, said) => {
    for (const [variable, value] of Object.entries(set)) {
      process.env[variable as LimitVariable] = value;
    }
    expect(spanLimitsFromEnv()).toEqual({ ...SPEC_DEFAULTS, ...limits });
    expect(warnings).toEqual(said);
  });

  it('text that is not a number is named once, with the default used instead', () => {
    process.env.OTEL_SPAN_EVENT_COUNT_LIMIT = 'many';
    expect(spanLimitsFromEnv()).toEqual(SPEC_DEFAULTS);
    expect(warnings).toEqual([
      'OTEL_SPAN_EVENT_COUNT_LIMIT=many is not a whole number of events from 0 to 2147483647; using the default, 128.',
    ]);
  });

  /** The attributes a span keeps, made by a provider with these options. */
  async function recorded(options: ConstructorParameters<typeof TracerProvider>[0] = {}) {
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({
      ...options,
      spanProcessors: [new SimpleSpanProcessor({ exporter })],
    });
    const span = provider.getTracer('limits').startSpan('limited');
    span.setAttributes({ 'url.full': 'http://example.com/a/long/path', a: 1, b: 2, c: 3 });
    span.end();
    await provider.forceFlush();
    const [finished] = exporter.getFinishedSpans();
    return { attributes: finished?.attributes, dropped: finished?.droppedAttributesCount };
  }

  it('the SDK applies them as given, and reads none of these variables itself', async () => {
    process.env.OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT = '8';
    process.env.OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT = '2';
    expect(await recorded({ spanLimits: spanLimitsFromEnv() })).toEqual({
      attributes: { 'url.full': 'http://e', a: 1 },
      dropped: 2,
    });
    // Without them, the variables change nothing: they are read once, here.
    expect(await recorded()).toEqual({
      attributes: { 'url.full': 'http://example.com/a/long/path', a: 1, b: 2, c: 3 },
      dropped: 0,
    });
  });
});
