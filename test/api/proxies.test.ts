// Proxies through the real app against a real nginx on loopback: traffic through nginx to
// real upstreams, updates, an unhealthy upstream, a configuration that fails `nginx -t`
// (the previous one keeps serving), delete, list and health, live topics, registry sync,
// and bad input that writes nothing.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { expect } from 'chai';
import { sql } from 'kysely';
import { io as connectClient, type Socket } from 'socket.io-client';
import { expectProblem, startApi, unique, type TestApi } from '../support/apiClient.ts';
import { startNginxServer, type NginxServer } from '../support/nginxServer.ts';
import { closedPort } from '../support/nodeServers.ts';
import { nginxEnv, upstream, viaNginx, type Upstream } from '../support/proxyHelpers.ts';
import { waitFor } from '../support/waitFor.ts';

describe('proxies API (real nginx)', function () {
  this.timeout(120_000);
  let nginx: NginxServer;
  let api: TestApi;
  let a: Upstream;
  let b: Upstream;
  const sockets: Socket[] = [];

  const eventCount = async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from events`.execute(api.running.kernel.database.db);
    return rows[0]!.n;
  };
  const siteFiles = () => readdirSync(nginx.sitesDir).sort();
  const put = (name: string, body: Record<string, unknown>) => api.admin.put(`/proxies/${name}`, body);
  const domainOf = (name: string) => `${name}.opl.test`;
  const create = async (name: string, port: number, extra: Record<string, unknown> = {}) => {
    const r = await nginx.afterReload(() => put(name, { domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: port, ...extra }));
    expect(r.status, r.text).to.equal(201);
    return r.body;
  };

  before(async () => {
    nginx = await startNginxServer();
    [a, b] = await Promise.all([upstream('upstream-a'), upstream('upstream-b')]);
    api = await startApi({ env: nginxEnv(nginx, join(nginx.prefix, 'certs')), server: { proxies: { applyWaitMs: 20_000 } } });
  });
  after(async () => {
    for (const s of sockets) s.close();
    await api?.close();
    await Promise.all([a?.close(), b?.close()]);
    await nginx?.stop();
  });

  it('creates a proxy that nginx serves: real traffic reaches the upstream with the proxy headers', async () => {
    const name = unique('web');
    const created = await create(name, a.port);
    expect(created).to.include({ name, project: 'default', domain: domainOf(name), status: 'active', ssl_active: false, websockets: true, require_healthy: true });
    expect(created.last_error).to.equal(null);
    expect(created.applied_at).to.be.a('string');
    const r = await viaNginx(nginx.httpPort, domainOf(name));
    expect(r).to.include({ status: 200, body: 'upstream-a' });
    const headers = a.seen.at(-1)!;
    expect(headers['x-forwarded-host']).to.equal(domainOf(name));
    expect(headers['x-real-ip']).to.equal('127.0.0.1');
    expect(siteFiles()).to.include(`${name}.conf`);
    // Another host still falls to the catch-all.
    expect((await viaNginx(nginx.httpPort, 'nobody.opl.test')).status).to.equal(404);

    const got = await api.admin.get(`/proxies/${name}`);
    expect(got.status).to.equal(200);
    expect(got.headers.get('etag')).to.match(/^"\d+"$/);
    expect(got.body).to.deep.equal(created);
  });

  it('updates a proxy to a new upstream; the same definition again changes nothing', async () => {
    const name = unique('move');
    await create(name, a.port);
    const moved = await nginx.afterReload(() => put(name, { domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: b.port }));
    expect(moved.status, moved.text).to.equal(200);
    expect(moved.body).to.include({ status: 'active', upstream_port: b.port });
    expect((await viaNginx(nginx.httpPort, domainOf(name))).body).to.equal('upstream-b');
    const before = await eventCount();
    const again = await put(name, { domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: b.port });
    expect(again.status, again.text).to.equal(200);
    expect(await eventCount()).to.equal(before);
  });

  it('refuses an unhealthy upstream with UPSTREAM_UNHEALTHY; nothing reaches nginx and a live proxy keeps serving', async () => {
    const fresh = unique('sick');
    const before = siteFiles();
    const refused = await put(fresh, { domain: domainOf(fresh), upstream_host: '127.0.0.1', upstream_port: await closedPort() });
    expectProblem(refused, 502, 'UPSTREAM_UNHEALTHY');
    expect(refused.body.detail).to.match(/unhealthy/);
    expect(refused.body.proxy).to.include({ name: fresh, status: 'failed' });
    expect(siteFiles()).to.deep.equal(before);
    expect((await api.admin.get(`/proxies/${fresh}`)).body.last_error.code).to.equal('UPSTREAM_UNHEALTHY');

    const live = unique('live');
    await create(live, a.port);
    b.healthStatus = 503;
    try {
      const r = await put(live, { domain: domainOf(live), upstream_host: '127.0.0.1', upstream_port: b.port });
      expectProblem(r, 502, 'UPSTREAM_UNHEALTHY');
      expect(r.body.detail).to.match(/503/);
      expect((await viaNginx(nginx.httpPort, domainOf(live))).body).to.equal('upstream-a');
      // Without require_healthy it is applied regardless.
      const forced = await nginx.afterReload(() => put(live, { domain: domainOf(live), upstream_host: '127.0.0.1', upstream_port: b.port, require_healthy: false }));
      expect(forced.status, forced.text).to.equal(200);
      expect((await viaNginx(nginx.httpPort, domainOf(live))).body).to.equal('upstream-b');
    } finally {
      b.healthStatus = 200;
    }
  });

  it('when nginx -t fails, restores the previous file, keeps serving the previous configuration and says NGINX_TEST_FAILED', async () => {
    const name = unique('keep');
    await create(name, a.port);
    const path = join(nginx.sitesDir, `${name}.conf`);
    const good = readFileSync(path, 'utf8');
    // Someone else's broken file in the same configuration: every test of the whole config fails.
    const broken = join(nginx.sitesDir, 'zz-broken.conf');
    writeFileSync(broken, 'server { listen 127.0.0.1:1; this_is_not_a_directive; }\n');
    try {
      const r = await put(name, { domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: b.port });
      expectProblem(r, 422, 'NGINX_TEST_FAILED');
      expect(r.body.detail).to.match(/this_is_not_a_directive/);
      expect(r.body.proxy).to.include({ status: 'failed', upstream_port: b.port });
      expect(readFileSync(path, 'utf8')).to.equal(good);
      expect(siteFiles().filter((f) => f.endsWith('.tmp'))).to.deep.equal([]);
      expect((await viaNginx(nginx.httpPort, domainOf(name))).body).to.equal('upstream-a');
      const health = (await api.admin.get('/proxies/health')).body;
      expect(health.nginx).to.include({ present: true, config_test_ok: false });
    } finally {
      rmSync(broken);
    }
    // Fixed: the same PUT again applies (a failed definition is not "unchanged").
    const retried = await nginx.afterReload(() => put(name, { domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: b.port }));
    expect(retried.status, retried.text).to.equal(200);
    expect(retried.body).to.include({ status: 'active', last_error: null });
    expect((await viaNginx(nginx.httpPort, domainOf(name))).body).to.equal('upstream-b');
  });

  it('deletes a proxy: its site goes, nginx stops serving it, and it answers 404', async () => {
    const name = unique('gone');
    await create(name, a.port);
    const r = await nginx.afterReload(() => api.admin.delete(`/proxies/${name}`));
    expect(r.status, r.text).to.equal(204);
    expect(siteFiles()).not.to.include(`${name}.conf`);
    expect((await viaNginx(nginx.httpPort, domainOf(name))).status).to.equal(404);
    expectProblem(await api.admin.get(`/proxies/${name}`), 404, 'PROXY_NOT_FOUND');
    expectProblem(await api.admin.delete(`/proxies/${name}`), 404, 'PROXY_NOT_FOUND');
    // The name is free again.
    await create(name, b.port);
    expect((await viaNginx(nginx.httpPort, domainOf(name))).body).to.equal('upstream-b');
  });

  it('lists proxies and reports the engine’s health', async () => {
    const name = unique('listed');
    await create(name, a.port);
    const list = await api.admin.get('/proxies?limit=500');
    expect(list.status).to.equal(200);
    expect(list.body.items.map((p: { name: string }) => p.name)).to.include(name);
    expect(list.body.total).to.be.at.least(1);
    const failed = await api.admin.get('/proxies?status=failed&limit=500');
    expect(failed.body.items.every((p: { status: string }) => p.status === 'failed')).to.equal(true);
    const health = await api.admin.get('/proxies/health');
    expect(health.status).to.equal(200);
    expect(health.body.nginx).to.include({ present: true, config_test_ok: true, sites_dir: nginx.sitesDir });
    expect(health.body.nginx.version).to.match(/^\d+\.\d+/);
    expect(Date.parse(health.body.nginx.last_reload_at)).to.be.greaterThan(Date.now() - 60_000);
    expect(health.body.acme).to.have.keys('directory_url', 'last_operation', 'last_operation_at', 'last_error');
  });

  it('refuses a second proxy for a domain, and a reserved or foreign name', async () => {
    const name = unique('own');
    await create(name, a.port);
    const other = unique('thief');
    expectProblem(await put(other, { domain: domainOf(name).toUpperCase(), upstream_host: '127.0.0.1', upstream_port: a.port }), 409, 'CONFLICT');
    expectProblem(await put('health', { domain: 'h.opl.test', upstream_host: '127.0.0.1', upstream_port: a.port }), 400, 'VALIDATION_FAILED');
    expectProblem(await put(name, { project: 'no-such-project', domain: domainOf(name), upstream_host: '127.0.0.1', upstream_port: a.port }), 409, 'CONFLICT');
  });

  it('answers bad input with 400 problem+json and writes nothing, to disk or to the log', async () => {
    const files = siteFiles();
    const events = await eventCount();
    const good = { domain: 'fine.opl.test', upstream_host: '127.0.0.1', upstream_port: a.port };
    const badNames = ['..%2Fx', '..', 'a%20b', 'A-B', '-x', 'x'.repeat(64), 'a.b', '%2Fetc%2Fpasswd', 'a%0Ab'];
    for (const n of badNames) {
      const r = await api.admin.put(`/proxies/${n}`, good);
      expect([400, 404], `${n}: ${r.text}`).to.include(r.status);
      expect(r.headers.get('content-type'), n).to.match(/^application\/problem\+json/);
    }
    const badBodies: Record<string, unknown>[] = [
      { ...good, domain: 'a.com; include /etc/passwd' }, { ...good, domain: 'a.com\nserver {' }, { ...good, domain: 'a{b}.com' },
      { ...good, domain: 'a.com b.com' }, { ...good, domain: '$host' }, { ...good, domain: '' }, { ...good, domain: `${'a'.repeat(64)}.com` },
      { ...good, upstream_host: '127.0.0.1;' }, { ...good, upstream_host: 'http://x' }, { ...good, upstream_port: 0 },
      { ...good, upstream_port: 65536 }, { ...good, upstream_port: '80' }, { ...good, upstream_port: 80.5 }, { ...good, upstream_scheme: 'ftp' },
      { ...good, websockets: 'yes' }, { ...good, extra: 1 }, { upstream_host: '127.0.0.1', upstream_port: 80 },
    ];
    for (const body of badBodies) expectProblem(await put('fine', body), 400, 'VALIDATION_FAILED');
    expect(siteFiles()).to.deep.equal(files);
    expect(await eventCount()).to.equal(events);
  });

  it('pushes changes to the proxies and proxy:{name} topics', async () => {
    const name = unique('live');
    const listen = async (topic: string) => {
      const socket = connectClient(`${api.url}/live`, { auth: { token: api.adminToken }, transports: ['websocket'] });
      sockets.push(socket);
      const seen: { topic: string; kind: string; id: string; data: { status?: string } }[] = [];
      socket.on('change', (c) => seen.push(c));
      expect(await socket.timeout(5000).emitWithAck('subscribe', topic)).to.deep.equal({ ok: true });
      return seen;
    };
    const [one, all] = [await listen(`proxy:${name}`), await listen('proxies')];
    await create(name, a.port);
    for (const seen of [one, all]) {
      await waitFor(() => seen.some((c) => c.topic === 'proxies' && c.id === name && c.kind === 'ProxyApplied' && c.data.status === 'active'), 'the apply to be pushed');
      expect(seen.find((c) => c.id === name)).to.include({ kind: 'ProxyConfigured' });
    }
    expect(one.every((c) => c.id === name)).to.equal(true);
  });

  it('syncs from a registry: creates and updates what is valid, skips the rest and says why', async () => {
    const existing = unique('reg');
    await create(existing, a.port);
    const fresh = unique('reg');
    let answer: { status: number; body: string } = { status: 200, body: '[]' };
    const registry = createServer((_req, res) => res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body));
    await new Promise<void>((r) => registry.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(registry.address() as AddressInfo).port}/proxies.json`;
    try {
      answer = { status: 200, body: JSON.stringify({ proxies: [
        { name: existing, domain: domainOf(existing), upstream_host: '127.0.0.1', upstream_port: b.port },
        { name: fresh, domain: domainOf(fresh), upstream_host: '127.0.0.1', upstream_port: a.port },
        { name: '../evil', domain: 'evil.opl.test', upstream_host: '127.0.0.1', upstream_port: a.port },
        { name: 'bad-domain', domain: 'x.com; include /etc/passwd', upstream_host: '127.0.0.1', upstream_port: a.port },
        { name: fresh, domain: 'twice.opl.test', upstream_host: '127.0.0.1', upstream_port: a.port },
        'not an object',
      ] }) };
      const r = await api.admin.post('/proxies/sync', { registry_url: url });
      expect(r.status, r.text).to.equal(200);
      expect(r.body.synced_count).to.equal(2);
      expect(r.body.synced).to.deep.include.members([
        { name: existing, status: 'active', changed: true, error: null },
        { name: fresh, status: 'active', changed: true, error: null },
      ]);
      expect(r.body.skipped_count).to.equal(4);
      const reasons = Object.fromEntries(r.body.skipped.map((s: { name: string | null; reason: string }) => [s.name ?? '(none)', s.reason]));
      expect(reasons['../evil']).to.match(/name/);
      expect(reasons['bad-domain']).to.match(/domain/);
      expect(reasons[fresh]).to.match(/more than once/);
      // Two reloads in a row: wait on the final state rather than on one reload's workers.
      await waitFor(async () => (await viaNginx(nginx.httpPort, domainOf(existing))).body === 'upstream-b', 'the updated proxy to serve');
      await waitFor(async () => (await viaNginx(nginx.httpPort, domainOf(fresh))).body === 'upstream-a', 'the new proxy to serve');
      expect(readdirSync(nginx.sitesDir).filter((f) => f.includes('evil'))).to.deep.equal([]);

      // Again: nothing changed.
      const again = await api.admin.post('/proxies/sync', { registry_url: url });
      expect(again.body.synced.filter((s: { changed: boolean }) => s.changed)).to.deep.equal([]);

      answer = { status: 500, body: 'oops' };
      expectProblem(await api.admin.post('/proxies/sync', { registry_url: url }), 502, 'REGISTRY_UNAVAILABLE');
      answer = { status: 200, body: 'not json' };
      expectProblem(await api.admin.post('/proxies/sync', { registry_url: url }), 502, 'REGISTRY_UNAVAILABLE');
      answer = { status: 200, body: '{"something": "else"}' };
      expectProblem(await api.admin.post('/proxies/sync', { registry_url: url }), 502, 'REGISTRY_UNAVAILABLE');
      expectProblem(await api.admin.post('/proxies/sync', { registry_url: `http://127.0.0.1:${await closedPort()}/` }), 502, 'REGISTRY_UNAVAILABLE');
      expectProblem(await api.admin.post('/proxies/sync', {}), 400, 'REGISTRY_NOT_CONFIGURED');
      expectProblem(await api.anonymous.post('/proxies/sync', { registry_url: url }), 401, 'UNAUTHORIZED');
      // It needs proxies:write somewhere: members below project admin, and nobodies, may not make the server fetch.
      const project = unique('regp');
      expect((await api.admin.post('/projects', { slug: project, display_name: project })).status).to.equal(201);
      for (const role of [null, 'viewer', 'operator']) {
        const user = await api.createUser();
        if (role) expect((await api.admin.put(`/projects/${project}/members/${user.id}`, { role })).status).to.equal(201);
        expectProblem(await user.client.post('/proxies/sync', { registry_url: url }), 403, 'FORBIDDEN');
      }
      const owner = await api.createUser();
      expect((await api.admin.put(`/projects/${project}/members/${owner.id}`, { role: 'admin' })).status).to.equal(201);
      answer = { status: 200, body: JSON.stringify([{ name: unique('theirs'), project: 'default', domain: 'theirs.opl.test', upstream_host: '127.0.0.1', upstream_port: a.port }]) };
      const theirs = await owner.client.post('/proxies/sync', { registry_url: url });
      expect(theirs.status, theirs.text).to.equal(200);
      // Entries in projects they cannot write are skipped, not created.
      expect(theirs.body).to.deep.include({ synced_count: 0, skipped_count: 1 });
      expect(theirs.body.skipped[0].code).to.equal('PROJECT_NOT_FOUND');
      expectProblem(await api.admin.post('/proxies/sync', { registry_url: 'file:///etc/passwd' }), 400, 'VALIDATION_FAILED');
    } finally {
      registry.closeAllConnections();
      registry.close();
    }
  });
});
