export type { CloudRunPropagatorOptions } from './cloud-run-propagator.js';
export {
  CLIENT_TRACE_PARENT_HEADER,
  createCloudRunPropagator,
  getFrontEndSpanContext,
} from './cloud-run-propagator.js';
export {
  CLOUD_TRACE_CONTEXT_HEADER,
  formatCloudTraceContext,
  parseCloudTraceContext,
} from './cloud-trace-context.js';
export { formatTraceParent, parseTraceParent } from './trace-parent.js';
