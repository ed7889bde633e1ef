import type { Attributes } from '@opentelemetry/api';
import { ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT } from '@opentelemetry/semantic-conventions';

/** `host`, `host:port`, `[v6]` or `[v6]:port`: the address (an IPv6 one without its brackets), the port. */
const AUTHORITY = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/;

/**
 * Sets `server.address` and `server.port` from a Host header or a URL's authority (`host`,
 * `host:port`, `[v6]:port`; IPv6 addresses without brackets, as the conventions write IP
 * addresses). Sets nothing for a value that is none of these. Without a port in
 * it, `server.port` is `defaultPort` when given: the scheme's (RFC 9110 §4.2), which an authority
 * without a port implies.
 */
export function setServerAddress(
  attributes: Attributes,
  authority: string | undefined,
  defaultPort?: number,
): void {
  if (!authority) return;
  const match = AUTHORITY.exec(authority);
  if (!match) return;
  attributes[ATTR_SERVER_ADDRESS] = match[1] ?? match[2];
  if (match[3]) attributes[ATTR_SERVER_PORT] = Number(match[3]);
  else if (defaultPort !== undefined) attributes[ATTR_SERVER_PORT] = defaultPort;
}

/** An absolute URL's authority and path, without the cost of parsing it into a `URL`. */
export function splitUrl(url: string): { authority: string; path: string } {
  const authorityStart = url.indexOf('//') + 2;
  const pathStart = url.indexOf('/', authorityStart);
  if (pathStart === -1) return { authority: url.slice(authorityStart), path: '/' };
  return { authority: url.slice(authorityStart, pathStart), path: url.slice(pathStart) };
}
