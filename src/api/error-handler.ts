import { Code, ConnectError } from '@connectrpc/connect';
import { trace } from '@opentelemetry/api';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { PROBLEM_CONTENT_TYPE, type ProblemDetails, problem } from '../errors/problem-details.js';
import { codeToHttpStatus, connectCodeName } from '../errors/status.js';
import { isCredentialsError } from '../identity/id-token-credentials.js';

/** Messages we send instead of the transport's own, which may name internal hosts. */
const SAFE_DETAIL: Partial<Record<Code, string>> = {
  [Code.Unavailable]: 'The backend service is unavailable. Try again shortly.',
  [Code.DeadlineExceeded]: 'The backend service did not answer in time.',
  [Code.Unauthenticated]:
    'The backend rejected our credentials. Check that the api service account can mint ID tokens for the backend URL (BACKEND_AUDIENCE).',
  [Code.PermissionDenied]:
    'The backend refused this caller. Check that the api service account has roles/run.invoker on the backend service.',
  [Code.Canceled]: 'The request was canceled.',
  [Code.Unknown]: 'The backend failed in an unexpected way.',
};

const RETRY_AFTER_SECONDS = '1';

/** Every error becomes RFC 9457 problem details; stack traces and causes stay in the logs. */
export function sendProblem(
  error: FastifyError | Error,
  request: FastifyRequest,
  reply: FastifyReply,
) {
  const body = toProblem(error);
  const traceId = trace.getActiveSpan()?.spanContext().traceId;
  if (traceId) body.traceId = traceId;
  body.instance = request.url.split('?', 1)[0];
  if (body.status === 503 || body.status === 429) reply.header('retry-after', RETRY_AFTER_SECONDS);
  if (body.status >= 500) request.log.error({ error }, `request failed: ${body.detail}`);
  else request.log.info({ problem: body.detail }, 'request rejected');
  return reply.code(body.status).type(PROBLEM_CONTENT_TYPE).send(body);
}

function toProblem(error: FastifyError | Error): ProblemDetails {
  if (hasZodFastifySchemaValidationErrors(error)) {
    const errors = error.validation.map((issue) => ({
      field: [error.validationContext, ...issue.instancePath.split('/').filter(Boolean)].join('.'),
      message: issue.message ?? 'is invalid',
    }));
    return problem(400, 'The request is invalid; see errors for each field.', { errors });
  }
  if (isCredentialsError(error)) {
    return problem(
      503,
      'Could not obtain an ID token to call the backend. Check the api service account on Cloud Run, or GOOGLE_APPLICATION_CREDENTIALS and GCE_METADATA_HOST locally; details are in the logs.',
      { code: connectCodeName(Code.Unavailable) },
    );
  }
  if (error instanceof ConnectError) {
    return problem(codeToHttpStatus(error.code), SAFE_DETAIL[error.code] ?? error.rawMessage, {
      code: connectCodeName(error.code),
    });
  }
  const statusCode = (error as FastifyError).statusCode;
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
    return problem(statusCode, error.message);
  }
  return problem(500, 'The server failed to answer. The failure was logged with this trace id.');
}
