// applySite/removeSite against a real nginx (test/support/nginxServer.ts) proxying to a
// real HTTP server on loopback.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { expect } from 'chai';
import { AppError } from '../../../infra/errors.ts';
import { applySite, removeSite, type NginxTarget } from '../../../infra/nginx/nginxApplier.ts';
import type { NginxError } from '../../../infra/nginx/nginxError.ts';
import { renderServerBlock, type ServerBlockInput } from '../../../infra/nginx/renderServerBlock.ts';
import { expectCode } from '../../support/expectCode.ts';
import { startNginxServer, type NginxServer } from '../../support/nginxServer.ts';
import { waitFor } from '../../support/waitFor.ts';

type Reply = { status: number; headers: IncomingHttpHeaders; body: string };

const get = (port: number, host: string, path = '/', opts: { tls?: boolean } = {}): Promise<Reply> =>
  new Promise((resolve, reject) => {
    const req = (opts.tls ? httpsRequest : request)(
      { host: '127.0.0.1', port, path, headers: { Host: host }, servername: host, rejectUnauthorized: false, agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });

/** What the upstream saw, as it echoes it back. */
type Seen = { upstream: string; url: string; headers: IncomingHttpHeaders };

const seenThrough = async (port: number, host: string, path = '/'): Promise<Seen | null> => {
  try {
    const r = await get(port, host, path);
    return r.status === 200 ? (JSON.parse(r.body) as Seen) : null;
  } catch {
    return null;
  }
};

/** An upstream that answers every request with what it saw, and accepts WebSocket-style upgrades as an echo. */
const startUpstream = (label: string): Promise<Server & { upgrades: IncomingHttpHeaders[] }> =>
  new Promise((resolve) => {
    const upgrades: IncomingHttpHeaders[] = [];
    const server = Object.assign(
      createServer((req, res) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ upstream: label, url: req.url ?? '', headers: req.headers } satisfies Seen));
      }),
      { upgrades },
    );
    server.on('upgrade', (req, socket) => {
      upgrades.push(req.headers);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.on('data', (d: Buffer) => socket.write(d)); // echo
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });

const portOf = (s: Server) => (s.address() as AddressInfo).port;

describe('nginxApplier (real nginx)', () => {
  let nginx: NginxServer;
  let upstreamA: Awaited<ReturnType<typeof startUpstream>>;
  let upstreamB: Awaited<ReturnType<typeof startUpstream>>;
  let target: NginxTarget;

  const input = (over: Partial<ServerBlockInput> & { name: string; domains: string[] }): ServerBlockInput => ({
    upstream: { host: '127.0.0.1', port: portOf(upstreamA), scheme: 'http' },
    websockets: false,
    listen: { address: '127.0.0.1', httpPort: nginx.httpPort, httpsPort: nginx.httpsPort },
    acmeWebroot: nginx.acmeWebroot,
    tls: null,
    ...over,
  });
  /** What the proxy worker will do: render (which validates), then apply. */
  const applyProxy = (p: Parameters<typeof input>[0]) =>
    Promise.resolve().then(() => applySite({ ...target, name: p.name, content: renderServerBlock(input(p)) }));
  /** Applies and waits until only workers with the new configuration are left. */
  const applied = (p: Parameters<typeof input>[0]) => nginx.afterReload(() => applyProxy(p));
  const sites = () => readdirSync(nginx.sitesDir).sort();

  before(async () => {
    nginx = await startNginxServer();
    upstreamA = await startUpstream('A');
    upstreamB = await startUpstream('B');
    target = { sitesDir: nginx.sitesDir, nginxBin: nginx.nginxBin, confPath: nginx.confPath, prefix: nginx.prefix, errorLog: nginx.errorLog };
  });
  after(async () => {
    await nginx?.stop();
    upstreamA?.close();
    upstreamB?.close();
  });

  it('proxies real traffic to the upstream with Host, X-Forwarded-For, X-Real-IP and X-Forwarded-Proto', async () => {
    const result = await applied({ name: 'alpha', domains: ['alpha.test'] });
    expect(result).to.include({ name: 'alpha', changed: true });
    expect(readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8')).to.include('server_name alpha.test;');
    // A reload is a signal: the new workers take over shortly after nginx -s reload returns.
    const seen = (await seenThrough(nginx.httpPort, 'alpha.test', '/hello?x=1'))!;
    expect(seen.upstream).to.equal('A');
    expect(seen.url).to.equal('/hello?x=1');
    expect(seen.headers.host).to.equal('alpha.test');
    expect(seen.headers['x-forwarded-for']).to.equal('127.0.0.1');
    expect(seen.headers['x-real-ip']).to.equal('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).to.equal('http');
  });

  it('leaves no temp files next to the site files', () => {
    expect(sites()).to.deep.equal(['alpha.conf']);
  });

  it('serves ACME HTTP-01 challenges from the webroot instead of proxying them', async () => {
    const dir = join(nginx.acmeWebroot, '.well-known', 'acme-challenge');
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileSync(join(dir, 'tok-123'), 'tok-123.thumbprint', { mode: 0o644 });
    const r = await get(nginx.httpPort, 'alpha.test', '/.well-known/acme-challenge/tok-123');
    expect(r.status).to.equal(200);
    expect(r.body).to.equal('tok-123.thumbprint');
    expect((await get(nginx.httpPort, 'alpha.test', '/.well-known/acme-challenge/missing')).status).to.equal(404);
  });

  it('updates a site in place: the next requests go to the new upstream', async () => {
    await applied({ name: 'alpha', domains: ['alpha.test'], upstream: { host: '127.0.0.1', port: portOf(upstreamB), scheme: 'http' } });
    expect((await seenThrough(nginx.httpPort, 'alpha.test'))?.upstream).to.equal('B');
  });

  describe('when nginx -t fails', () => {
    const broken = `server {\n    listen 127.0.0.1:PORT;\n    server_name broken.test;\n    this_is_not_a_directive on;\n}\n`;

    it('a new site: NGINX_TEST_FAILED with nginx stderr, the file removed, the other sites still serving', async () => {
      const before = readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8');
      const filesBefore = sites();
      const err = (await expectCode(applySite({ ...target, name: 'broken', content: broken.replace('PORT', String(nginx.httpPort)) }), 'NGINX_TEST_FAILED')) as NginxError;
      expect(err.stderr).to.match(/unknown directive "this_is_not_a_directive"/);
      expect(err.details).to.include({ restored: true, retestOk: true });
      expect(sites()).to.deep.equal(filesBefore);
      expect(readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8')).to.equal(before);
      expect((await seenThrough(nginx.httpPort, 'alpha.test'))?.upstream).to.equal('B');
    });

    it('an existing site: the previous file restored byte for byte and still serving', async () => {
      const before = readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8');
      const filesBefore = sites();
      await expectCode(applySite({ ...target, name: 'alpha', content: broken.replace('PORT', String(nginx.httpPort)) }), 'NGINX_TEST_FAILED');
      expect(readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8')).to.equal(before);
      expect(sites()).to.deep.equal(filesBefore);
      expect((await seenThrough(nginx.httpPort, 'alpha.test'))?.upstream).to.equal('B');
    });

    it('a site that renders but cannot load (an upstream host that does not resolve) is refused the same way', async () => {
      const filesBefore = sites();
      const err = (await expectCode(
        applyProxy({ name: 'nowhere', domains: ['nowhere.test'], upstream: { host: 'no-such-host.invalid', port: 80, scheme: 'http' } }),
        'NGINX_TEST_FAILED',
      )) as NginxError;
      expect(err.stderr).to.match(/host not found in upstream/);
      expect(sites()).to.deep.equal(filesBefore);
    });
  });

  it('NGINX_RELOAD_FAILED when the reload is refused (the master is gone): the previous file is restored, and the running nginx is untouched', async () => {
    // The same configuration, but its pid file names a process that has exited: the signal
    // cannot be delivered, and `nginx -s reload` refuses as it does when its master is gone.
    const dead = spawnSync('true').pid!;
    const pidFile = join(nginx.prefix, 'dead.pid');
    writeFileSync(pidFile, `${dead}\n`);
    const confPath = join(nginx.prefix, 'nginx-dead-master.conf');
    writeFileSync(confPath, readFileSync(nginx.confPath, 'utf8').replace(/^pid .*;$/m, `pid ${pidFile};`));
    const before = readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8');
    const err = (await expectCode(
      applySite({ ...target, confPath, name: 'alpha', content: renderServerBlock(input({ name: 'alpha', domains: ['alpha.test', 'other.test'] })) }),
      'NGINX_RELOAD_FAILED',
    )) as NginxError;
    expect(err.stderr).to.match(/No such process/);
    expect(err.details).to.include({ restored: true, retestOk: true, reloadedPrevious: false });
    expect(readFileSync(join(nginx.sitesDir, 'alpha.conf'), 'utf8')).to.equal(before);
    expect((await seenThrough(nginx.httpPort, 'alpha.test'))?.upstream).to.equal('B');
  });

  it('CONFIG_WRITE_FAILED when the site file cannot be written, and nginx is not touched', async () => {
    await expectCode(applySite({ ...target, sitesDir: join(nginx.prefix, 'no-such-dir'), name: 'alpha', content: '' }), 'CONFIG_WRITE_FAILED');
    expect((await seenThrough(nginx.httpPort, 'alpha.test'))?.upstream).to.equal('B');
  });

  it('passes WebSocket upgrades through when asked (Upgrade and Connection reach the upstream, data flows both ways)', async () => {
    await applied({ name: 'chat', domains: ['chat.test'], websockets: true });
    const echoed = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: nginx.httpPort }, () => {
        socket.write('GET /ws HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
      });
      let data = '';
      let sent = false;
      socket.setTimeout(5000, () => reject(new Error(`no echo; got ${JSON.stringify(data)}`)));
      socket.on('data', (d: Buffer) => {
        data += d.toString('latin1');
        if (!sent && data.includes('\r\n\r\n')) {
          if (!data.startsWith('HTTP/1.1 101')) return reject(new Error(`not upgraded: ${data}`));
          sent = true;
          data = '';
          socket.write('ping-through-nginx');
        } else if (sent && data === 'ping-through-nginx') {
          socket.destroy();
          resolve(data);
        }
      });
      socket.on('error', reject);
    });
    expect(echoed).to.equal('ping-through-nginx');
    const seen = upstreamA.upgrades.at(-1)!;
    expect(seen.upgrade).to.equal('websocket');
    expect(seen.connection).to.match(/upgrade/i);
    expect(seen.host).to.equal('chat.test');
  });

  it('with TLS: HTTP redirects to HTTPS except the ACME location, HTTPS proxies with X-Forwarded-Proto https', async () => {
    const certDir = join(nginx.prefix, 'certs');
    mkdirSync(certDir, { recursive: true });
    const [certPath, keyPath] = [join(certDir, 'secure.crt'), join(certDir, 'secure.key')];
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=secure.test', '-keyout', keyPath, '-out', certPath], { stdio: 'ignore' });
    chmodSync(keyPath, 0o600);
    await applied({ name: 'secure', domains: ['secure.test'], tls: { certPath, keyPath } });
    const redirect = await get(nginx.httpPort, 'secure.test', '/path?q=1');
    expect(redirect.status).to.equal(301);
    expect(redirect.headers.location).to.equal(`https://secure.test:${nginx.httpsPort}/path?q=1`);
    expect((await get(nginx.httpPort, 'secure.test', '/.well-known/acme-challenge/tok-123')).body).to.equal('tok-123.thumbprint');
    const r = await get(nginx.httpsPort, 'secure.test', '/over-tls', { tls: true });
    expect(r.status).to.equal(200);
    const seen = JSON.parse(r.body) as Seen;
    expect(seen.headers['x-forwarded-proto']).to.equal('https');
    expect(seen.headers.host).to.equal('secure.test');
  });

  it('serializes concurrent applies on one configuration: every good site lands, a bad one fails alone', async () => {
    const names = ['c1', 'c2', 'c3', 'c4'];
    const results = await nginx.afterReload(() => Promise.allSettled([
      ...names.map((name) => applyProxy({ name, domains: [`${name}.test`] })),
      applySite({ ...target, name: 'c-bad', content: 'server { nonsense; }\n' }),
    ]));
    expect(results.slice(0, 4).map((r) => r.status)).to.deep.equal(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(results[4]!.status).to.equal('rejected');
    expect(((results[4] as PromiseRejectedResult).reason as AppError).code).to.equal('NGINX_TEST_FAILED');
    expect(sites()).to.deep.equal(['alpha.conf', 'c1.conf', 'c2.conf', 'c3.conf', 'c4.conf', 'chat.conf', 'secure.conf']);
    // Five reloads in a row: a worker of an intermediate one may still answer for a moment.
    for (const name of names) await waitFor(async () => (await seenThrough(nginx.httpPort, `${name}.test`))?.upstream === 'A', `${name} to serve`);
  });

  it('removeSite removes one site and leaves the others serving', async () => {
    expect(await nginx.afterReload(() => removeSite({ ...target, name: 'c1' }))).to.deep.equal({ name: 'c1', removed: true });
    expect(await removeSite({ ...target, name: 'c1' })).to.deep.equal({ name: 'c1', removed: false });
    expect(sites()).not.to.include('c1.conf');
    // c1.test now falls to the harness's catch-all default server (404).
    expect((await get(nginx.httpPort, 'c1.test')).status).to.equal(404);
    expect((await seenThrough(nginx.httpPort, 'c2.test'))?.upstream).to.equal('A');
  });

  describe('bad input: refused before anything is written', () => {
    const cases: [string, Parameters<typeof input>[0]][] = [
      ['name ../x', { name: '../x', domains: ['x.test'] }],
      ['name "a b"', { name: 'a b', domains: ['x.test'] }],
      ['a 64-char name', { name: 'a'.repeat(64), domains: ['x.test'] }],
      ['domain "a.com; include /etc/passwd"', { name: 'x', domains: ['a.com; include /etc/passwd'] }],
      ['a domain with a newline', { name: 'x', domains: ['a.com\nserver_name b.com'] }],
      ['a domain with {', { name: 'x', domains: ['a.com{'] }],
      ['upstream port 0', { name: 'x', domains: ['x.test'], upstream: { host: '127.0.0.1', port: 0, scheme: 'http' } }],
      ['upstream port 65536', { name: 'x', domains: ['x.test'], upstream: { host: '127.0.0.1', port: 65536, scheme: 'http' } }],
    ];
    for (const [what, p] of cases) {
      it(what, async () => {
        const before = sites();
        await expectCode(applyProxy(p), 'VALIDATION_FAILED');
        expect(sites()).to.deep.equal(before);
      });
    }
    it('applySite itself refuses a name that is not a slug (no path escapes the sites directory)', async () => {
      const before = sites();
      for (const name of ['../x', 'a b', 'a'.repeat(64), '.hidden', 'x/y']) {
        expect(() => applySite({ ...target, name, content: '' })).to.throw(AppError).with.property('code', 'VALIDATION_FAILED');
        expect(() => removeSite({ ...target, name })).to.throw(AppError).with.property('code', 'VALIDATION_FAILED');
      }
      expect(sites()).to.deep.equal(before);
      expect(existsSync(join(nginx.sitesDir, '..', 'x.conf'))).to.equal(false);
    });
  });
});
