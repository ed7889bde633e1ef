import { isUtf8 } from 'node:buffer';
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { parse as secureJsonParse } from 'secure-json-parse';
import { refusal } from './error-handler.js';

type Done = (error: Error | null, body?: unknown) => void;

/** As Fastify's own JSON parser: a `__proto__` key, or `constructor.prototype`, is refused. */
const PARSE_OPTIONS = { protoAction: 'error', constructorAction: 'error' } as const;
/** What secure-json-parse throws for those keys (JSON.parse's own messages start otherwise). */
const FORBIDDEN_KEY_MESSAGE = 'Object contains forbidden prototype property';

/** Each `charset` parameter of a content-type, quoted or not. */
const CHARSET_PARAMETER = /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/gi;

/**
 * The api's parser for `application/json` bodies, in place of Fastify's: that one decodes bytes
 * that are not UTF-8 to U+FFFD (the client's data changed without a word) and ignores the
 * charset. This one refuses them, and a content-encoding, with a problem that says what to send.
 * Register it with `parseAs: 'buffer'`: Fastify reads the body (its limits, per route too, and
 * its `preParsing` hooks apply) and hands the bytes over.
 */
export function parseJsonBody(request: FastifyRequest, body: Buffer, done: Done): void {
  const refusal = refusedHeaders(request.headers);
  if (refusal) {
    done(refusal);
    return;
  }
  let value: unknown;
  try {
    value = parse(body);
  } catch (thrown) {
    done(thrown as Error);
    return;
  }
  done(null, value);
}

/** The body's JSON value; throws a 400 refusal that says what is wrong. */
function parse(body: Buffer): unknown {
  if (body.length === 0) throw refusal(400, 'The body is empty: send a JSON object.');
  if (!isUtf8(body)) {
    throw refusal(400, 'The body is not valid UTF-8: send JSON in UTF-8 (RFC 8259 section 8.1).');
  }
  try {
    return secureJsonParse(body.toString('utf8'), PARSE_OPTIONS);
  } catch (thrown) {
    if (thrown instanceof SyntaxError && thrown.message === FORBIDDEN_KEY_MESSAGE) {
      throw refusal(
        400,
        'The body has a "__proto__" key, or a "constructor" key holding "prototype": these keys are not allowed.',
      );
    }
    throw refusal(400, 'The body is not valid JSON (RFC 8259).');
  }
}

/** A content-encoding or a charset the api does not take: 415 (RFC 9110 §15.5.16). */
function refusedHeaders(headers: IncomingHttpHeaders): Error | undefined {
  const encoding = headers['content-encoding'];
  if (encoding && encoding.trim().toLowerCase() !== 'identity') {
    return refusal(
      415,
      'Compressed bodies are not accepted: send the body without a content-encoding.',
      { 'accept-encoding': 'identity' },
    );
  }
  const type = headers['content-type'];
  if (type?.includes(';')) {
    for (const [, quoted, token] of type.matchAll(CHARSET_PARAMETER)) {
      if ((quoted ?? token ?? '').toLowerCase() !== 'utf-8') {
        return refusal(
          415,
          'The api takes UTF-8 JSON only: send the body in UTF-8 with content-type: application/json (no charset, or charset=utf-8).',
          { accept: 'application/json' },
        );
      }
    }
  }
  return undefined;
}
