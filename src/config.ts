import {
  type Field,
  flag,
  InvalidValue,
  list,
  lowerCase,
  milliseconds,
  millisecondsOrOff,
  mustBeOneOf,
  oneOf,
  optional,
  type Reader,
  required,
  serviceUrl,
  text,
  url,
  wholeNumber,
  withDefault,
} from './config-readers.js';

export const ROLES = ['api', 'backend'] as const;
export type Role = (typeof ROLES)[number];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['json', 'pretty'] as const;
export const DEFAULT_SERVICE_NAMESPACE = 'greeter';
export const DEFAULT_DEPLOYMENT_ENVIRONMENT = 'local';

const TELEMETRY_EXPORT_MODES = ['batch', 'request'] as const;

/** What a token's `email` looks like: name@domain, nothing around it. */
const EMAIL = /^[^\s@:;,]+@[^\s@:;,]+\.[^\s@:;,]+$/;

/**
 * Why an AUTH_ALLOWED_CALLERS entry (lower case, its `serviceAccount:` prefix gone) is not an
 * email a token can carry; undefined when it is one.
 */
function callerProblem(entry: string): string | undefined {
  if (entry.includes(';')) return 'separate the emails with commas, not semicolons';
  const member = /^([a-z]+):/.exec(entry)?.[1];
  if (member) {
    return `${JSON.stringify(entry)} is an IAM member, not an email: the check matches the token's email, so list emails only (drop "${member}:"; a group or domain cannot be listed)`;
  }
  if (!EMAIL.test(entry)) {
    return `${JSON.stringify(entry)} is not an email (name@domain): list the callers' service-account emails, such as api@PROJECT_ID.iam.gserviceaccount.com`;
  }
  return undefined;
}

/**
 * Service-account emails as tokens carry them: lower case (Google's are), and the IAM member
 * form that `gcloud ... get-iam-policy` prints (`serviceAccount:…`) taken as its email.
 */
const callerList: Reader<string[]> = (value) => {
  const callers: string[] = [];
  const problems: string[] = [];
  for (const entry of list(value)) {
    const caller = entry.replace(/^serviceAccount:/i, '').toLowerCase();
    const problem = callerProblem(caller);
    if (problem) problems.push(problem);
    else callers.push(caller);
  }
  if (problems.length > 0) throw new InvalidValue(problems);
  if (callers.length === 0) {
    throw new InvalidValue([
      'lists no service account: name the callers, comma-separated, or leave it unset',
    ]);
  }
  return callers;
};

const PORT_PROBLEM = 'must be a TCP port (0-65535)';
const HTTP_URL = { httpOnly: true };

/** Every variable the roles read, in the order their problems are listed. */
const FIELDS = {
  SERVICE_ROLE: required(oneOf(ROLES), mustBeOneOf(ROLES)),
  PORT: withDefault(wholeNumber(PORT_PROBLEM, { max: [65535, PORT_PROBLEM] }), 8080),
  HOST: withDefault(text, '0.0.0.0'),
  LOG_LEVEL: withDefault(lowerCase(oneOf(LOG_LEVELS)), 'info'),
  LOG_FORMAT: optional(oneOf(LOG_FORMATS)),
  SERVICE_NAMESPACE: withDefault(text, DEFAULT_SERVICE_NAMESPACE),
  DEPLOYMENT_ENVIRONMENT: withDefault(text, DEFAULT_DEPLOYMENT_ENVIRONMENT),
  SHUTDOWN_TIMEOUT_MS: withDefault(milliseconds(9_000), 8_000),
  BACKEND_URL: optional(
    serviceUrl(
      'must be an http:// or https:// URL',
      "must be the service's base URL (scheme, host and port), without path, query or credentials",
    ),
  ),
  BACKEND_AUDIENCE: optional(url('must be a URL (the backend service URL)', HTTP_URL)),
  BACKEND_TIMEOUT_MS: withDefault(milliseconds(300_000), 5_000),
  BACKEND_MAX_ATTEMPTS: withDefault(
    wholeNumber('must be a whole number of attempts, 1 to 10', {
      min: [1, 'must be at least 1 (1 means no retry)'],
      max: [10, 'must be at most 10'],
    }),
    5,
  ),
  HTTP_HEADERS_TIMEOUT_MS: withDefault(milliseconds(300_000), 10_000),
  HTTP_REQUEST_TIMEOUT_MS: withDefault(milliseconds(300_000), 30_000),
  OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: withDefault(millisecondsOrOff(60_000), 200),
  OVERLOAD_SAMPLE_INTERVAL_MS: withDefault(
    wholeNumber('must be a whole number of milliseconds', {
      min: [10, 'must be at least 10 ms (the event-loop delay resolution)'],
      max: [60_000, 'must be at most 60000 ms'],
    }),
    1_000,
  ),
  TRUSTED_PROXY_HOPS: withDefault(
    wholeNumber(
      'must be a whole number of proxies in front (1 on Cloud Run, 2 behind an external load balancer)',
      { max: [10, 'must be at most 10'] },
    ),
    1,
  ),
  GRPC_REFLECTION: withDefault(flag, true),
  GRPC_MAX_TIMEOUT_MS: withDefault(milliseconds(3_600_000), 60_000),
  AUTH_VERIFY_TOKENS: withDefault(flag, false),
  AUTH_AUDIENCE: optional(url('must be a URL (this service URL)', { httpOnly: false })),
  AUTH_ALLOWED_CALLERS: optional(callerList),
  AUTH_CERTS_URL: withDefault(
    url(
      "must be the URL of Google's token signing keys (the default is right on Cloud Run)",
      HTTP_URL,
    ),
    'https://www.googleapis.com/oauth2/v1/certs',
  ),
  TELEMETRY_EXPORT_MODE: optional(oneOf(TELEMETRY_EXPORT_MODES)),
  TELEMETRY_WRITE_CLOUD_TRACE_CONTEXT: withDefault(flag, false),
  TELEMETRY_BAGGAGE_ATTRIBUTES: withDefault(list, ['enduser.id']),
  K_SERVICE: optional(text),
  GOOGLE_CLOUD_PROJECT: optional(text),
} satisfies Record<string, Field<unknown>>;

type Env = { [Name in keyof typeof FIELDS]: ReturnType<(typeof FIELDS)[Name]> };

export type BackendTarget = {
  url: URL;
  transport: 'h2c' | 'tls';
  /** The ID token's audience: every call carries a token when there is one (https, or set). */
  audience: string | undefined;
  timeoutMs: number;
  maxAttempts: number;
};

export type Config = Readonly<
  Omit<Env, 'BACKEND_URL' | 'BACKEND_AUDIENCE' | 'TELEMETRY_EXPORT_MODE'> & {
    backend: BackendTarget | undefined;
    onCloudRun: boolean;
    telemetryExportMode: (typeof TELEMETRY_EXPORT_MODES)[number];
  }
>;

export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    // One line: it is the message of one log line, with `problems` beside it.
    super(`Invalid configuration (see "Configuration" in README.md): ${problems.join('; ')}`);
  }
}

/** Parses the environment once. Throws ConfigError listing every bad variable. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  const present = Object.fromEntries(
    Object.entries(env).filter(([, value]) => value !== undefined && value !== ''),
  );
  const problems: string[] = [];
  const values: Record<string, unknown> = {};
  for (const [name, read] of Object.entries(FIELDS)) {
    const got = present[name];
    try {
      const value = read(got);
      if (value !== undefined) values[name] = value;
    } catch (error) {
      if (!(error instanceof InvalidValue)) throw error;
      const suffix = got === undefined ? ' (not set)' : ` (got ${JSON.stringify(got)})`;
      for (const problem of error.problems) problems.push(`${name}: ${problem}${suffix}`);
    }
  }
  const valid = problems.length === 0;
  const data = values as Env;
  if (present.SERVICE_ROLE === 'api' && present.BACKEND_URL === undefined) {
    problems.push(
      'BACKEND_URL: required when SERVICE_ROLE=api (http://host:port for a local h2c backend, https://<service>.run.app on Cloud Run)',
    );
  }
  if (values.AUTH_VERIFY_TOKENS === true && present.AUTH_AUDIENCE === undefined) {
    problems.push(
      'AUTH_AUDIENCE: required when AUTH_VERIFY_TOKENS=true (this service URL, as callers name it)',
    );
  }
  if (valid && data.HTTP_HEADERS_TIMEOUT_MS > data.HTTP_REQUEST_TIMEOUT_MS) {
    const { HTTP_HEADERS_TIMEOUT_MS: headers, HTTP_REQUEST_TIMEOUT_MS: request } = data;
    problems.push(
      `HTTP_HEADERS_TIMEOUT_MS: must not exceed HTTP_REQUEST_TIMEOUT_MS (got ${headers} > ${request})`,
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const { BACKEND_URL, BACKEND_AUDIENCE, TELEMETRY_EXPORT_MODE, ...rest } = data;
  const onCloudRun = rest.K_SERVICE !== undefined;
  return Object.freeze({
    ...rest,
    onCloudRun,
    // Request-based billing (Cloud Run's default) withdraws CPU after the response, so a
    // background batch may never leave the instance: flush per request there.
    telemetryExportMode: TELEMETRY_EXPORT_MODE ?? (onCloudRun ? 'request' : 'batch'),
    backend: BACKEND_URL && {
      url: BACKEND_URL,
      transport: BACKEND_URL.protocol === 'https:' ? ('tls' as const) : ('h2c' as const),
      // Cloud Run takes its URL without a port; an h2c backend (a sidecar, a cluster-internal
      // address) gets a token only when its check asks for one (BACKEND_AUDIENCE).
      audience:
        BACKEND_AUDIENCE ??
        (BACKEND_URL.protocol === 'https:' ? BACKEND_URL.origin.replace(/:\d+$/, '') : undefined),
      timeoutMs: rest.BACKEND_TIMEOUT_MS,
      maxAttempts: rest.BACKEND_MAX_ATTEMPTS,
    },
  });
}
