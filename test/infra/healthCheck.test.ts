// One check of a node, against real HTTP and TCP servers on loopback.
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { expect } from 'chai';
import { runCheck } from '../../infra/healthCheck.ts';
import { closedPort, loopbackServers } from '../support/nodeServers.ts';
import { waitFor } from '../support/waitFor.ts';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const loop = loopbackServers();
const listen = loop.listen;
const httpServer = loop.http;
/** A port nothing listens on. */
const freePort = closedPort;

const json = (body: unknown, status = 200): Handler => (_req, res) => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

const connections = (server: net.Server): Promise<number> =>
  new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

/**
 * A handler that never answers, and the sockets its requests came on. (After an abort,
 * Node 20's undici opens one spare idle connection of its own, unref'd and closed by its
 * keep-alive timer: so these tests watch the request's socket, not the server's count.)
 */
const hanging = () => {
  const sockets: net.Socket[] = [];
  const handler: Handler = (req) => void sockets.push(req.socket);
  return { sockets, handler, allClosed: () => sockets.length > 0 && sockets.every((s) => s.destroyed) };
};

const http = (url: string, o: { expectStatus?: number | null; timeoutMs?: number } = {}) =>
  ({ type: 'http' as const, url, expectStatus: o.expectStatus ?? null, timeoutMs: o.timeoutMs ?? 2000 });

afterEach(() => loop.closeAll());

describe('health check', () => {
  describe('http', () => {
    it('is up on a healthy JSON body, with its version and the numbers in its metrics', async () => {
      const { url } = await httpServer(json({ version: '1.4.2', metrics: { orchestrators: 17, 'wrap.count': 3.5, label: 'x', ok: true }, uptime: 99 }));
      const out = await runCheck(http(url));
      expect(out).to.include({ status: 'up', version: '1.4.2', error: null });
      expect(out.metrics).to.deep.equal({ orchestrators: 17, 'wrap.count': 3.5 });
      expect(out.latencyMs).to.be.a('number').and.at.least(0);
    });

    it('takes the finite numeric top-level fields as metrics when there is no metrics object', async () => {
      // 1e999 parses to Infinity: not a metric. A name with a space is not one either.
      const { url } = await httpServer((_req, res) => res.end('{"version":"2.0","uptime":12,"load":0.5,"big":1e999,"bad name":1,"name":"n","up":true}'));
      const out = await runCheck(http(url));
      expect(out).to.include({ status: 'up', version: '2.0' });
      expect(out.metrics).to.deep.equal({ uptime: 12, load: 0.5 });
    });

    it('keeps at most 50 metrics and ignores a version longer than 100 characters', async () => {
      const many = Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`m${i}`, i]));
      const { url } = await httpServer(json({ version: 'v'.repeat(101), metrics: many }));
      const out = await runCheck(http(url));
      expect(out.status).to.equal('up');
      expect(out.version).to.equal(null);
      expect(Object.keys(out.metrics ?? {})).to.have.length(50);
    });

    it('is down on a 503, with the status in the error and the latency of the answer', async () => {
      const { url } = await httpServer(json({ version: '1.0' }, 503));
      const out = await runCheck(http(url));
      expect(out).to.include({ status: 'down', error: 'HTTP 503 (expected 2xx)', version: null, metrics: null });
      expect(out.latencyMs).to.be.a('number');
    });

    it('honours expectStatus: 204 is up when 204 is expected, 200 is then down', async () => {
      const noContent = await httpServer((_req, res) => res.writeHead(204).end());
      expect(await runCheck(http(noContent.url, { expectStatus: 204 }))).to.include({ status: 'up', error: null, metrics: null });
      const ok = await httpServer(json({}));
      expect(await runCheck(http(ok.url, { expectStatus: 204 }))).to.include({ status: 'down', error: 'HTTP 200 (expected 204)' });
    });

    it('does not follow a redirect: a 302 is down when 2xx is expected', async () => {
      const { url } = await httpServer((_req, res) => res.writeHead(302, { location: 'http://127.0.0.1:1/' }).end());
      expect(await runCheck(http(url))).to.include({ status: 'down', error: 'HTTP 302 (expected 2xx)' });
    });

    it('is down, timed out, when the server does not answer in time, and lets the connection go', async () => {
      const hang = hanging();
      const { url } = await httpServer(hang.handler);
      const started = Date.now();
      const out = await runCheck(http(url, { timeoutMs: 200 }));
      expect(out).to.deep.equal({ status: 'down', latencyMs: null, version: null, metrics: null, error: 'timed out after 200 ms' });
      expect(Date.now() - started).to.be.below(2000);
      await waitFor(hang.allClosed, 'the timed-out connection to close');
    });

    it('is down, timed out, when the headers came but the body stalls', async () => {
      const { url } = await httpServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"version":'); // and nothing more
      });
      const out = await runCheck(http(url, { timeoutMs: 200 }));
      expect(out).to.include({ status: 'down', error: 'timed out after 200 ms' });
      expect(out.latencyMs, 'the headers did arrive').to.be.a('number');
    });

    it('is up with no version or metrics when the body is not JSON, or not an object', async () => {
      const html = await httpServer((_req, res) => res.end('<html>ok</html>'));
      expect(await runCheck(http(html.url))).to.deep.include({ status: 'up', version: null, metrics: null, error: null });
      const array = await httpServer(json([1, 2, 3]));
      expect(await runCheck(http(array.url))).to.deep.include({ status: 'up', version: null, metrics: null });
    });

    it('reads no more than 64 KiB of an endless body, and closes the connection', async () => {
      const chunk = Buffer.alloc(16 * 1024, 'a');
      let sent = 0;
      const sockets: net.Socket[] = [];
      const { url } = await httpServer((req, res) => {
        sockets.push(req.socket);
        res.writeHead(200);
        const pump = () => {
          while (!res.destroyed && res.write(chunk)) sent += chunk.length;
        };
        res.on('drain', pump);
        pump(); // never ends
      });
      const out = await runCheck(http(url, { timeoutMs: 10_000 }));
      expect(out).to.deep.include({ status: 'up', version: null, metrics: null, error: null });
      await waitFor(() => sockets.length === 1 && sockets[0]!.destroyed, 'the connection to close');
      expect(sent).to.be.below(16 * 1024 * 1024);
    });

    it('is down, connection refused, on a port nothing listens on', async () => {
      const port = await freePort();
      expect(await runCheck(http(`http://127.0.0.1:${port}/`))).to.deep.equal({
        status: 'down', latencyMs: null, version: null, metrics: null, error: 'connection refused',
      });
    });

    it('is down with a short error on a URL it cannot use', async () => {
      expect(await runCheck(http('not a url'))).to.include({ status: 'down', error: 'invalid URL' });
      expect(await runCheck(http('ftp://127.0.0.1/'))).to.include({ status: 'down', error: 'unsupported URL scheme ftp:' });
    });

    it('ends at once, aborted, when the caller aborts', async () => {
      const hang = hanging();
      const { url } = await httpServer(hang.handler);
      const ac = new AbortController();
      const pending = runCheck(http(url, { timeoutMs: 60_000 }), { signal: ac.signal });
      await waitFor(() => hang.sockets.length === 1, 'the request to arrive');
      const abortedAt = Date.now();
      ac.abort();
      expect(await pending).to.include({ status: 'down', error: 'aborted' });
      expect(Date.now() - abortedAt).to.be.below(1000);
      await waitFor(hang.allClosed, 'the connection to close');
    });
  });

  describe('tcp', () => {
    it('is up when it connects, and closes the socket', async () => {
      const { server, port } = await listen(net.createServer());
      const out = await runCheck({ type: 'tcp', host: '127.0.0.1', port, timeoutMs: 2000 });
      expect(out).to.include({ status: 'up', error: null, version: null, metrics: null });
      expect(out.latencyMs).to.be.a('number').and.at.least(0);
      await waitFor(async () => (await connections(server)) === 0, 'the check socket to close');
    });

    it('is down, connection refused, on a closed port', async () => {
      const port = await freePort();
      expect(await runCheck({ type: 'tcp', host: '127.0.0.1', port, timeoutMs: 2000 })).to.deep.equal({
        status: 'down', latencyMs: null, version: null, metrics: null, error: 'connection refused',
      });
    });

    it('is down on a port out of range, without trying', async () => {
      expect(await runCheck({ type: 'tcp', host: '127.0.0.1', port: 70_000, timeoutMs: 2000 })).to.include({ status: 'down', error: 'invalid port 70000' });
    });
  });
});
