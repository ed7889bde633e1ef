import { AlwaysOffSampler, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace';
import { afterEach, describe, expect, it } from 'vitest';
import {
  exporterChoices,
  isSdkDisabled,
  otlpEndpointIsGoogle,
  otlpProtocol,
  samplerFromEnv,
} from '../src/telemetry/otel-env.js';

const VARIABLES = [
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_EXPORTER_OTLP_PROTOCOL',
  'OTEL_TRACES_EXPORTER',
  'OTEL_TRACES_SAMPLER',
  'OTEL_TRACES_SAMPLER_ARG',
  'OTEL_SDK_DISABLED',
];

afterEach(() => {
  for (const name of VARIABLES) delete process.env[name];
});

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
