// What the proxies tests share: loopback upstreams, requests through the test nginx with
// a Host header, and the environment that points the app at that nginx.
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { NginxServer } from './nginxServer.ts';

export type Upstream = { port: number; seen: IncomingHttpHeaders[]; healthStatus: number; close(): Promise<void> };

/** A loopback upstream that answers `tag` on every path (its health path with `healthStatus`) and remembers the headers it saw. */
export const upstream = async (tag: string): Promise<Upstream> => {
  const seen: IncomingHttpHeaders[] = [];
  const u = { healthStatus: 200 } as Upstream;
  const server: Server = createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(u.healthStatus).end('health');
      return;
    }
    seen.push(req.headers);
    res.writeHead(200, { 'content-type': 'text/plain' }).end(tag);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return Object.assign(u, {
    port: (server.address() as AddressInfo).port, seen,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  });
};

/** GET through nginx with a Host header: status and body. */
export const viaNginx = (port: number, host: string, path = '/'): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> =>
  new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host, connection: 'close' }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });

/** The environment that points the app at a test nginx. */
export const nginxEnv = (nginx: NginxServer, certsDir: string): Record<string, string> => ({
  NGINX_BIN: nginx.nginxBin, NGINX_CONF: nginx.confPath, NGINX_SITES_DIR: nginx.sitesDir, PROXY_LISTEN_ADDRESS: '127.0.0.1',
  PROXY_HTTP_PORT: String(nginx.httpPort), PROXY_HTTPS_PORT: String(nginx.httpsPort), ACME_WEBROOT: nginx.acmeWebroot, CERTS_DIR: certsDir,
  HEALTH_CHECK_TIMEOUT_MS: '1000',
});

/** GET over HTTPS to 127.0.0.1:port as `servername`, trusting `ca` only: status, body and the served certificate's serial (lower-case hex). */
export const viaTls = (port: number, servername: string, ca: string, path = '/'): Promise<{ status: number; body: string; serial: string }> =>
  new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, servername, headers: { host: servername, connection: 'close' }, ca, agent: false }, (res) => {
      const serial = (res.socket as TLSSocket).getPeerCertificate().serialNumber.toLowerCase();
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, serial }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
