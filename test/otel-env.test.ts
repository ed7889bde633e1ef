import { afterEach, describe, expect, it } from 'vitest';
import { otlpEndpointIsGoogle } from '../src/telemetry/otel-env.js';

const VARIABLES = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'];

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
