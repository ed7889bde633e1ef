export {
  decodeMetricsRequest,
  decodeTraceRequest,
  type OtlpFormat,
  otlpFormatOf,
} from './decode-request.ts';
export {
  type MetricsListener,
  type OtlpReceiver,
  type OtlpReceiverBehaviour,
  type OtlpReceiverOptions,
  type SpansListener,
  startOtlpReceiver,
} from './receiver.ts';
export {
  createTraceTreePrinter,
  DEFAULT_KEY_ATTRIBUTES,
  formatTraceTree,
  type TraceTreeOptions,
  type TraceTreePrinter,
  type TraceTreePrinterOptions,
} from './trace-tree.ts';
export type {
  Attributes,
  AttributeValue,
  ReceivedEvent,
  ReceivedLink,
  ReceivedMetric,
  ReceivedMetricPoint,
  ReceivedMetricType,
  ReceivedSpan,
  ReceivedSpanKind,
  ReceivedStatusCode,
} from './types.ts';
export type { WaitForOptions } from './wait-for.ts';
