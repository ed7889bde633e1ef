/** An OTLP AnyValue: int64 becomes a number (precision past 2^53 is lost), bytes a Uint8Array. */
export type AttributeValue =
  | string
  | number
  | boolean
  | unknown[]
  | Uint8Array
  | { readonly [key: string]: unknown }
  | null;

export type Attributes = Record<string, AttributeValue>;

export type ReceivedSpanKind = 'INTERNAL' | 'SERVER' | 'CLIENT' | 'PRODUCER' | 'CONSUMER';

export type ReceivedStatusCode = 'UNSET' | 'OK' | 'ERROR';

export interface ReceivedSpan {
  /** 32 lower-case hex digits. */
  readonly traceId: string;
  /** 16 lower-case hex digits. */
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  /** From the span flags; undefined when the exporter did not say. */
  readonly parentIsRemote: boolean | undefined;
  readonly name: string;
  readonly kind: ReceivedSpanKind;
  readonly startTimeUnixNano: bigint;
  readonly endTimeUnixNano: bigint;
  readonly durationMs: number;
  readonly status: { readonly code: ReceivedStatusCode; readonly message?: string };
  readonly attributes: Attributes;
  readonly resource: Attributes;
  /** Instrumentation scope name. */
  readonly scope: string;
  readonly events: readonly ReceivedEvent[];
  readonly links: readonly ReceivedLink[];
}

export interface ReceivedEvent {
  readonly name: string;
  readonly timeUnixNano: bigint;
  readonly attributes: Attributes;
}

export interface ReceivedLink {
  readonly traceId: string;
  readonly spanId: string;
  readonly attributes: Attributes;
}

export type ReceivedMetricType = 'gauge' | 'sum' | 'histogram' | 'exponentialHistogram' | 'summary';

export interface ReceivedMetricPoint {
  readonly attributes: Attributes;
  readonly startTimeUnixNano: bigint;
  readonly timeUnixNano: bigint;
  /** Gauge and sum points. */
  readonly value?: number;
  /** Histogram and summary points. */
  readonly count?: number;
  readonly sum?: number;
  readonly min?: number;
  readonly max?: number;
  /** Explicit-bucket histogram points. */
  readonly bucketCounts?: readonly number[];
  readonly explicitBounds?: readonly number[];
}

/** One metric from one export: cumulative metrics arrive again with every export. */
export interface ReceivedMetric {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  readonly type: ReceivedMetricType;
  readonly temporality?: 'DELTA' | 'CUMULATIVE';
  readonly isMonotonic?: boolean;
  readonly resource: Attributes;
  readonly scope: string;
  readonly points: readonly ReceivedMetricPoint[];
}
