import { once } from 'node:events';
import type { Http2Server, ServerHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';

export type ListeningH2c = {
  port: number;
  url: string;
  /** Closes every session (GOAWAY), then the server. */
  close(): Promise<void>;
};

/** Listens with `server` on a free loopback port, keeping its sessions to close them at the end. */
export async function listenH2c(server: Http2Server): Promise<ListeningH2c> {
  const sessions = new Set<ServerHttp2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      const closed = new Promise<void>((resolve, reject) =>
        server.close((error) => (error ? reject(error) : resolve())),
      );
      for (const session of sessions) session.close();
      await closed;
    },
  };
}
