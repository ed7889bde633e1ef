import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';

/*
 * The environment is parsed once at start; a bad value stops the process before it listens,
 * with one message naming every bad variable and what it must be (exit code 78, EX_CONFIG).
 */
const execFileAsync = promisify(execFile);

function problemsOf(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('parseConfig accepted the environment');
}

describe('parseConfig', () => {
  it('fills the defaults and derives the backend target', () => {
    const config = parseConfig({ SERVICE_ROLE: 'api', BACKEND_URL: 'http://127.0.0.1:8081' });
    expect(config).toMatchObject({
      PORT: 8080,
      LOG_LEVEL: 'info',
      onCloudRun: false,
      telemetryExportMode: 'batch',
      backend: { transport: 'h2c', audience: undefined, timeoutMs: 5_000, maxAttempts: 5 },
    });
    const onCloudRun = parseConfig({
      SERVICE_ROLE: 'api',
      BACKEND_URL: 'https://greeter-backend-abc-ew.a.run.app',
      K_SERVICE: 'greeter-api',
    });
    expect(onCloudRun).toMatchObject({
      onCloudRun: true,
      telemetryExportMode: 'request',
      backend: { transport: 'tls', audience: 'https://greeter-backend-abc-ew.a.run.app' },
    });
  });

  it('treats an empty variable as unset', () => {
    expect(parseConfig({ SERVICE_ROLE: 'backend', PORT: '', LOG_LEVEL: '' })).toMatchObject({
      PORT: 8080,
      LOG_LEVEL: 'info',
    });
  });

  it('reads the flags 1 and 0 as true and false: AUTH_VERIFY_TOKENS=1 turns the check on', () => {
    const config = parseConfig({
      SERVICE_ROLE: 'backend',
      AUTH_VERIFY_TOKENS: '1',
      AUTH_AUDIENCE: 'https://backend.example',
      GRPC_REFLECTION: '0',
    });
    expect(config).toMatchObject({ AUTH_VERIFY_TOKENS: true, GRPC_REFLECTION: false });
    expect(problemsOf({ SERVICE_ROLE: 'backend', AUTH_VERIFY_TOKENS: '1' }).join('\n')).toMatch(
      /AUTH_AUDIENCE/,
    );
  });

  it("keeps SHUTDOWN_TIMEOUT_MS under Cloud Run's 10 s: at most 9000", () => {
    expect(parseConfig({ SERVICE_ROLE: 'backend', SHUTDOWN_TIMEOUT_MS: '9000' })).toMatchObject({
      SHUTDOWN_TIMEOUT_MS: 9_000,
    });
    expect(problemsOf({ SERVICE_ROLE: 'backend', SHUTDOWN_TIMEOUT_MS: '9001' })).toEqual([
      expect.stringMatching(/^SHUTDOWN_TIMEOUT_MS: .*9000/),
    ]);
  });

  it('names every bad variable at once, with what it must be and what it got', () => {
    expect(
      problemsOf({
        SERVICE_ROLE: 'frontend',
        PORT: '70000',
        LOG_LEVEL: 'loud',
        TELEMETRY_EXPORT_MODE: 'sometimes',
        BACKEND_MAX_ATTEMPTS: '0',
        TRUSTED_PROXY_HOPS: 'lb',
        GRPC_REFLECTION: 'maybe',
      }),
    ).toEqual([
      'SERVICE_ROLE: must be one of: api, backend (got "frontend")',
      'PORT: must be a TCP port (0-65535) (got "70000")',
      'LOG_LEVEL: must be one of: fatal, error, warn, info, debug, trace, silent (got "loud")',
      'BACKEND_MAX_ATTEMPTS: must be at least 1 (1 means no retry) (got "0")',
      'TRUSTED_PROXY_HOPS: must be a whole number of proxies in front (1 on Cloud Run, 2 behind an external load balancer) (got "lb")',
      'GRPC_REFLECTION: must be true or false (got "maybe")',
      'TELEMETRY_EXPORT_MODE: must be one of: batch, request (got "sometimes")',
    ]);
  });

  it('takes numbers in decimal digits only, and service URLs without anything that would be dropped', () => {
    expect(
      problemsOf({
        SERVICE_ROLE: 'api',
        PORT: '0x1f90',
        BACKEND_TIMEOUT_MS: '5e3',
        BACKEND_MAX_ATTEMPTS: '2.5',
        BACKEND_URL: 'http://127.0.0.1:8081/v1',
        BACKEND_AUDIENCE: 'mailto:someone@example.com',
      }),
    ).toEqual([
      'PORT: must be a TCP port (0-65535) (got "0x1f90")',
      'BACKEND_URL: must be the service\'s base URL (scheme, host and port), without path, query or credentials (got "http://127.0.0.1:8081/v1")',
      'BACKEND_AUDIENCE: must be a URL (the backend service URL) (got "mailto:someone@example.com")',
      'BACKEND_TIMEOUT_MS: must be a whole number of milliseconds (got "5e3")',
      'BACKEND_MAX_ATTEMPTS: must be a whole number of attempts, 1 to 10 (got "2.5")',
    ]);
    for (const url of ['http://h:1?x=1', 'http://user:pw@h:1', 'https://h#top']) {
      expect(problemsOf({ SERVICE_ROLE: 'api', BACKEND_URL: url })).toEqual([
        expect.stringMatching(/^BACKEND_URL: must be the service's base URL/),
      ]);
    }
    const config = parseConfig({
      SERVICE_ROLE: 'api',
      BACKEND_URL: 'https://greeter-backend-abc-ew.a.run.app/',
      PORT: ' 8081 ',
      LOG_LEVEL: 'WARN',
    });
    expect(config).toMatchObject({ PORT: 8081, LOG_LEVEL: 'warn' });
    expect(config.backend?.url.href).toBe('https://greeter-backend-abc-ew.a.run.app/');
  });

  it('reads a URL trimmed, and an http(s) URL only with its //', () => {
    expect(
      problemsOf({
        SERVICE_ROLE: 'api',
        BACKEND_URL: 'http:backend.example',
        BACKEND_AUDIENCE: 'https:/backend.example',
        AUTH_CERTS_URL: 'certs.example/keys',
      }),
    ).toEqual([
      'BACKEND_URL: must be an http:// or https:// URL (got "http:backend.example")',
      'BACKEND_AUDIENCE: must be a URL (the backend service URL) (got "https:/backend.example")',
      'AUTH_CERTS_URL: must be the URL of Google\'s token signing keys (the default is right on Cloud Run) (got "certs.example/keys")',
    ]);
    const config = parseConfig({
      SERVICE_ROLE: 'api',
      BACKEND_URL: ' HTTPS://Backend.example ',
      BACKEND_AUDIENCE: ' https://aud.example ',
      AUTH_AUDIENCE: 'urn:backend',
    });
    expect(config.backend).toMatchObject({ transport: 'tls', audience: 'https://aud.example' });
    expect(config.backend?.url.href).toBe('https://backend.example/');
    expect(config.AUTH_AUDIENCE).toBe('urn:backend');
  });

  it('refuses an AUTH_ALLOWED_CALLERS that lists nobody (it would refuse every caller)', () => {
    expect(
      problemsOf({
        SERVICE_ROLE: 'backend',
        AUTH_VERIFY_TOKENS: 'true',
        AUTH_AUDIENCE: 'https://b.example',
        AUTH_ALLOWED_CALLERS: ' , ',
      }),
    ).toEqual([
      'AUTH_ALLOWED_CALLERS: lists no service account: name the callers, comma-separated, or leave it unset (got " , ")',
    ]);
  });

  it('reads AUTH_ALLOWED_CALLERS as emails: lower case, the IAM member prefix serviceAccount: dropped', () => {
    const config = parseConfig({
      SERVICE_ROLE: 'backend',
      AUTH_ALLOWED_CALLERS:
        ' API-SA@Proj.iam.gserviceaccount.com , serviceAccount:other@proj.iam.gserviceaccount.com,',
    });
    expect(config.AUTH_ALLOWED_CALLERS).toEqual([
      'api-sa@proj.iam.gserviceaccount.com',
      'other@proj.iam.gserviceaccount.com',
    ]);
  });

  it.each([
    [
      'a@proj.iam.gserviceaccount.com;b@proj.iam.gserviceaccount.com',
      'separate the emails with commas, not semicolons',
    ],
    [
      'user:alice@example.com',
      'is an IAM member, not an email: the check matches the token\'s email, so list emails only (drop "user:"',
    ],
    ['group:admins@example.com', 'a group or domain cannot be listed'],
    ['api-sa', '"api-sa" is not an email (name@domain): list the callers\' service-account emails'],
    ['api-sa@', 'is not an email (name@domain)'],
  ])(
    'refuses the AUTH_ALLOWED_CALLERS entry %j, saying what to write instead',
    (entry, problem) => {
      const problems = problemsOf({
        SERVICE_ROLE: 'backend',
        AUTH_ALLOWED_CALLERS: `ok@proj.iam.gserviceaccount.com, ${entry}`,
      });
      expect(problems).toEqual([expect.stringContaining(problem)]);
      expect(problems[0]).toMatch(/^AUTH_ALLOWED_CALLERS: /);
    },
  );

  it('takes AUTH_CERTS_URL as an http(s) URL only', () => {
    expect(
      problemsOf({ SERVICE_ROLE: 'backend', AUTH_CERTS_URL: 'file:///etc/certs.json' }),
    ).toEqual([
      expect.stringMatching(/^AUTH_CERTS_URL: must be the URL of Google's token signing keys/),
    ]);
  });

  it('checks what one variable requires of another', () => {
    expect(problemsOf({ SERVICE_ROLE: 'api' })).toEqual([
      expect.stringMatching(/^BACKEND_URL: required when SERVICE_ROLE=api/),
    ]);
    expect(problemsOf({ SERVICE_ROLE: 'backend', AUTH_VERIFY_TOKENS: 'true' })).toEqual([
      expect.stringMatching(/^AUTH_AUDIENCE: required when AUTH_VERIFY_TOKENS=true/),
    ]);
    expect(
      problemsOf({
        SERVICE_ROLE: 'backend',
        HTTP_HEADERS_TIMEOUT_MS: '20000',
        HTTP_REQUEST_TIMEOUT_MS: '10000',
      }),
    ).toEqual([
      'HTTP_HEADERS_TIMEOUT_MS: must not exceed HTTP_REQUEST_TIMEOUT_MS (got 20000 > 10000)',
    ]);
  });
});

describe('a role started with a bad environment', () => {
  it('exits with 78 before listening, logging every problem in one CRITICAL line', async () => {
    const main = resolve(import.meta.dirname, '../dist/entry/main.js');
    const failed = await execFileAsync(process.execPath, [main], {
      env: {
        PATH: process.env.PATH ?? '',
        SERVICE_ROLE: 'api',
        LOG_LEVEL: 'loud',
        PORT: '0',
        DEPLOYMENT_ENVIRONMENT: 'staging',
      },
      timeout: 15_000,
    }).then(
      () => undefined,
      (error: unknown) => error as { code?: number; stdout: string; stderr: string },
    );
    expect(failed?.code).toBe(78);
    expect(failed?.stderr).toBe('');
    const lines = (failed?.stdout ?? '').trim().split('\n');
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0] ?? '') as { severity: string; message: string };
    expect(line).toMatchObject({
      severity: 'CRITICAL',
      'logging.googleapis.com/labels': {
        'service.name': 'greeter-api',
        'service.namespace': 'greeter',
        'deployment.environment.name': 'staging',
      },
      problems: [
        expect.stringMatching(/^LOG_LEVEL: must be one of:/),
        expect.stringMatching(/^BACKEND_URL: required when SERVICE_ROLE=api/),
      ],
    });
    expect(line.message).toMatch(/^Invalid configuration \(see "Configuration" in README.md\): /);
  });
});
