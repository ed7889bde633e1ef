import type { Attributes } from '@opentelemetry/api';
import { ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT } from '@opentelemetry/semantic-conventions';

const AUTHORITY = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/;

/**
 * Sets `server.address` and `server.port` from a Host header or a URL's authority (`host`,
 * `host:port`, `[v6]:port`; an IPv6 address without its brackets, as the conventions write IP
 * addresses). Sets nothing for a value that is none of these, and no port over 65535. Without a
 * port in it, `server.port` is `defaultPort` when given: the scheme's (RFC 9110 section 4.2),
 * which an authority without a port implies.
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
  const port = match[3] === undefined ? defaultPort : Number(match[3]);
  if (port !== undefined && port <= 65_535) attributes[ATTR_SERVER_PORT] = port;
}

/** An absolute URL's authority and path, without the cost of parsing it into a `URL`. */
export function splitUrl(url: string): { authority: string; path: string } {
  const authorityStart = url.indexOf('//') + 2;
  const pathStart = url.indexOf('/', authorityStart);
  if (pathStart === -1) return { authority: url.slice(authorityStart), path: '/' };
  return { authority: url.slice(authorityStart, pathStart), path: url.slice(pathStart) };
}
