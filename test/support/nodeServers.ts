// Monitored nodes for tests: real HTTP and TCP servers on loopback that answer healthy,
// failing, slowly or with a bad body.
import { once } from 'node:events';
import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';

export type NodeServer = { url: string; port: number; hits(): number; close(): Promise<void> };

const closeServer = async (server: Server | TcpServer) => {
  if ('closeAllConnections' in server) server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
};

/** Servers a test file starts on 127.0.0.1 (port 0), closed together by closeAll() (in an afterEach). */
export const loopbackServers = () => {
  const servers: Array<Server | TcpServer> = [];
  const listen = async <S extends Server | TcpServer>(server: S): Promise<{ server: S; port: number }> => {
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { server, port: (server.address() as AddressInfo).port };
  };
  return {
    listen,
    async http(handler: RequestListener) {
      const { server, port } = await listen(createServer(handler));
      return { server, port, url: `http://127.0.0.1:${port}/health` };
    },
    closeAll: async () => void (await Promise.all(servers.splice(0).map(closeServer))),
  };
};

/** An HTTP server on 127.0.0.1 answering every request with `handler`. */
export const httpNode = async (handler: RequestListener): Promise<NodeServer> => {
  let hits = 0;
  const server = createServer((req, res) => { hits += 1; handler(req, res); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/health`, port, hits: () => hits, close: () => closeServer(server) };
};

export const healthyNode = (body: object) => httpNode((_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
});

export const failingNode = (status = 503) => httpNode((_req, res) => { res.statusCode = status; res.end('unavailable'); });

/** Answers after `delayMs` (past a check's timeout). */
export const slowNode = (delayMs: number) => httpNode((_req, res) => {
  const t = setTimeout(() => res.end('{}'), delayMs);
  res.on('close', () => clearTimeout(t));
});

export const badJsonNode = () => httpNode((_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end('{"version": "1.0", not json');
});

/** A TCP server that accepts and closes connections. */
export const tcpNode = async (): Promise<NodeServer> => {
  let hits = 0;
  const server = createTcpServer((socket) => { hits += 1; socket.end(); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return { url: `tcp://127.0.0.1:${port}`, port, hits: () => hits, close: () => closeServer(server) };
};

/** A port nothing listens on (bound once, then released). */
export const closedPort = async (): Promise<number> => {
  const server = createTcpServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await closeServer(server);
  return port;
};
