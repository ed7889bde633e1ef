import type { IncomingMessage } from 'node:http';
import type { Http2ServerRequest, Http2Session } from 'node:http2';
import { createContextKey } from '@connectrpc/connect';
import type { Attributes } from '@opentelemetry/api';
import {
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
} from '@opentelemetry/semantic-conventions';

/**
 * The other end of the connection a call came in on, as the socket reports it (IPv4 peers of an
 * IPv6 socket as `::ffff:…`, as the api's `network.peer.address`). On Cloud Run it is Google's
 * front end, not the caller.
 */
export type NetworkPeer = { readonly address: string; readonly port: number };

/** The peer of the current RPC's connection, for the tracing: `context.values.get(NETWORK_PEER)`. */
export const NETWORK_PEER = createContextKey<NetworkPeer | undefined>(undefined, {
  description: 'network peer',
});

export type NetworkPeers = {
  /** Call on the server's 'session' event: the peer is read once for all of its calls. */
  add(session: Http2Session): void;
  /** The peer of the connection `request` came in on. */
  of(request: Http2ServerRequest | IncomingMessage): NetworkPeer | undefined;
};

/** The peers of an HTTP/2 server's open sessions. */
export function createNetworkPeers(): NetworkPeers {
  const peers = new Map<Http2Session, NetworkPeer | undefined>();
  return {
    add(session) {
      const { remoteAddress, remotePort } = session.socket;
      // Unknown once the socket has closed: the session's calls, if any, record none.
      const peer =
        remoteAddress === undefined || remotePort === undefined
          ? undefined
          : { address: remoteAddress, port: remotePort };
      peers.set(session, peer);
      session.once('close', () => peers.delete(session));
    },
    of(request) {
      const session = 'stream' in request ? request.stream.session : undefined;
      return session && peers.get(session);
    },
  };
}

/** Sets `network.peer.address` and `network.peer.port`, when the peer is known. */
export function setNetworkPeer(attributes: Attributes, peer: NetworkPeer | undefined): void {
  if (!peer) return;
  attributes[ATTR_NETWORK_PEER_ADDRESS] = peer.address;
  attributes[ATTR_NETWORK_PEER_PORT] = peer.port;
}
