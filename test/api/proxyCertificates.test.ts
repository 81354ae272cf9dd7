// Certificates of proxies end to end (SPEC §7): the real app orders them from a real ACME
// CA (pebble, with pebble-challtestsrv as its only DNS, which answers 127.0.0.1 for every
// name) that validates HTTP-01 for real through the real test nginx, which then serves the
// certificate over TLS. Issue and force-renew through the API, enable_ssl on PUT, a name
// the CA refuses (cert.failed to a webhook), renewal of a certificate close to expiry
// after a restart (the worker's clock set near expiry), renewals that keep failing
// (cert.expiring once), and a CA that rejects 5 % of good nonces.
//
// One app at a time on one PostgreSQL database, restarted with the same keys (so the
// vault still decrypts) whenever a test needs another ACME directory or clock; the tests
// run in order and later ones build on earlier state (the alert channel, the database).
import { createPrivateKey, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import acme from 'acme-client';
import { expect } from 'chai';
import type { ProxyOptions } from '../../bin/proxyRoutes.ts';
import { createVault } from '../../infra/vault.ts';
import { WEBHOOK_HEADERS, verifyWebhook } from '../../infra/webhook.ts';
import { startApi, unique, type Answer, type Client, type TestApi } from '../support/apiClient.ts';
import { freshDatabaseUrl } from '../support/databases.ts';
import { startNginxServer, type NginxServer } from '../support/nginxServer.ts';
import { closedPort } from '../support/nodeServers.ts';
import { startPebble, type PebbleServer } from '../support/pebbleServer.ts';
import { nginxEnv, upstream, viaNginx, viaTls, type Upstream } from '../support/proxyHelpers.ts';
import { waitFor } from '../support/waitFor.ts';

const DAY_MS = 86_400_000;

type Received = { delivery: string; event: string; body: Record<string, any>; signed: boolean };

/** A webhook receiver on loopback that keeps each delivery once (retries share the delivery id) and checks its signature. */
const receiver = async (secret: string) => {
  const got = new Map<string, Received>();
  const server: Server = createServer((req, res) => {
    let text = '';
    req.on('data', (d) => { text += String(d); });
    req.on('end', () => {
      const delivery = String(req.headers[WEBHOOK_HEADERS.delivery]);
      const signed = verifyWebhook(secret, Number(req.headers[WEBHOOK_HEADERS.timestamp]), text, String(req.headers[WEBHOOK_HEADERS.signature]));
      got.set(delivery, { delivery, event: String(req.headers[WEBHOOK_HEADERS.event]), body: JSON.parse(text), signed });
      res.statusCode = 204;
      res.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/opsledger`,
    about: (proxy: string, event?: string) => [...got.values()].filter((g) => g.body.proxy === proxy && (event === undefined || g.event === event)),
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
};

describe('proxy certificates (real nginx, real pebble)', function () {
  this.timeout(60_000);
  const secret = 'a-long-enough-webhook-secret';
  const keys = { SECRET_KEY: randomBytes(32).toString('hex'), SECRETS_KEY: randomBytes(32).toString('hex') };
  const blocked = `${unique('refused')}.opl.test`;
  let databaseUrl: string;
  let nginx: NginxServer;
  /** 90-day certificates; refuses `blocked`. */
  let pebble: PebbleServer;
  /** Rejects 5 % of good nonces (badNonce), as pebble does by default. */
  let noisy: PebbleServer;
  let up: Upstream;
  let hook: Awaited<ReturnType<typeof receiver>>;
  let api: TestApi | null = null;
  /** Every answer the API gave in this file, to look for key material in. */
  const answers: string[] = [];
  let admin: Client;

  const certsDir = () => join(nginx.prefix, 'certs');
  const domainOf = (name: string) => `${name}.opl.test`;

  /** The admin client, keeping each answer's text. */
  const recording = (c: Client): Client => {
    const keep = async (p: Promise<Answer>) => {
      const r = await p;
      answers.push(r.text);
      return r;
    };
    return {
      token: c.token,
      call: (m, path, o) => keep(c.call(m, path, o)),
      get: (path, o) => keep(c.get(path, o)),
      post: (path, j, o) => keep(c.post(path, j, o)),
      put: (path, j, o) => keep(c.put(path, j, o)),
      patch: (path, j, o) => keep(c.patch(path, j, o)),
      delete: (path, o) => keep(c.delete(path, o)),
    };
  };

  /** (Re)starts the app on the same database, nginx and certificate directory, against `directoryUrl`. */
  const start = async (directoryUrl: string, caPem: string, proxies: ProxyOptions = {}) => {
    await api?.close();
    api = null;
    api = await startApi({
      flavour: 'postgres',
      env: { ...nginxEnv(nginx, certsDir()), DATABASE_URL: databaseUrl, ...keys, ACME_DIRECTORY_URL: directoryUrl, ACME_EMAIL: 'ops@opl.test' },
      server: { proxies: { applyWaitMs: 20_000, acmeCaPem: caPem, ...proxies } },
    });
    admin = recording(api.admin);
    return api;
  };

  const create = async (name: string, extra: Record<string, unknown> = {}) => {
    const r = await nginx.afterReload(() => admin.put(`/proxies/${name}`, { domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: up.port, ...extra }));
    expect(r.status, r.text).to.equal(201);
    expect(r.body).to.include({ status: 'active', ssl_active: false });
    return r.body;
  };
  const certificate = async (name: string) => (await admin.get(`/proxies/${name}/certificate`)).body;
  /** Waits until the certificate is `valid` (with another serial than `not`, when given). */
  const validCertificate = (name: string, not: string | null = null, timeoutMs = 15_000) =>
    waitFor(async () => {
      const c = await certificate(name);
      return c?.status === 'valid' && c.serial !== not ? c : null;
    }, `a valid certificate for ${name}${not ? ` other than ${not}` : ''}`, timeoutMs);
  /** Waits until nginx serves `serial` for the proxy over TLS (old workers may still answer for a moment after a reload). */
  const served = (name: string, serial: string, ca: string) =>
    waitFor(async () => {
      const r = await viaTls(nginx.httpsPort, domainOf(name), ca, '/over-tls').catch(() => null);
      return r?.serial === serial ? r : null;
    }, `nginx to serve certificate ${serial} for ${name}`);
  const certFiles = (name: string) => readdirSync(join(certsDir(), name)).sort();

  before(async () => {
    nginx = await startNginxServer();
    [pebble, noisy, up, hook, databaseUrl] = await Promise.all([
      startPebble({ httpPort: nginx.httpPort, certValiditySeconds: 90 * 86_400, domainBlocklist: [blocked] }),
      startPebble({ httpPort: nginx.httpPort, noncereject: true }),
      upstream('upstream-tls'),
      receiver(secret),
      freshDatabaseUrl(),
    ]);
    await start(pebble.directoryUrl, pebble.caPem);
  });
  after(async () => {
    acme.setLogger(() => undefined);
    await api?.close();
    await Promise.all([pebble?.stop(), noisy?.stop(), up?.close(), hook?.close()]);
    await nginx?.stop();
  });

  it('issues a certificate: nginx serves it over TLS with an HTTP→HTTPS redirect, the key only on disk (0600) and in the vault, encrypted', async () => {
    const name = unique('tls');
    const domain = domainOf(name);
    await create(name);
    const ordered = await admin.post(`/proxies/${name}/ssl`, {});
    expect(ordered.status, ordered.text).to.equal(202);
    expect(ordered.body).to.include({ domain, status: 'pending', serial: null, expiry: null });

    const cert = await validCertificate(name);
    expect(Date.parse(cert.not_before)).to.be.below(Date.parse(cert.expiry));
    expect(Date.parse(cert.expiry) - Date.now()).to.be.within(89 * DAY_MS, 91 * DAY_MS);
    expect(cert.issuer).to.match(/^Pebble Intermediate CA [0-9a-f]+$/);
    expect(cert.serial).to.match(/^[0-9a-f]+$/);
    expect(cert).to.include({ domain, last_error: null, renewal_failures: 0 });
    await waitFor(async () => (await admin.get(`/proxies/${name}`)).body.ssl_active === true, 'ssl_active');
    const proxy = (await admin.get(`/proxies/${name}`)).body;
    expect(proxy).to.include({ status: 'active', ssl_active: true });
    expect(proxy.certificate).to.deep.equal(cert);

    const root = await pebble.rootCaPem();
    const tls = await served(name, cert.serial, root);
    expect(tls).to.include({ status: 200, body: 'upstream-tls' });
    expect(up.seen.at(-1)!['x-forwarded-host']).to.equal(domain);
    // Until the reload's old workers quit, one of them may still answer plain HTTP without the redirect.
    const plain = await waitFor(async () => {
      const r = await viaNginx(nginx.httpPort, domain, '/some/where?x=1');
      return r.status === 301 ? r : null;
    }, 'the HTTP→HTTPS redirect');
    expect(plain.headers.location).to.equal(`https://${domain}:${nginx.httpsPort}/some/where?x=1`);

    // The files nginx reads: the chain and its key, 0600.
    expect(certFiles(name)).to.deep.equal([`${cert.serial}.crt`, `${cert.serial}.key`]);
    const keyPath = join(certsDir(), name, `${cert.serial}.key`);
    expect(statSync(keyPath).mode & 0o777).to.equal(0o600);
    const keyPem = readFileSync(keyPath, 'utf8');
    expect(keyPem).to.match(/^-----BEGIN (EC )?PRIVATE KEY-----\n/);
    const keyBody = keyPem.split('\n').filter((l) => l && !l.startsWith('-----'));
    // What must never show: the PEM, and the private scalar in any encoding. (The body's last
    // line holds only public key bytes, which the certificate in the chain carries too.)
    const d = createPrivateKey(keyPem).export({ format: 'jwk' }).d!;
    const secrets = [keyPem, keyBody.join(''), ...keyBody.slice(0, -1), d, Buffer.from(d, 'base64url').toString('base64'), Buffer.from(d, 'base64url').toString('hex')];

    // The key is in the vault, encrypted, under the proxy's owner; the events carry its reference only.
    const db = api!.running.kernel.database.db;
    const rows = await db.selectFrom('vault_secrets').selectAll().where('owner', '=', `proxy:${name}`).execute();
    expect(rows).to.have.length(1);
    const ciphertext = Buffer.from(rows[0]!.ciphertext);
    for (const text of secrets) expect(ciphertext.includes(Buffer.from(text))).to.equal(false);
    expect(await createVault(db, Buffer.from(keys.SECRETS_KEY, 'hex')).getText(rows[0]!.id)).to.equal(keyPem);
    const stream = await admin.get(`/streams/proxy-${name}`);
    expect(stream.status, stream.text).to.equal(200);
    expect(stream.text).to.include(rows[0]!.id);
    await admin.get('/proxies?limit=500');
    await admin.get('/proxies/health');
    expect(answers.length).to.be.greaterThan(5);
    for (const text of answers) for (const secret of secrets) expect(text).not.to.include(secret);

    // Asking again: the certificate is not due, so nothing changes.
    const again = await admin.post(`/proxies/${name}/ssl`, {});
    expect(again.status, again.text).to.equal(200);
    expect(again.body).to.include({ status: 'valid', serial: cert.serial });

    // Forced: a new certificate, served once applied; the old files go.
    const forced = await admin.post(`/proxies/${name}/ssl`, { force_renew: true });
    expect(forced.status, forced.text).to.equal(202);
    expect(forced.body).to.include({ status: 'renewing', serial: cert.serial });
    const renewed = await validCertificate(name, cert.serial);
    expect(Date.parse(renewed.issued_at)).to.be.at.least(Date.parse(cert.issued_at));
    expect((await served(name, renewed.serial, root)).body).to.equal('upstream-tls');
    await waitFor(() => certFiles(name).length === 2 && certFiles(name)[0] === `${renewed.serial}.crt`, 'the old certificate files to go');
    expect(certFiles(name)).to.deep.equal([`${renewed.serial}.crt`, `${renewed.serial}.key`]);
  });

  it('enable_ssl on PUT: the applier orders a certificate by itself once nginx runs the proxy', async () => {
    const name = unique('auto');
    const created = await create(name, { enable_ssl: true });
    expect(created.enable_ssl).to.equal(true);
    const cert = await validCertificate(name);
    await waitFor(async () => (await admin.get(`/proxies/${name}`)).body.ssl_active === true, 'ssl_active');
    expect((await served(name, cert.serial, await pebble.rootCaPem())).body).to.equal('upstream-tls');
    await waitFor(async () => (await viaNginx(nginx.httpPort, domainOf(name))).status === 301, 'the HTTP→HTTPS redirect');
  });

  it('a name the CA refuses: the certificate fails with the ACME error, health says so, a signed cert.failed goes out, and HTTP keeps serving', async () => {
    const channel = await admin.post('/alert-channels', { url: hook.url, events: ['cert.failed', 'cert.expiring'], secret });
    expect(channel.status, channel.text).to.equal(201);
    const name = unique('refused');
    const r = await nginx.afterReload(() => admin.put(`/proxies/${name}`, { domain: blocked, upstream_host: '127.0.0.1', upstream_port: up.port }));
    expect(r.status, r.text).to.equal(201);
    expect((await admin.post(`/proxies/${name}/ssl`, {})).status).to.equal(202);

    const failed = await waitFor(async () => {
      const c = await certificate(name);
      return c?.status === 'failed' ? c : null;
    }, 'the certificate to fail');
    expect(failed).to.include({ domain: blocked, serial: null, expiry: null });
    expect(failed.last_error).to.include({ code: 'SSL_ISSUANCE_FAILED', acme_type: 'urn:ietf:params:acme:error:rejectedIdentifier' });
    expect(failed.last_error.message).to.match(/rejectedIdentifier/);
    const health = (await admin.get('/proxies/health')).body;
    expect(health.acme).to.include({ directory_url: pebble.directoryUrl, last_operation: 'failed' });
    expect(health.acme.last_error).to.deep.equal(failed.last_error);

    const [alert] = await waitFor(() => (hook.about(name, 'cert.failed').length > 0 ? hook.about(name, 'cert.failed') : null), 'cert.failed delivered');
    expect(alert!.signed).to.equal(true);
    expect(alert!.body).to.deep.include({ event: 'cert.failed', project: 'default', proxy: name, domain: blocked, reason: 'requested',
      acme_type: 'urn:ietf:params:acme:error:rejectedIdentifier', expiry: null });
    expect(hook.about(name, 'cert.expiring')).to.deep.equal([]);

    const proxy = (await admin.get(`/proxies/${name}`)).body;
    expect(proxy).to.include({ status: 'active', ssl_active: false, last_error: null });
    expect(await viaNginx(nginx.httpPort, blocked)).to.include({ status: 200, body: 'upstream-tls' });
  });

  let renewedName: string;
  let renewedSerial: string;
  /** The worker's clock `days` before `expiry`, running on from there. */
  const clockBefore = (expiry: string, days: number) => {
    const offset = Date.parse(expiry) - days * DAY_MS - Date.now();
    return () => new Date(Date.now() + offset);
  };

  it('renews a certificate close to expiry when the app starts: a new serial, served by nginx, the old files gone', async () => {
    const name = unique('renew');
    await create(name);
    expect((await admin.post(`/proxies/${name}/ssl`, {})).status).to.equal(202);
    const first = await validCertificate(name);
    await served(name, first.serial, await pebble.rootCaPem());

    // The same database, keys, nginx and certificates; the worker's clock 10 days before expiry; no renewal tick but the start's.
    await start(pebble.directoryUrl, pebble.caPem, { now: clockBefore(first.expiry, 10), renewTickMs: 3_600_000 });
    const renewed = await validCertificate(name, first.serial);
    // issued_at comes from the worker's clock: the renewal happened "10 days before expiry".
    expect(Date.parse(renewed.issued_at)).to.be.greaterThan(Date.parse(first.issued_at));
    expect(Date.parse(renewed.issued_at)).to.be.greaterThan(Date.parse(first.expiry) - 11 * DAY_MS);
    expect(Date.parse(renewed.expiry)).to.be.at.least(Date.parse(first.expiry));
    expect(renewed.renewal_failures).to.equal(0);
    expect((await served(name, renewed.serial, await pebble.rootCaPem())).body).to.equal('upstream-tls');
    await waitFor(() => !certFiles(name).includes(`${first.serial}.key`), 'the old certificate files to go');
    expect(certFiles(name)).to.deep.equal([`${renewed.serial}.crt`, `${renewed.serial}.key`]);
    expect(statSync(join(certsDir(), name, `${renewed.serial}.key`)).mode & 0o777).to.equal(0o600);
    [renewedName, renewedSerial] = [name, renewed.serial];
  });

  it('renewals that keep failing: cert.failed each time, cert.expiring once at the third, and the valid certificate keeps serving', async () => {
    const name = renewedName;
    const cert = await certificate(name);
    expect(cert.serial).to.equal(renewedSerial);
    const unreachable = `https://127.0.0.1:${await closedPort()}/dir`;
    await start(unreachable, pebble.caPem, { now: clockBefore(cert.expiry, 10), renewTickMs: 200, renewRetryMs: 1 });

    await waitFor(async () => (await certificate(name)).renewal_failures >= 5, 'five failed renewals', 20_000);
    await waitFor(() => hook.about(name, 'cert.failed').length >= 5 && hook.about(name, 'cert.expiring').length >= 1, 'the alerts delivered');
    const expiring = hook.about(name, 'cert.expiring');
    expect(expiring).to.have.length(1);
    expect(expiring[0]!.signed).to.equal(true);
    expect(expiring[0]!.body).to.deep.include({ event: 'cert.expiring', proxy: name, domain: domainOf(name), reason: 'renewal', renewal_failures: 3,
      expiry: cert.expiry, acme_type: null });
    expect(expiring[0]!.body.error).to.match(/ECONNREFUSED/);
    const failures = hook.about(name, 'cert.failed');
    expect(failures.every((f) => f.signed && f.body.reason === 'renewal')).to.equal(true);

    const now = await certificate(name);
    expect(now.serial).to.equal(renewedSerial);
    expect(['valid', 'renewing']).to.include(now.status);
    expect(now.last_error).to.include({ code: 'SSL_ISSUANCE_FAILED', acme_type: null });
    const health = (await admin.get('/proxies/health')).body;
    expect(health.acme).to.include({ directory_url: unreachable });
    expect((await viaTls(nginx.httpsPort, domainOf(name), await pebble.rootCaPem())).serial).to.equal(renewedSerial);
  });

  it('a CA that rejects 5 % of good nonces: every issuance through the API still succeeds (acme-client retries badNonce)', async () => {
    const retries: string[] = [];
    acme.setLogger((line: string) => {
      if (/invalid nonce/i.test(line)) retries.push(line);
    });
    await start(noisy.directoryUrl, noisy.caPem);
    const names = [unique('noisy'), unique('noisy'), unique('noisy')];
    for (const name of names) await create(name);
    for (const name of names) expect((await admin.post(`/proxies/${name}/ssl`, {})).status).to.equal(202);
    const root = await noisy.rootCaPem();
    const serials = new Map<string, string>();
    for (const name of names) {
      const cert = await validCertificate(name);
      serials.set(name, cert.serial);
      expect((await served(name, cert.serial, root)).body).to.equal('upstream-tls');
    }
    // On until a rejection has happened (≈ 0.5 per issuance; 20 without one: < 1e-5).
    for (let n = 0; retries.length === 0 && n < 17; n += 1) {
      const name = names[n % names.length]!;
      expect((await admin.post(`/proxies/${name}/ssl`, { force_renew: true })).status).to.equal(202);
      serials.set(name, (await validCertificate(name, serials.get(name)!)).serial);
    }
    expect(retries, 'pebble never rejected a nonce').not.to.deep.equal([]);
    for (const name of names) expect((await served(name, serials.get(name)!, root)).body).to.equal('upstream-tls');
  });
});
