// Signing, checking and sending webhooks; sending against real HTTP servers on loopback.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { postWebhook, safeUrlForLogs, signWebhook, verifyWebhook, WEBHOOK_HEADERS, webhookHeaders } from '../../infra/webhook.ts';

type Received = { method: string; url: string; headers: IncomingMessage['headers']; body: string };

/** A loopback server answering with `handle`; records every request. */
const startServer = async (handle: (req: IncomingMessage, res: ServerResponse) => void) => {
  const received: Received[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      handle(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
};

/** A port nothing listens on: one the OS just handed out and took back. */
const closedPort = async (): Promise<number> => {
  const s = await startServer(() => undefined);
  await s.close();
  return s.port;
};

describe('webhook signatures', () => {
  const secret = 'whsec_0123456789abcdef';
  const body = JSON.stringify({ id: 'd-1', event: 'node.down', node: { name: 'orch-1' } });
  const ts = 1_760_000_000;

  it('signs as sha256=<hex> and verifies its own signature', () => {
    const signature = signWebhook(secret, ts, body);
    expect(signature).to.match(/^sha256=[0-9a-f]{64}$/);
    expect(verifyWebhook(secret, ts, body, signature)).to.equal(true);
    expect(verifyWebhook(secret, ts, body, signature.toUpperCase().replace('SHA256=', 'sha256='))).to.equal(true);
  });

  it('detects a changed body, a wrong secret and a changed signature', () => {
    const signature = signWebhook(secret, ts, body);
    expect(verifyWebhook(secret, ts, body.replace('orch-1', 'orch-2'), signature)).to.equal(false);
    expect(verifyWebhook(`${secret}x`, ts, body, signature)).to.equal(false);
    const flipped = signature.slice(0, -1) + (signature.endsWith('0') ? '1' : '0');
    expect(verifyWebhook(secret, ts, body, flipped)).to.equal(false);
  });

  it('binds the timestamp: the same body at another time needs another signature', () => {
    const signature = signWebhook(secret, ts, body);
    expect(verifyWebhook(secret, ts + 1, body, signature)).to.equal(false);
    expect(signWebhook(secret, ts + 1, body)).to.not.equal(signature);
    // "<ts>.<body>" is unambiguous: moving digits between the two changes the signature.
    expect(signWebhook(secret, 12, '3.x')).to.not.equal(signWebhook(secret, 123, 'x'));
  });

  it('answers false, without throwing, for malformed signatures and timestamps', () => {
    const good = signWebhook(secret, ts, body);
    for (const bad of ['', 'sha256=', good.slice(7), `sha1=${good.slice(7)}`, `${good}00`, good.slice(0, -2), `sha256=${'zz'.repeat(32)}`]) {
      expect(verifyWebhook(secret, ts, body, bad), bad).to.equal(false);
    }
    expect(verifyWebhook(secret, Number.NaN, body, good)).to.equal(false);
    expect(verifyWebhook(secret, ts + 0.5, body, good)).to.equal(false);
    expect(() => signWebhook(secret, 1.5, body)).to.throw('a webhook timestamp must be an integer (unix seconds)');
  });

  it('builds every header of a delivery, the signature over the timestamp it sends', () => {
    const headers = webhookHeaders({ secret, event: 'node.down', deliveryId: 'd-1', timestamp: ts, body });
    expect(headers).to.include({
      'content-type': 'application/json',
      'user-agent': 'opsledger-webhook/1',
      [WEBHOOK_HEADERS.event]: 'node.down',
      [WEBHOOK_HEADERS.delivery]: 'd-1',
      [WEBHOOK_HEADERS.timestamp]: String(ts),
    });
    expect(verifyWebhook(secret, Number(headers[WEBHOOK_HEADERS.timestamp]), body, headers[WEBHOOK_HEADERS.signature]!)).to.equal(true);
  });

  it('shows only the origin of a URL in logs', () => {
    expect(safeUrlForLogs('https://user:pw@hooks.example.test:8443/services/T0/B0/secret?token=abc#x')).to.equal('https://hooks.example.test:8443');
    expect(safeUrlForLogs('not a url')).to.equal('(invalid URL)');
  });
});

describe('postWebhook', () => {
  const servers: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  const serve = async (handle: (req: IncomingMessage, res: ServerResponse) => void) => {
    const s = await startServer(handle);
    servers.push(s);
    return s;
  };

  it('POSTs the body and headers and reports a 2xx as ok', async () => {
    const s = await serve((_req, res) => res.writeHead(204).end());
    const result = await postWebhook({ url: `${s.url}/hook?x=1`, body: '{"a":1}', headers: { 'content-type': 'application/json', 'x-test': 'yes' }, timeoutMs: 2000 });
    expect(result).to.deep.equal({ ok: true, status: 204, error: null });
    expect(s.received).to.have.length(1);
    expect(s.received[0]).to.include({ method: 'POST', url: '/hook?x=1', body: '{"a":1}' });
    expect(s.received[0]!.headers).to.include({ 'content-type': 'application/json', 'x-test': 'yes' });
  });

  it('reports a 500 as not ok, with its status', async () => {
    const s = await serve((_req, res) => res.writeHead(500).end('boom'));
    expect(await postWebhook({ url: s.url, body: '{}', headers: {}, timeoutMs: 2000 })).to.deep.equal({ ok: false, status: 500, error: 'HTTP 500' });
  });

  it('does not follow a redirect', async () => {
    const s = await serve((req, res) => (req.url === '/moved' ? res.writeHead(307, { location: '/there' }).end() : res.writeHead(200).end()));
    expect(await postWebhook({ url: `${s.url}/moved`, body: '{}', headers: {}, timeoutMs: 2000 })).to.deep.equal({ ok: false, status: 307, error: 'HTTP 307' });
    expect(s.received.map((r) => r.url)).to.deep.equal(['/moved']);
  });

  it('gives up on a receiver that does not answer within the timeout', async () => {
    const s = await serve(() => undefined); // never answers
    const started = Date.now();
    const result = await postWebhook({ url: s.url, body: '{}', headers: {}, timeoutMs: 150 });
    expect(result).to.deep.equal({ ok: false, status: null, error: 'timed out after 150 ms' });
    expect(Date.now() - started).to.be.lessThan(2000);
  });

  it('does not wait past the timeout for a body that never ends, and its status still counts', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('x'.repeat(100)); // and never ends
    });
    const started = Date.now();
    expect(await postWebhook({ url: s.url, body: '{}', headers: {}, timeoutMs: 150 })).to.deep.equal({ ok: true, status: 200, error: null });
    expect(Date.now() - started).to.be.lessThan(2000);
  });

  it('reads no more than it needs of a large response', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200);
      res.end(Buffer.alloc(4 * 1024 * 1024, 'x'));
    });
    expect(await postWebhook({ url: s.url, body: '{}', headers: {}, timeoutMs: 2000 })).to.deep.equal({ ok: true, status: 200, error: null });
  });

  it('reports a closed port as connection refused', async () => {
    const port = await closedPort();
    expect(await postWebhook({ url: `http://127.0.0.1:${port}/hook`, body: '{}', headers: {}, timeoutMs: 2000 }))
      .to.deep.equal({ ok: false, status: null, error: 'connection refused' });
  });

  it('sends URL credentials as basic auth and never repeats the URL in an error', async () => {
    const s = await serve((_req, res) => res.writeHead(200).end());
    const ok = await postWebhook({ url: `http://hook%40user:p%3Ass@127.0.0.1:${s.port}/`, body: '{}', headers: {}, timeoutMs: 2000 });
    expect(ok.ok).to.equal(true);
    expect(s.received[0]!.headers.authorization).to.equal(`Basic ${Buffer.from('hook@user:p:ss').toString('base64')}`);

    expect(await postWebhook({ url: 'http//user:secret@nowhere', body: '{}', headers: {}, timeoutMs: 2000 }))
      .to.deep.equal({ ok: false, status: null, error: 'invalid URL' });
    expect(await postWebhook({ url: 'ftp://127.0.0.1/x', body: '{}', headers: {}, timeoutMs: 2000 }))
      .to.deep.equal({ ok: false, status: null, error: 'unsupported URL scheme (http or https only)' });
    const port = await closedPort();
    const refused = await postWebhook({ url: `http://user:secret@127.0.0.1:${port}/?token=abc`, body: '{}', headers: {}, timeoutMs: 2000 });
    expect(refused.error).to.equal('connection refused');
  });

  it('stops when the caller aborts', async () => {
    const s = await serve(() => undefined);
    const controller = new AbortController();
    const pending = postWebhook({ url: s.url, body: '{}', headers: {}, timeoutMs: 10_000, signal: controller.signal });
    controller.abort();
    expect(await pending).to.deep.equal({ ok: false, status: null, error: 'aborted' });
  });
});
