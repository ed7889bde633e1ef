import { type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Code, ConnectError } from '@connectrpc/connect';
import { isSpanContextValid, trace } from '@opentelemetry/api';
import type {
  ConnectionError,
  FastifyBaseLogger,
  FastifyError,
  FastifyReply,
  FastifyRequest,
} from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { echoed } from '../errors/caller-text.js';
import { PROBLEM_CONTENT_TYPE, type ProblemDetails, problem } from '../errors/problem-details.js';
import { codeToHttpStatus, connectCodeName } from '../errors/status.js';
import { isCallerRefusal } from '../identity/caller-refusal.js';
import { isCredentialsError } from '../identity/id-token-credentials.js';
import { noteParserAnswer, noteProblem } from '../telemetry/http-tracing.js';
import { MAX_PARAM_LENGTH } from './fastify-options.js';
import { isOversizedReply } from './grpc-unary-transport.js';

/** Where a 5xx detail points to the logs; dropped when the body has no trace id to name. */
const WITH_THIS_TRACE_ID = ' with this trace id';

/**
 * What a backend failure that is no fault of the caller's (a 5xx) says: the backend's own
 * message, or the api's transport's, may name hosts, queries or files. It stays in the logs and
 * the trace. The message of a code that is the caller's problem (a 4xx: `INVALID_ARGUMENT`,
 * `NOT_FOUND`, …) is meant for the caller and is passed on.
 */
const BACKEND_FAULT = 'The backend failed to answer. The failure was logged with this trace id.';

const NOT_IN_TIME = 'The backend service did not answer in time.';

const SERVER_FAULT = 'The server failed to answer. The failure was logged with this trace id.';

/** Messages we send instead of the transport's own, which may name internal hosts. */
const SAFE_DETAIL: Partial<Record<Code, string>> = {
  [Code.Unavailable]: 'The backend service is unavailable. Try again shortly.',
  [Code.DeadlineExceeded]: NOT_IN_TIME,
  [Code.Canceled]: 'The request was canceled.',
  [Code.Unknown]: 'The backend failed in an unexpected way.',
  [Code.Unimplemented]:
    'The backend does not serve this call: the api and the backend may run different versions of the contract. The failure was logged with this trace id.',
};

type Refusal = {
  detail(request: FastifyRequest): string;
  headers?: Record<string, string>;
};

/** Fastify's own refusals, with a detail that says what to send instead. */
const FASTIFY_REFUSALS = new Map<string, Refusal>([
  [
    'FST_ERR_CTP_INVALID_MEDIA_TYPE',
    {
      detail: () => 'The body must be JSON: send it with content-type: application/json.',
      headers: { accept: 'application/json' },
    },
  ],
  [
    'FST_ERR_MAX_PARAM_LENGTH',
    {
      detail: () =>
        `A path parameter is longer than ${MAX_PARAM_LENGTH} characters: send long values in a body.`,
    },
  ],
  [
    // Fastify's message quotes the whole URL, query included (signed URLs' secrets among it).
    'FST_ERR_BAD_URL',
    {
      detail: () =>
        'The path cannot be decoded: a % must be followed by two hex digits, and the bytes they make must be UTF-8 (RFC 3986 section 2.1).',
    },
  ],
  [
    'FST_ERR_CTP_BODY_TOO_LARGE',
    {
      detail: ({ routeOptions: { bodyLimit } }) =>
        `The body is larger than the limit of ${Number((bodyLimit / 1024).toFixed(2))} KiB (${bodyLimit} bytes): send a smaller one.`,
    },
  ],
]);

const EMPTY_BODY = 'The body is empty: send a JSON object, with content-type: application/json.';

const RETRY_AFTER_SECONDS = '1';

/** The `code` of the error the api sends when it sheds load (see `overloadedError`). */
const OVERLOADED = 'API_OVERLOADED';

/**
 * A 4xx the error handler answers with this detail, and with `headers` that say what the api
 * takes (Fastify's own error handler honours `error.headers` the same way).
 */
export function refusal(
  statusCode: number,
  detail: string,
  headers?: Record<string, string>,
): Error {
  return Object.assign(new Error(detail), { statusCode }, headers ? { headers } : {});
}

/** A 404 for a path no route has, naming at most 200 characters of it. */
export function noRouteError(request: FastifyRequest): Error {
  const path = request.url.split('?', 1)[0] ?? '/';
  return refusal(404, `No route ${request.method} ${echoed(path)}`);
}

/**
 * What a shed request failed with: a 503 like any other, so its span and line follow the one
 * rule, but without a stack. The load is the cause, not a line of code: it is not an Error
 * Reporting event per request, and costs an overloaded process nothing to build.
 */
const OVERLOADED_ERROR: Error = Object.assign(new Error('The api is over capacity'), {
  name: 'ApiOverloaded',
  code: OVERLOADED,
  statusCode: 503,
  stack: undefined,
});

/** The request was refused because the process is past capacity; answered 503 + Retry-After. */
export function overloadedError(): Error {
  return OVERLOADED_ERROR;
}

/**
 * Every error becomes RFC 9457 problem details; stack traces and causes stay in the logs. The
 * request's access line is its one log line: it gets the detail (and, for a 5xx, the error and
 * its stack, one Error Reporting event). Only a request without one gets a line here.
 */
export function sendProblem(
  thrown: FastifyError | Error,
  request: FastifyRequest,
  reply: FastifyReply,
) {
  // No body at all never reaches a parser (Fastify parses none without a content-type): the
  // schema's "expected object, received null" would say less than the parser's refusal does.
  const error = isMissingBody(thrown, request)
    ? refusal(400, EMPTY_BODY, { accept: 'application/json' })
    : thrown;
  const body = toProblem(error, request);
  const spanContext = trace.getActiveSpan()?.spanContext();
  if (spanContext && isSpanContextValid(spanContext)) body.traceId = spanContext.traceId;
  else if (body.detail) body.detail = body.detail.replace(WITH_THIS_TRACE_ID, '');
  const headers = refusalHeaders(error, body.status);
  if (headers) reply.headers(headers);
  const fault = body.status >= 500 ? error : undefined;
  const detail = body.detail ?? body.title;
  if (!noteProblem(request.raw, detail, fault)) logProblem(request, detail, fault);
  return sendProblemBody(request, reply, body);
}

/** A problem body as the answer, naming the request's path (`instance`); 503 and 429 say when to retry. */
export function sendProblemBody(
  request: FastifyRequest,
  reply: FastifyReply,
  body: ProblemDetails,
) {
  body.instance = request.url.split('?', 1)[0];
  if (body.status === 503 || body.status === 429) reply.header('retry-after', RETRY_AFTER_SECONDS);
  return reply.code(body.status).type(PROBLEM_CONTENT_TYPE).send(body);
}

function logProblem(request: FastifyRequest, detail: string, fault: Error | undefined): void {
  if (fault) request.log.error({ error: fault, problem: detail }, `request failed: ${detail}`);
  else request.log.info({ problem: detail }, 'request rejected');
}

function toProblem(error: FastifyError | Error, request: FastifyRequest): ProblemDetails {
  if (isOverloaded(error)) {
    return problem(
      503,
      'The api is over capacity. Retry after the number of seconds in the Retry-After header.',
    );
  }
  if (hasZodFastifySchemaValidationErrors(error)) {
    const errors = error.validation.map((issue) => ({
      field: [error.validationContext, ...issue.instancePath.split('/').filter(Boolean)].join('.'),
      message: issue.message ?? 'is invalid',
    }));
    return problem(400, 'The request is invalid; see errors for each field.', { errors });
  }
  if (isCredentialsError(error)) {
    // What to check (the service account, GOOGLE_APPLICATION_CREDENTIALS) is for the operator,
    // in the log line; callers learn only that a retry may help.
    return problem(
      503,
      'The api could not get an ID token to call the backend. Try again shortly; the failure was logged with this trace id.',
      { code: connectCodeName(Code.Unavailable) },
    );
  }
  if (error instanceof ConnectError) {
    // RESOURCE_EXHAUSTED on the CLIENT span, as gRPC clients report it; but no quota of the
    // caller's was reached, and a retry would get the same reply: the backend's fault.
    if (isOversizedReply(error)) {
      return problem(
        502,
        "The backend's reply was larger than the api accepts. Retrying will not help; the failure was logged with this trace id.",
        { code: connectCodeName(error.code) },
      );
    }
    // The backend refused the api itself: a service account or token setting of ours is wrong,
    // whatever the caller sent (README "When something goes wrong").
    if (isCallerRefusal(error)) {
      return problem(
        502,
        "The backend refused the api's credentials. The failure was logged with this trace id.",
        { code: connectCodeName(error.code) },
      );
    }
    // CANCELLED is "client closed request" (499) when this caller went away. To a caller still
    // waiting: the api's own time limit on a call (a route's `AbortSignal.timeout`) is a 504;
    // any other abort of the api's own (the call's error keeps its reason) is the api failing
    // to answer; otherwise the backend stopped the call (a status or a reset on the wire).
    if (error.code === Code.Canceled && !request.socket.destroyed) {
      if (isTimeout(error.cause)) {
        return problem(504, NOT_IN_TIME, { code: connectCodeName(Code.DeadlineExceeded) });
      }
      if (error.cause !== undefined && !error.metadata.has('grpc-status')) {
        return problem(500, SERVER_FAULT);
      }
      return problem(502, BACKEND_FAULT, { code: connectCodeName(error.code) });
    }
    const status = codeToHttpStatus(error.code);
    const detail = SAFE_DETAIL[error.code] ?? (status >= 500 ? BACKEND_FAULT : error.rawMessage);
    return problem(status, detail, { code: connectCodeName(error.code) });
  }
  const statusCode = (error as FastifyError).statusCode;
  if (statusCode !== undefined && statusCode >= 400 && statusCode < 500) {
    const refusal = FASTIFY_REFUSALS.get((error as FastifyError).code);
    return problem(statusCode, refusal?.detail(request) ?? error.message);
  }
  return problem(500, SERVER_FAULT);
}

/** What a 4xx refusal says the api takes instead (`Accept`, `Accept-Encoding` on a 415). */
function refusalHeaders(error: Error, status: number): Record<string, string> | undefined {
  if (status >= 500) return undefined;
  return (
    FASTIFY_REFUSALS.get((error as FastifyError).code)?.headers ??
    (error as { headers?: Record<string, string> }).headers
  );
}

/** A body schema's refusal of no body at all. */
function isMissingBody(error: Error, request: FastifyRequest): boolean {
  return (
    hasZodFastifySchemaValidationErrors(error) &&
    error.validationContext === 'body' &&
    request.body == null
  );
}

function isTimeout(cause: unknown): boolean {
  return cause instanceof Error && cause.name === 'TimeoutError';
}

function isOverloaded(error: FastifyError | Error): boolean {
  return (error as FastifyError).code === OVERLOADED;
}

const CLIENT_GONE = new Set(['ECONNRESET', 'HPE_INVALID_EOF_STATE']);

/** What Node's HTTP parser rejects before Fastify routes it, by Node's error code. */
const CLIENT_ERRORS: Record<string, { status: number; detail: string }> = {
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    detail: 'The request did not arrive in time. Send the headers and the body without pausing.',
  },
  // A method is any token (RFC 9110 §9.1); one Node does not know is not implemented here.
  HPE_INVALID_METHOD: {
    status: 501,
    detail:
      'The request method is not one the api implements (methods are case-sensitive: GET, POST, ...).',
  },
  HPE_HEADER_OVERFLOW: {
    status: 431,
    detail: 'The request line and headers are too large: at most 16 KiB in total.',
  },
};

const NOT_HTTP = { status: 400, detail: 'The request is not valid HTTP/1.1.' };

/** `METHOD target HTTP/x.y`: a request line, whatever its method. */
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ \S+ HTTP\/\d\.\d\r?\n/;
const TOKEN_CHAR = /^[!#$%&'*+.^_`|~0-9A-Za-z-]$/;

function clientErrorAnswer(error: ConnectionError): { status: number; detail: string } {
  // Node's parser calls any first word it does not know an invalid method: a request line with
  // a method it lacks is 501, bytes that are not HTTP at all (TLS, SSH, a word) are 400.
  if (error.code === 'HPE_INVALID_METHOD' && !REQUEST_LINE.test(refusedLine(error))) {
    return NOT_HTTP;
  }
  return CLIENT_ERRORS[error.code] ?? NOT_HTTP;
}

/**
 * The bytes refused, from the start of the word the parser stopped in: the packet also holds
 * what was read before them on the connection (pipelined requests and their bodies).
 */
function refusedLine(error: ConnectionError): string {
  // Fastify types it as a Buffer's JSON; Node hands the Buffer itself.
  const raw: unknown = error.rawPacket;
  const packet = Buffer.isBuffer(raw) ? raw.toString('latin1') : '';
  let start = Math.min(Math.max(error.bytesParsed, 0), packet.length);
  while (start > 0 && TOKEN_CHAR.test(packet.charAt(start - 1))) start--;
  return packet.slice(start);
}

/**
 * Runs `then` once the answers owed on the connection are sent: requests read whole before the
 * bytes refused (pipelined) keep their answers, in order, as HTTP/1.1 clients match them.
 */
function afterAnswersOwed(socket: Socket, then: () => void): void {
  const owed = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (!owed || owed.writableFinished || !owed.req.complete || socket.destroyed) {
    then();
    return;
  }
  let done = false;
  const next = () => {
    if (done) return;
    done = true;
    // Node hands the socket to the next pipelined answer on 'finish', before this runs.
    afterAnswersOwed(socket, then);
  };
  owed.once('finish', next);
  owed.once('close', next);
}

/**
 * A Fastify `clientErrorHandler`: malformed HTTP, oversized headers and slow clients get a problem
 * body too, then the connection is closed (the stream cannot be trusted after a parse error).
 */
export function createClientErrorHandler(logger: FastifyBaseLogger) {
  return (error: ConnectionError, socket: Socket): void => {
    // The client went away (reset, or closed its side mid-request): nobody to answer.
    if (CLIENT_GONE.has(error.code) || socket.destroyed) {
      socket.destroy();
      return;
    }
    const { status, detail } = clientErrorAnswer(error);
    // Debug only: scanners and slow clients would otherwise flood the logs.
    logger.debug({ code: error.code }, `connection rejected with ${status}`);
    noteParserAnswer(socket, status, detail);
    afterAnswersOwed(socket, () => writeProblemAndClose(socket, status, detail));
  };
}

/** For requests Node answers before Fastify sees them: a whole response, then the socket closes. */
export function writeProblemAndClose(socket: Duplex, status: number, detail: string): void {
  if (socket.writable) {
    const body = rawProblemBody(status, detail);
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${Object.entries(rawProblemHeaders(body))
        .map(([name, value]) => `${name}: ${value}\r\n`)
        .join('')}\r\n${body}`,
    );
  }
  socket.destroy();
}

function rawProblemBody(status: number, detail: string): string {
  return JSON.stringify({ ...problem(status, detail), title: STATUS_CODES[status] ?? 'Error' });
}

function rawProblemHeaders(body: string): Record<string, string> {
  return {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': String(Buffer.byteLength(body)),
    'x-content-type-options': 'nosniff',
    connection: 'close',
  };
}
