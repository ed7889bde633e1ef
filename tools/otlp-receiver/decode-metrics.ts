import { decodeKeyValues, decodeResource, decodeScopeName } from './decode-attributes.ts';
import type { OtlpMessage } from './internal-types.ts';
import type { ReceivedMetric, ReceivedMetricPoint, ReceivedMetricType } from './types.ts';

const TEMPORALITY_NAMES = [
  'AGGREGATION_TEMPORALITY_UNSPECIFIED',
  'AGGREGATION_TEMPORALITY_DELTA',
  'AGGREGATION_TEMPORALITY_CUMULATIVE',
] as const;

interface DataField {
  readonly no: number;
  readonly name: string;
  readonly type: ReceivedMetricType;
  readonly point: (point: OtlpMessage) => ReceivedMetricPoint;
}

function times(point: OtlpMessage) {
  return {
    startTimeUnixNano: point.fixed64(2, 'startTimeUnixNano') ?? 0n,
    timeUnixNano: point.fixed64(3, 'timeUnixNano') ?? 0n,
  };
}

function optional<K extends string>(key: K, value: number | undefined): { [P in K]?: number } {
  return value === undefined ? {} : ({ [key]: value } as { [P in K]: number });
}

/** NumberDataPoint: as_double (4) or as_int (6, sfixed64). */
function numberPoint(point: OtlpMessage): ReceivedMetricPoint {
  const asInt = point.sfixed64(6, 'asInt');
  const value = asInt === undefined ? point.double(4, 'asDouble') : Number(asInt);
  return {
    attributes: decodeKeyValues(point.messages(7, 'attributes')),
    ...times(point),
    ...optional('value', value),
  };
}

function histogramPoint(point: OtlpMessage): ReceivedMetricPoint {
  const count = point.fixed64(4, 'count');
  return {
    attributes: decodeKeyValues(point.messages(9, 'attributes')),
    ...times(point),
    ...optional('count', count === undefined ? undefined : Number(count)),
    ...optional('sum', point.double(5, 'sum')),
    ...optional('min', point.double(11, 'min')),
    ...optional('max', point.double(12, 'max')),
    bucketCounts: point.fixed64List(6, 'bucketCounts').map(Number),
    explicitBounds: point.doubleList(7, 'explicitBounds'),
  };
}

function exponentialHistogramPoint(point: OtlpMessage): ReceivedMetricPoint {
  const count = point.fixed64(4, 'count');
  return {
    attributes: decodeKeyValues(point.messages(1, 'attributes')),
    ...times(point),
    ...optional('count', count === undefined ? undefined : Number(count)),
    ...optional('sum', point.double(5, 'sum')),
    ...optional('min', point.double(12, 'min')),
    ...optional('max', point.double(13, 'max')),
  };
}

function summaryPoint(point: OtlpMessage): ReceivedMetricPoint {
  const count = point.fixed64(4, 'count');
  return {
    attributes: decodeKeyValues(point.messages(7, 'attributes')),
    ...times(point),
    ...optional('count', count === undefined ? undefined : Number(count)),
    ...optional('sum', point.double(5, 'sum')),
  };
}

const DATA_FIELDS: readonly DataField[] = [
  { no: 5, name: 'gauge', type: 'gauge', point: numberPoint },
  { no: 7, name: 'sum', type: 'sum', point: numberPoint },
  { no: 9, name: 'histogram', type: 'histogram', point: histogramPoint },
  {
    no: 10,
    name: 'exponentialHistogram',
    type: 'exponentialHistogram',
    point: exponentialHistogramPoint,
  },
  { no: 11, name: 'summary', type: 'summary', point: summaryPoint },
];

function decodeMetric(
  metric: OtlpMessage,
  resource: ReceivedMetric['resource'],
  scope: string,
): ReceivedMetric | undefined {
  const field = DATA_FIELDS.find(({ no, name }) => metric.has(no, name));
  const data = field && metric.message(field.no, field.name);
  if (!field || !data) return undefined;
  const temporality = data.enumValue(2, 'aggregationTemporality', TEMPORALITY_NAMES);
  const isMonotonic = field.type === 'sum' ? (data.bool(3, 'isMonotonic') ?? false) : undefined;
  return {
    name: metric.string(1, 'name') ?? '',
    description: metric.string(2, 'description') ?? '',
    unit: metric.string(3, 'unit') ?? '',
    type: field.type,
    ...(temporality === 1 ? { temporality: 'DELTA' as const } : {}),
    ...(temporality === 2 ? { temporality: 'CUMULATIVE' as const } : {}),
    ...(isMonotonic === undefined ? {} : { isMonotonic }),
    resource,
    scope,
    points: data.messages(1, 'dataPoints').map(field.point),
  };
}

/** opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest, one entry per metric. */
export function decodeMetrics(request: OtlpMessage): ReceivedMetric[] {
  const metrics: ReceivedMetric[] = [];
  for (const resourceMetrics of request.messages(1, 'resourceMetrics')) {
    const resource = decodeResource(resourceMetrics);
    for (const scopeMetrics of resourceMetrics.messages(2, 'scopeMetrics')) {
      const scope = decodeScopeName(scopeMetrics);
      for (const metric of scopeMetrics.messages(2, 'metrics')) {
        const decoded = decodeMetric(metric, resource, scope);
        if (decoded) metrics.push(decoded);
      }
    }
  }
  return metrics;
}
