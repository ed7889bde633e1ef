/*
 * Incubating semantic-convention names we use, copied here as the OpenTelemetry JS
 * guidelines advise (the incubating entry point is not for production imports), the few names
 * of our own (marked so), and the duration buckets the conventions advise.
 * Stable names come from @opentelemetry/semantic-conventions directly.
 * Convention version followed: 1.45 (stable HTTP; RPC `rpc.system.name`, `rpc.method`,
 * `rpc.status_code`, `rpc.{server,client}.call.duration`).
 */
export const ATTR_ENDUSER_ID = 'enduser.id';
export const ATTR_SERVICE_NAMESPACE = 'service.namespace';
export const ATTR_SERVICE_INSTANCE_ID = 'service.instance.id';
export const ATTR_DEPLOYMENT_ENVIRONMENT_NAME = 'deployment.environment.name';
/** On Cloud Run: the project id. */
export const ATTR_CLOUD_ACCOUNT_ID = 'cloud.account.id';
export const ATTR_CLOUD_PROVIDER = 'cloud.provider';
export const CLOUD_PROVIDER_VALUE_GCP = 'gcp';
export const ATTR_CLOUD_PLATFORM = 'cloud.platform';
export const CLOUD_PLATFORM_VALUE_GCP_CLOUD_RUN = 'gcp_cloud_run';
export const ATTR_CLOUD_REGION = 'cloud.region';
/** On Cloud Run: the service (`K_SERVICE`), revision (`K_REVISION`) and instance id. */
export const ATTR_FAAS_NAME = 'faas.name';
export const ATTR_FAAS_VERSION = 'faas.version';
export const ATTR_FAAS_INSTANCE = 'faas.instance';
export const RPC_SYSTEM_NAME_VALUE_CONNECTRPC = 'connectrpc';
/** Ours: marks the link to the span that Google's front end put between caller and callee. */
export const ATTR_LINK_FRONT_END_SPAN = 'cloud_run.front_end_span';
/** Listed with the known methods in the note on `http.request.method` (1.45), incubating as a value. */
export const HTTP_REQUEST_METHOD_VALUE_QUERY = 'QUERY';
/** The keys whose values `url.query` SHOULD redact by default (its note, 1.45), case-sensitive. */
export const URL_QUERY_REDACTED_KEYS: ReadonlySet<string> = new Set([
  'X-Amz-Signature',
  'X-Amz-Credential',
  'X-Amz-Security-Token',
  'AWSAccessKeyId',
  'Signature',
  'sig',
  'X-Goog-Signature',
]);

/** `rpc.method` for a method the server does not have (the method is in `rpc.method_original`). */
export const RPC_METHOD_VALUE_OTHER = '_OTHER';

/**
 * The bucket boundaries the stable HTTP conventions advise for `http.server.request.duration`
 * (seconds), used for the RPC durations too: one scale for both hops.
 */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];
