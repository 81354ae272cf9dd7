// Monitoring over real HTTP against real monitored nodes on loopback: the poller's http
// and tcp checks (healthy, failing, slow past the timeout, bad JSON), pushed snapshots,
// history, uptime from rollups, groups with their quorum, import, and bad input.
import { expect } from 'chai';
import { sql } from 'kysely';
import { expectProblem, startApi, unique, type TestApi } from '../support/apiClient.ts';
import { badJsonNode, closedPort, failingNode, healthyNode, httpNode, slowNode, tcpNode, type NodeServer } from '../support/nodeServers.ts';
import { waitFor } from '../support/waitFor.ts';

const MINUTE = 60_000;

describe('monitoring API', function () {
  this.timeout(60_000);
  let api: TestApi;
  const servers: NodeServer[] = [];

  const eventCount = async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from events`.execute(api.running.kernel.database.db);
    return rows[0]!.n;
  };
  const register = async (body: Record<string, unknown>) => {
    const r = await api.admin.post('/nodes', { address: '127.0.0.1', ...body });
    expect(r.status, r.text).to.equal(201);
    return r.body as { id: string; status: string; name: string };
  };
  const statusOf = async (id: string) => (await api.admin.get(`/nodes/${id}`)).body;
  const push = (id: string, body: Record<string, unknown>) => api.admin.post(`/nodes/${id}/snapshots`, body);

  before(async () => {
    // Checks every second: the poller's own schedule drives these tests.
    api = await startApi({ env: { POLL_INTERVAL_SECONDS: '1' } });
  });
  after(async () => {
    await api?.close();
    await Promise.all(servers.map((s) => s.close()));
  });

  it('polls http and tcp nodes: healthy, failing, slow past the timeout, bad JSON, open and closed ports', async () => {
    const [healthy, failing, slow, bad, tcp] = await Promise.all([
      healthyNode({ version: '1.4.2', metrics: { wraps: 3, unwraps: 1.5 } }), failingNode(503), slowNode(3000), badJsonNode(), tcpNode(),
    ]);
    servers.push(healthy, failing, slow, bad, tcp);
    const nodes = {
      healthy: await register({ name: unique('healthy'), check: { type: 'http', url: healthy.url } }),
      failing: await register({ name: unique('failing'), check: { type: 'http', url: failing.url } }),
      slow: await register({ name: unique('slow'), check: { type: 'http', url: slow.url, timeout_ms: 300 } }),
      bad: await register({ name: unique('badjson'), check: { type: 'http', url: bad.url } }),
      tcpUp: await register({ name: unique('tcp-up'), check: { type: 'tcp', port: tcp.port } }),
      tcpDown: await register({ name: unique('tcp-down'), check: { type: 'tcp', port: await closedPort() } }),
    };
    expect(nodes.healthy.status).to.equal('unknown');
    const expected = { healthy: 'up', failing: 'down', slow: 'down', bad: 'up', tcpUp: 'up', tcpDown: 'down' } as const;
    for (const [key, status] of Object.entries(expected)) {
      await waitFor(async () => (await statusOf(nodes[key as keyof typeof nodes].id)).status === status, `${key} to be ${status}`);
    }
    const h = await statusOf(nodes.healthy.id);
    expect(h).to.include({ version: '1.4.2', last_error: null });
    expect(h.latency_ms).to.be.a('number').and.at.least(0);
    expect(h.uptime['24h']).to.equal(100);
    expect((await statusOf(nodes.failing.id)).last_error).to.match(/HTTP 503/);
    expect((await statusOf(nodes.slow.id)).last_error).to.match(/timed out after 300 ms/);
    expect((await statusOf(nodes.tcpDown.id)).last_error).to.match(/connection refused/);
    const badHistory = (await api.admin.get(`/nodes/${nodes.bad.id}/history?limit=1`)).body.items[0];
    expect(badHistory).to.include({ status: 'up', source: 'poll', metrics: null });

    // The health body's numbers become metrics with statistics.
    await waitFor(async () => (await api.admin.get(`/statistics/metrics?metric=wraps&node_id=${nodes.healthy.id}&bucket=5m`)).body.items.length > 0, 'wraps statistics');
    const stats = (await api.admin.get(`/statistics/metrics?metric=wraps&node_id=${nodes.healthy.id}&bucket=5m`)).body;
    expect(stats.items[0]).to.include({ min: 3, max: 3, avg: 3 });

    const status = (await api.admin.get('/nodes/status?limit=500')).body;
    const byId = new Map(status.items.map((n: { id: string; status: string }) => [n.id, n.status]));
    for (const [key, s] of Object.entries(expected)) expect(byId.get(nodes[key as keyof typeof nodes].id)).to.equal(s);
    const summary = (await api.admin.get('/nodes/status/summary')).body;
    expect(summary.up).to.be.at.least(3);
    expect(summary.down).to.be.at.least(3);
    expect(summary.total).to.equal(summary.up + summary.down + summary.pending + summary.unknown);
    const downOnly = (await api.admin.get('/nodes?status=down&limit=500')).body.items.map((n: { id: string }) => n.id);
    expect(downOnly).to.include.members([nodes.failing.id, nodes.slow.id, nodes.tcpDown.id]).and.not.include(nodes.healthy.id);
  });

  it('shows a node as pending while it fails within its retries, then down; and up again at once', async () => {
    let failing = true;
    const server = await httpNode((_req, res) => {
      res.statusCode = failing ? 500 : 200;
      res.end('{}');
    });
    servers.push(server);
    const node = await register({ name: unique('flaky'), check: { type: 'http', url: server.url, retries: 2 } });
    await waitFor(async () => (await statusOf(node.id)).status === 'pending', 'pending');
    await waitFor(async () => (await statusOf(node.id)).status === 'down', 'down after the retries');
    const downs = (await api.admin.get(`/nodes/${node.id}/history`)).body.items.filter((s: { status: string }) => s.status === 'down');
    expect(downs.length).to.be.at.least(3);
    failing = false;
    await waitFor(async () => (await statusOf(node.id)).status === 'up', 'up again');
  });

  it('records pushed snapshots with a snapshots:write token; history is newest first, bounded and paged by cursor', async () => {
    const node = await register({ name: unique('pusher'), check: { type: 'push', interval_s: 3600 } });
    const created = await api.admin.post('/auth/tokens', { name: 'node agent', scopes: ['snapshots:write'], project: 'default' });
    expect(created.status, created.text).to.equal(201);
    const agent = api.as(created.body.token);
    const t0 = Math.floor(Date.now() / MINUTE) * MINUTE - 10 * MINUTE;
    for (let i = 0; i < 5; i++) {
      const r = await agent.post(`/nodes/${node.id}/snapshots`, {
        status: 'up', latency_ms: 10 + i, version: `2.${i}`, metrics: { wraps: i }, observed_at: new Date(t0 + i * MINUTE).toISOString(),
      });
      expect(r.status, r.text).to.equal(202);
      expect(r.headers.get('x-event-position')).to.match(/^\d+\/\d+$/);
      expect(r.body).to.include({ node_id: node.id, status: 'up' });
    }
    // The agent may push but not read.
    expectProblem(await agent.get(`/nodes/${node.id}`), 404, 'NODE_NOT_FOUND');

    await waitFor(async () => (await api.admin.get(`/nodes/${node.id}/history`)).body.items.length === 5, 'five snapshots in the history');
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { items: { version: string }[]; next_cursor: string | null } } =
        await api.admin.get(`/nodes/${node.id}/history?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.body.items.length).to.be.at.most(2);
      seen.push(...page.body.items.map((s) => s.version));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen).to.deep.equal(['2.4', '2.3', '2.2', '2.1', '2.0']);
    const bounded = await api.admin.get(`/nodes/${node.id}/history?from=${new Date(t0 + MINUTE).toISOString()}&to=${new Date(t0 + 3 * MINUTE).toISOString()}`);
    expect(bounded.body.items.map((s: { version: string }) => s.version)).to.deep.equal(['2.2', '2.1']);
    expectProblem(await api.admin.get(`/nodes/${node.id}/history?cursor=bm90LWEtY3Vyc29y`), 400, 'VALIDATION_FAILED');

    const stats = (await api.admin.get(`/statistics/metrics?metric=wraps&node_id=${node.id}&bucket=1h&window=24h`)).body;
    const total = stats.items.reduce((s: number, b: { sum: number }) => s + b.sum, 0);
    const count = stats.items.reduce((s: number, b: { count: number }) => s + b.count, 0);
    expect([total, count]).to.deep.equal([10, 5]);
    expect(Math.min(...stats.items.map((b: { min: number }) => b.min))).to.equal(0);
    expect(Math.max(...stats.items.map((b: { max: number }) => b.max))).to.equal(4);
    const details = await statusOf(node.id);
    expect(details).to.include({ version: '2.4', latency_ms: 14 });
  });

  it('computes uptime from rollups, with the monitor’s own gaps as unknown (never up), and a rebuild gives the same', async () => {
    const node = await register({ name: unique('uptime'), check: { type: 'push', interval_s: 60 } });
    const t0 = Math.floor(Date.now() / MINUTE) * MINUTE - 3 * 60 * MINUTE;
    const at = (m: number) => new Date(t0 + m * MINUTE).toISOString();
    // Up every minute for an hour, down for half an hour, nothing for 20 minutes, then up twice.
    const plan = [
      ...Array.from({ length: 61 }, (_, m) => ({ m, status: 'up' })),
      ...Array.from({ length: 30 }, (_, i) => ({ m: 61 + i, status: 'down' })),
      { m: 110, status: 'up' }, { m: 111, status: 'up' },
    ];
    await Promise.all(plan.map((p) => push(node.id, { status: p.status, observed_at: at(p.m) }).then((r) => expect(r.status, r.text).to.equal(202))));
    await waitFor(async () => (await statusOf(node.id)).last_observed_at === at(111), 'the last snapshot applied');

    const expected = { up_ms: 64 * MINUTE, down_ms: 31 * MINUTE, pending_ms: 0, unknown_ms: 25 * MINUTE, uptime_pct: 67.368 };
    const read = async () => (await api.admin.get(`/statistics/uptime?node_id=${node.id}&from=${at(0)}&to=${at(120)}`)).body;
    expect(await read()).to.include(expected);
    expect((await api.admin.get(`/statistics/uptime?node_id=${node.id}&window=365d`)).body.uptime_pct).to.equal(67.368);
    expect((await statusOf(node.id)).uptime).to.deep.equal({ '24h': 67.368, '7d': 67.368, '30d': 67.368 });

    await api.running.kernel.runtime.replay('monitoring');
    expect(await read()).to.include(expected);
    expectProblem(await api.admin.get(`/statistics/uptime?node_id=${node.id}&window=7d&from=${at(0)}`), 400, 'VALIDATION_FAILED');
    expectProblem(await api.admin.get(`/statistics/uptime?node_id=${node.id}&window=2d`), 400, 'VALIDATION_FAILED');
  });

  it('a group is up while at least min_online of its nodes are up, with a timeline', async () => {
    const role = unique('bridge');
    const members = await Promise.all([1, 2, 3].map((i) => register({ name: unique(`orch${i}`), labels: { role }, check: { type: 'push', interval_s: 3600 } })));
    await register({ name: unique('other'), labels: { role: 'other' }, check: { type: 'push', interval_s: 3600 } });
    const g = await api.admin.post('/groups', { name: 'Bridge', min_online: 2, selector: { labels: { role } } });
    expect(g.status, g.text).to.equal(201);
    expect(g.body).to.include({ status: 'unknown', online: 0, total: 3, min_online: 2 });
    const group = () => api.admin.get(`/groups/${g.body.id}`).then((r) => r.body);

    await push(members[0]!.id, { status: 'up' });
    await waitFor(async () => (await group()).status === 'down', 'down with one of three up');
    await push(members[1]!.id, { status: 'up' });
    await waitFor(async () => (await group()).status === 'up', 'up with two of three');
    expect(await group()).to.include({ online: 2, total: 3 });
    await push(members[1]!.id, { status: 'down' });
    await waitFor(async () => (await group()).status === 'down', 'down again');

    const summary = (await api.admin.get('/nodes/status/summary')).body;
    expect(summary.groups).to.deep.include({ id: g.body.id, name: 'Bridge', project: 'default', online: 1, min_online: 2, status: 'down' });
    const timeline = (await api.admin.get(`/statistics/groups?group_id=${g.body.id}&bucket=5m&window=24h`)).body;
    expect(timeline.items).to.have.length(1);
    const last = timeline.items[0].buckets.at(-1);
    expect(last.up_ms + last.down_ms).to.be.greaterThan(0);
    const uptime = (await api.admin.get(`/statistics/uptime?group_id=${g.body.id}&window=24h`)).body;
    expect(uptime.up_ms).to.be.greaterThan(0);
    expect(uptime.down_ms).to.be.greaterThan(0);

    // By id instead of labels; the default quorum is MIN_ONLINE_DEFAULT.
    const byIds = await api.admin.post('/groups', { name: 'Pair', selector: { node_ids: [members[0]!.id, members[1]!.id] } });
    expect(byIds.body).to.include({ min_online: 16, total: 2, status: 'down' });
    const patched = await api.admin.patch(`/groups/${byIds.body.id}`, { min_online: 1 });
    expect(patched.body).to.include({ min_online: 1, online: 1, status: 'up' });
    expect((await api.admin.delete(`/groups/${byIds.body.id}`)).status).to.equal(204);
    expectProblem(await api.admin.get(`/groups/${byIds.body.id}`), 404, 'GROUP_NOT_FOUND');
  });

  it('imports nodes.json: upsert by name, counts, and nothing at all when an entry is bad', async () => {
    const a = unique('orch');
    const b = unique('orch');
    const first = await api.admin.post('/nodes/import', [{ name: a, ip: '10.0.0.1', pubkey: 'ssh-ed25519 AAAA' }, { name: b, ip: '10.0.0.2', pubkey: null }]);
    expect(first.status, first.text).to.equal(200);
    expect(first.body).to.include({ created: 2, updated: 0, unchanged: 0 });
    const c = unique('orch');
    const second = await api.admin.post('/nodes/import', [
      { name: a.toUpperCase(), ip: '10.0.0.1', pubkey: 'ssh-ed25519 AAAA' }, { name: b, ip: '10.0.0.20' }, { name: c, ip: 'fd00::1' },
    ]);
    expect(second.body).to.include({ created: 1, updated: 1, unchanged: 1 });
    const listed = (await api.admin.get('/nodes?limit=500')).body.items.filter((n: { name: string }) => [a, b, c].includes(n.name));
    expect(listed.map((n: { address: string }) => n.address).sort()).to.deep.equal(['10.0.0.1', '10.0.0.20', 'fd00::1']);
    expect(listed.every((n: { check: { type: string } }) => n.check.type === 'push')).to.equal(true);

    const before = await eventCount();
    const bad = await api.admin.post('/nodes/import', [
      { name: unique('ok'), ip: '10.0.0.3' }, { name: 'dup', ip: '10.0.0.4' }, { name: 'DUP', ip: '10.0.0.5' },
      { name: unique('x'), ip: '999.1.1.1' }, { name: 'bad name!', ip: 'host.example' }, { name: unique('y'), ip: '10.0.0.6', extra: 1 },
    ]);
    expectProblem(bad, 400, 'VALIDATION_FAILED');
    const paths = bad.body.errors.map((e: { path: string }) => e.path);
    expect(paths).to.include.members(['body[2].name', 'body[3].ip', 'body[4].name', 'body[4].ip', 'body[5].extra']);
    expect(bad.body.errors.find((e: { path: string }) => e.path === 'body[2].name').message).to.match(/duplicate name DUP \(also at body\[1\]\)/);
    expect(await eventCount()).to.equal(before);
    expectProblem(await api.admin.post('/nodes/import', { name: 'x' }), 400);
  });

  it('refuses bad input with problems and writes nothing', async () => {
    const node = await register({ name: unique('target'), check: { type: 'push', interval_s: 3600 } });
    const before = await eventCount();
    const missing = '00000000-0000-4000-8000-000000000000';
    expectProblem(await push(missing, { status: 'up' }), 404, 'NODE_NOT_FOUND');
    expectProblem(await api.admin.get(`/nodes/${missing}`), 404, 'NODE_NOT_FOUND');
    expectProblem(await api.admin.get('/nodes/not-a-uuid'), 400, 'VALIDATION_FAILED');
    const invalid = [
      [{ status: 'sideways' }, 'body.status'],
      [{ status: 'up', latency_ms: -1 }, 'body.latency_ms'],
      [{ status: 'up', metrics: { wraps: 'many' } }, 'body.metrics.wraps'],
      [{ status: 'up', metrics: { 'bad name': 1 } }, 'body.metrics.bad name'],
      [{ status: 'up', observed_at: 'yesterday' }, 'body.observed_at'],
      [{ status: 'up', extra: true }, 'body.extra'],
    ] as const;
    for (const [body, path] of invalid) {
      const r = await push(node.id, body);
      expectProblem(r, 400, 'VALIDATION_FAILED');
      expect(r.body.errors.map((e: { path: string }) => e.path), JSON.stringify(body)).to.include(path);
    }
    const future = await push(node.id, { status: 'up', observed_at: new Date(Date.now() + 3_600_000).toISOString() });
    expectProblem(future, 400, 'OBSERVED_IN_FUTURE');
    for (const [body, path] of [
      [{ name: '../etc', address: '127.0.0.1' }, 'body.name'],
      [{ name: unique('n'), address: 'a b' }, 'body.address'],
      [{ name: unique('n'), address: '127.0.0.1', check: { type: 'tcp' } }, 'body.check.port'],
      [{ name: unique('n'), address: '127.0.0.1', check: { type: 'http', url: 'ftp://x' } }, 'body.check.url'],
      [{ name: unique('n'), address: '127.0.0.1', check: { type: 'tcp', port: 70000 } }, 'body.check.port'],
    ] as const) {
      const r = await api.admin.post('/nodes', body);
      expectProblem(r, 400, 'VALIDATION_FAILED');
      expect(r.body.errors.map((e: { path: string }) => e.path), JSON.stringify(body)).to.include(path);
    }
    expectProblem(await api.admin.post('/nodes', { name: node.name.toUpperCase(), address: '127.0.0.1' }), 409, 'NODE_EXISTS');
    expectProblem(await api.admin.post('/nodes', { name: unique('n'), project: unique('nowhere'), address: '127.0.0.1' }), 404, 'PROJECT_NOT_FOUND');
    expectProblem(await api.admin.post('/groups', { name: 'g', project: unique('nowhere'), selector: { labels: {} } }), 404, 'PROJECT_NOT_FOUND');
    expectProblem(await api.admin.patch(`/nodes/${node.id}`, { name: 'renamed' }), 400, 'VALIDATION_FAILED');
    expect(await eventCount()).to.equal(before);
  });

  it('decommissions a node: no more snapshots (409), history kept, and registering the name again brings it back', async () => {
    const name = unique('retire');
    const node = await register({ name, check: { type: 'push', interval_s: 3600 } });
    expect((await push(node.id, { status: 'up' })).status).to.equal(202);
    await waitFor(async () => (await api.admin.get(`/nodes/${node.id}/history`)).body.items.length === 1, 'the snapshot');
    expect((await api.admin.delete(`/nodes/${node.id}`)).status).to.equal(204);
    expectProblem(await push(node.id, { status: 'up' }), 409, 'NODE_DECOMMISSIONED');
    expectProblem(await api.admin.delete(`/nodes/${node.id}`), 409, 'NODE_DECOMMISSIONED');
    expect((await api.admin.get('/nodes?limit=500')).body.items.map((n: { id: string }) => n.id)).not.to.include(node.id);
    expect((await api.admin.get('/nodes?limit=500&include_decommissioned=true')).body.items.map((n: { id: string }) => n.id)).to.include(node.id);
    expect((await statusOf(node.id)).decommissioned).to.equal(true);
    expect((await api.admin.get(`/nodes/${node.id}/history`)).body.items).to.have.length(1);
    const again = await register({ name, check: { type: 'push', interval_s: 3600 } });
    expect(again.id).to.equal(node.id);
    expect((await push(node.id, { status: 'up' })).status).to.equal(202);
  });

  it('keeps nodes of other projects out of sight (404), and needs nodes:write to change them', async () => {
    const owner = await api.createUser();
    const stranger = await api.createUser();
    const slug = unique('fleet');
    expect((await owner.client.post('/projects', { slug, display_name: 'Fleet' })).status).to.equal(201);
    const r = await owner.client.post('/nodes', { name: 'edge-1', project: slug, address: '127.0.0.1' });
    expect(r.status, r.text).to.equal(201);
    expectProblem(await stranger.client.get(`/nodes/${r.body.id}`), 404, 'NODE_NOT_FOUND');
    expectProblem(await stranger.client.post(`/nodes/${r.body.id}/snapshots`, { status: 'up' }), 404, 'NODE_NOT_FOUND');
    expect((await stranger.client.get('/nodes')).body.items.map((n: { id: string }) => n.id)).not.to.include(r.body.id);
    expectProblem(await stranger.client.post('/nodes', { name: 'edge-2', project: slug, address: '127.0.0.1' }), 404);
    expect((await owner.client.put(`/projects/${slug}/members/${stranger.id}`, { role: 'viewer' })).status).to.equal(201);
    expect((await stranger.client.get(`/nodes/${r.body.id}`)).status).to.equal(200);
    expectProblem(await stranger.client.patch(`/nodes/${r.body.id}`, { labels: { a: 'b' } }), 403, 'FORBIDDEN');
    expectProblem(await stranger.client.post(`/nodes/${r.body.id}/snapshots`, { status: 'up' }), 403, 'FORBIDDEN');
    const etag = (await owner.client.get(`/nodes/${r.body.id}`)).headers.get('etag')!;
    const changed = await owner.client.patch(`/nodes/${r.body.id}`, { labels: { zone: 'eu' } }, { headers: { 'If-Match': etag } });
    expect(changed.status, changed.text).to.equal(200);
    expect(changed.body.labels).to.deep.equal({ zone: 'eu' });
    expectProblem(await owner.client.patch(`/nodes/${r.body.id}`, { labels: {} }, { headers: { 'If-Match': etag } }), 412);
  });
});
