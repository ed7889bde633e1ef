export type { CloudRunPropagatorOptions, LinkedSpanContext } from './cloud-run-propagator.js';
export {
  CLIENT_TRACE_PARENT_HEADER,
  createCloudRunPropagator,
  getLinkedSpanContext,
} from './cloud-run-propagator.js';
export {
  CLOUD_TRACE_CONTEXT_HEADER,
  formatCloudTraceContext,
  parseCloudTraceContext,
} from './cloud-trace-context.js';
export { formatTraceParent, parseTraceParent } from './trace-parent.js';
