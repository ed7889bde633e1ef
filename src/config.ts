import * as z from 'zod';

export const ROLES = ['api', 'backend'] as const;
export type Role = (typeof ROLES)[number];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['json', 'pretty'] as const;
export const DEFAULT_SERVICE_NAMESPACE = 'greeter';

const TELEMETRY_EXPORT_MODES = ['batch', 'request'] as const;

const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: `must be one of: ${values.join(', ')}` });

const flag = z
  .enum(['true', 'false', '1', '0'], { error: 'must be true or false' })
  .transform((value) => value === 'true' || value === '1');

/**
 * A whole number written in decimal digits: `Number()` would also take `0x1f`, `5e3` or `1_0`,
 * which no one means in an environment variable.
 */
const wholeNumber = (error: string) =>
  z
    .string()
    .trim()
    .regex(/^\d{1,16}$/, { error })
    .transform(Number);

const milliseconds = (max: number) =>
  wholeNumber('must be a whole number of milliseconds').pipe(
    z
      .number()
      .min(1, { error: 'must be at least 1 ms' })
      .max(max, { error: `must be at most ${max} ms` }),
  );

/** 0 turns the check off. */
const millisecondsOrOff = (max: number) =>
  wholeNumber('must be a whole number of milliseconds (0 turns it off)').pipe(
    z.number().max(max, { error: `must be at most ${max} ms` }),
  );

/** A service's base URL: scheme, host and port only, so that nothing in it is silently dropped. */
const serviceUrl = z
  .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
  .transform((value) => new URL(value))
  .refine(
    (url) => url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password,
    {
      error:
        "must be the service's base URL (scheme, host and port), without path, query or credentials",
    },
  );

/** Case-insensitive, as log levels usually are in environment variables. */
const lowerCase = <T extends z.ZodType>(schema: T) =>
  z.preprocess((value) => (typeof value === 'string' ? value.toLowerCase() : value), schema);

const list = z
  .string()
  .transform((value) => value.split(',').map((item) => item.trim()))
  .transform((items) => items.filter((item) => item.length > 0));

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
const callerList = list
  .transform((entries, context) => {
    const callers: string[] = [];
    for (const entry of entries) {
      const caller = entry.replace(/^serviceAccount:/i, '').toLowerCase();
      const problem = callerProblem(caller);
      if (problem) context.issues.push({ code: 'custom', message: problem, input: entry });
      else callers.push(caller);
    }
    return callers;
  })
  .refine((callers) => callers.length > 0, {
    error: 'lists no service account: name the callers, comma-separated, or leave it unset',
  });

const EnvSchema = z.object({
  SERVICE_ROLE: oneOf(ROLES),
  PORT: wholeNumber('must be a TCP port (0-65535)')
    .pipe(z.number().max(65535, { error: 'must be a TCP port (0-65535)' }))
    .default(8080),
  HOST: z.string().min(1).default('0.0.0.0'),
  LOG_LEVEL: lowerCase(oneOf(LOG_LEVELS).default('info')),
  LOG_FORMAT: oneOf(LOG_FORMATS).optional(),
  SERVICE_NAMESPACE: z.string().min(1).default(DEFAULT_SERVICE_NAMESPACE),
  DEPLOYMENT_ENVIRONMENT: z.string().min(1).default('local'),
  SHUTDOWN_TIMEOUT_MS: milliseconds(9_000).default(8_000),
  BACKEND_URL: serviceUrl.optional(),
  BACKEND_AUDIENCE: z
    .url({ protocol: /^https?$/, error: 'must be a URL (the backend service URL)' })
    .optional(),
  BACKEND_TIMEOUT_MS: milliseconds(300_000).default(5_000),
  BACKEND_MAX_ATTEMPTS: wholeNumber('must be a whole number of attempts, 1 to 10')
    .pipe(
      z
        .number()
        .min(1, { error: 'must be at least 1 (1 means no retry)' })
        .max(10, { error: 'must be at most 10' }),
    )
    .default(5),
  HTTP_HEADERS_TIMEOUT_MS: milliseconds(300_000).default(10_000),
  HTTP_REQUEST_TIMEOUT_MS: milliseconds(300_000).default(30_000),
  OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: millisecondsOrOff(60_000).default(200),
  OVERLOAD_SAMPLE_INTERVAL_MS: wholeNumber('must be a whole number of milliseconds')
    .pipe(
      z
        .number()
        .min(10, { error: 'must be at least 10 ms (the event-loop delay resolution)' })
        .max(60_000, { error: 'must be at most 60000 ms' }),
    )
    .default(1_000),
  TRUSTED_PROXY_HOPS: wholeNumber(
    'must be a whole number of proxies in front (1 on Cloud Run, 2 behind an external load balancer)',
  )
    .pipe(z.number().max(10, { error: 'must be at most 10' }))
    .default(1),
  GRPC_REFLECTION: flag.default(true),
  GRPC_MAX_TIMEOUT_MS: milliseconds(3_600_000).default(60_000),
  AUTH_VERIFY_TOKENS: flag.default(false),
  AUTH_AUDIENCE: z.url({ error: 'must be a URL (this service URL)' }).optional(),
  AUTH_ALLOWED_CALLERS: callerList.optional(),
  AUTH_CERTS_URL: z
    .url({
      protocol: /^https?$/,
      error: "must be the URL of Google's token signing keys (the default is right on Cloud Run)",
    })
    .default('https://www.googleapis.com/oauth2/v1/certs'),
  TELEMETRY_EXPORT_MODE: oneOf(TELEMETRY_EXPORT_MODES).optional(),
  TELEMETRY_WRITE_CLOUD_TRACE_CONTEXT: flag.default(false),
  TELEMETRY_BAGGAGE_ATTRIBUTES: list.default(['enduser.id']),
  K_SERVICE: z.string().optional(),
  GOOGLE_CLOUD_PROJECT: z.string().optional(),
});

type Env = z.infer<typeof EnvSchema>;

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
  const result = EnvSchema.safeParse(present);
  const problems = result.success
    ? []
    : result.error.issues.map((issue) => {
        const name = issue.path.join('.');
        const got = present[name];
        return `${name}: ${issue.message}${got === undefined ? ' (not set)' : ` (got ${JSON.stringify(got)})`}`;
      });
  if (present.SERVICE_ROLE === 'api' && present.BACKEND_URL === undefined) {
    problems.push(
      'BACKEND_URL: required when SERVICE_ROLE=api (http://host:port for a local h2c backend, https://<service>.run.app on Cloud Run)',
    );
  }
  if (
    flag.safeParse(present.AUTH_VERIFY_TOKENS).data === true &&
    present.AUTH_AUDIENCE === undefined
  ) {
    problems.push(
      'AUTH_AUDIENCE: required when AUTH_VERIFY_TOKENS=true (this service URL, as callers name it)',
    );
  }
  if (result.success && result.data.HTTP_HEADERS_TIMEOUT_MS > result.data.HTTP_REQUEST_TIMEOUT_MS) {
    const { HTTP_HEADERS_TIMEOUT_MS: headers, HTTP_REQUEST_TIMEOUT_MS: request } = result.data;
    problems.push(
      `HTTP_HEADERS_TIMEOUT_MS: must not exceed HTTP_REQUEST_TIMEOUT_MS (got ${headers} > ${request})`,
    );
  }
  if (!result.success || problems.length > 0) throw new ConfigError(problems);

  const { BACKEND_URL, BACKEND_AUDIENCE, TELEMETRY_EXPORT_MODE, ...rest } = result.data;
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
