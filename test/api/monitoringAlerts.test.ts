// Alerts and live status over the real app: a webhook receiver on loopback gets signed
// node and group alerts once per transition, also when it failed at first and Opsledger
// restarted in between; Socket.IO subscribers see status changes as they are projected.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { io as connectClient, type Socket } from 'socket.io-client';
import { WEBHOOK_HEADERS, verifyWebhook } from '../../infra/webhook.ts';
import { freshDatabaseUrl } from '../support/databases.ts';
import { expectProblem, startApi, unique, type TestApi } from '../support/apiClient.ts';
import { waitFor } from '../support/waitFor.ts';

type Received = { delivery: string; event: string; body: Record<string, unknown>; signed: boolean; answered: number };

/** A webhook receiver that answers 500 to the first `failFirst` requests of each delivery. */
const receiver = async (secret: string, failFirst: number) => {
  const got: Received[] = [];
  const tries = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    let text = '';
    req.on('data', (d) => { text += String(d); });
    req.on('end', () => {
      const delivery = String(req.headers[WEBHOOK_HEADERS.delivery]);
      const n = (tries.get(delivery) ?? 0) + 1;
      tries.set(delivery, n);
      const answered = n <= failFirst ? 500 : 204;
      const signed = verifyWebhook(secret, Number(req.headers[WEBHOOK_HEADERS.timestamp]), text, String(req.headers[WEBHOOK_HEADERS.signature]));
      got.push({ delivery, event: String(req.headers[WEBHOOK_HEADERS.event]), body: JSON.parse(text), signed, answered });
      res.statusCode = answered;
      res.end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/opsledger`,
    got,
    delivered: () => got.filter((g) => g.answered < 300),
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
};

describe('monitoring alerts and live status', function () {
  this.timeout(90_000);
  const secret = 'a-long-enough-webhook-secret';
  let databaseUrl: string;
  // One instance after another on the same database: the same keys (the vault's and the JWTs').
  const keys = { SECRET_KEY: randomBytes(32).toString('hex'), SECRETS_KEY: randomBytes(32).toString('hex') };
  let api: TestApi | null = null;
  let hook: Awaited<ReturnType<typeof receiver>>;
  const sockets: Socket[] = [];

  before(async () => {
    databaseUrl = await freshDatabaseUrl();
    hook = await receiver(secret, 1);
  });
  after(async () => {
    for (const s of sockets) s.close();
    await api?.close();
    await hook?.close();
  });

  const start = async () => {
    api = await startApi({ flavour: 'postgres', env: { DATABASE_URL: databaseUrl, POLL_INTERVAL_SECONDS: '1', ...keys } });
    return api;
  };

  it('signs node and group alerts, retries a failing receiver, and delivers each transition once across a restart', async () => {
    let a = await start();
    const channel = await a.admin.post('/alert-channels', { url: hook.url, events: ['node.down', 'node.up', 'group.down', 'group.up'], secret });
    expect(channel.status, channel.text).to.equal(201);
    expect(channel.body).to.include({ secret, url: hook.url, project: 'default' });
    const listed = (await a.admin.get('/alert-channels')).body.items;
    expect(listed).to.have.length(1);
    expect(listed[0]).not.to.have.property('secret');
    expect(JSON.stringify((await a.admin.get(`/streams/alert-channel-${channel.body.id}`)).body)).not.to.include(secret);

    const node = (await a.admin.post('/nodes', { name: unique('edge'), address: '127.0.0.1', labels: { tier: 'edge' }, check: { type: 'push', interval_s: 3600 } })).body;
    const group = (await a.admin.post('/groups', { name: 'Edge', min_online: 1, selector: { labels: { tier: 'edge' } } })).body;
    const push = (status: string) => a.admin.post(`/nodes/${node.id}/snapshots`, { status }).then((r) => expect(r.status, r.text).to.equal(202));

    await push('up'); // unknown → up: nothing to tell
    await push('down');
    // The first attempt of each is refused with a 500, then retried.
    await waitFor(() => hook.delivered().length === 2, 'node.down and group.down delivered', 20_000);
    expect(hook.delivered().map((d) => d.event).sort()).to.deep.equal(['group.down', 'node.down']);
    const down = hook.delivered().find((d) => d.event === 'node.down')!;
    expect(down.signed).to.equal(true);
    expect(down.body).to.deep.include({ id: down.delivery, event: 'node.down', project: 'default', status: { from: 'up', to: 'down' } });
    expect(down.body.node).to.deep.include({ id: node.id, name: node.name });
    expect(hook.got.filter((g) => g.delivery === down.delivery).map((g) => g.answered)).to.deep.equal([500, 204]);

    // Restart: what was delivered is not sent again; what happens next is.
    await a.close();
    api = null;
    a = await start();
    await a.admin.post(`/nodes/${node.id}/snapshots`, { status: 'up' });
    await waitFor(() => hook.delivered().length === 4, 'node.up and group.up delivered after the restart', 20_000);
    const counts = new Map<string, number>();
    for (const d of hook.delivered()) counts.set(d.delivery, (counts.get(d.delivery) ?? 0) + 1);
    expect([...counts.values()].every((n) => n === 1), JSON.stringify([...counts])).to.equal(true);
    expect(hook.delivered().map((d) => d.event).sort()).to.deep.equal(['group.down', 'group.up', 'node.down', 'node.up']);
    expect(hook.delivered().every((d) => d.signed)).to.equal(true);
    const up = hook.delivered().find((d) => d.event === 'group.up')!;
    expect(up.body.group).to.deep.include({ id: group.id, name: 'Edge', min_online: 1, online: 1 });
    const view = (await a.admin.get('/alert-channels')).body.items[0];
    expect(view.deliveries).to.deep.equal({ pending: 0, delivered: 4, failed: 0 });

    expectProblem(await a.admin.post('/alert-channels', { url: 'http://user:pw@127.0.0.1/x', events: ['node.down'] }), 400, 'VALIDATION_FAILED');
    expectProblem(await a.admin.post('/alert-channels', { url: hook.url, events: ['node.sideways'] }), 400, 'VALIDATION_FAILED');
    expect((await a.admin.delete(`/alert-channels/${channel.body.id}`)).status).to.equal(204);
    expectProblem(await a.admin.delete(`/alert-channels/${channel.body.id}`), 404, 'ALERT_CHANNEL_NOT_FOUND');
    const { rows } = await a.running.kernel.database.db.selectFrom('vault_secrets').select('id')
      .where('owner', '=', `alert-channel:${channel.body.id}`).execute().then((r) => ({ rows: r }));
    expect(rows).to.have.length(0);
  });

  it('pushes node and group status changes to nodes, node:{id} and groups subscribers', async () => {
    const a = api ?? (await start());
    const node = (await a.admin.post('/nodes', { name: unique('live'), address: '127.0.0.1', labels: { tier: 'live' }, check: { type: 'push', interval_s: 3600 } })).body;
    const group = (await a.admin.post('/groups', { name: 'Live', min_online: 1, selector: { labels: { tier: 'live' } } })).body;
    const socket = connectClient(`${a.url}/live`, { auth: { token: a.adminToken }, transports: ['websocket'], reconnection: false, forceNew: true });
    sockets.push(socket);
    const got: { topic: string; kind: string; id: string; data: { status?: string } }[] = [];
    socket.on('change', (c) => got.push(c));
    await new Promise<void>((resolve, reject) => { socket.once('connect', () => resolve()); socket.once('connect_error', reject); });
    for (const topic of ['nodes', `node:${node.id}`, 'groups']) {
      expect(await socket.timeout(5000).emitWithAck('subscribe', topic), topic).to.deep.equal({ ok: true });
    }
    await a.admin.post(`/nodes/${node.id}/snapshots`, { status: 'up' });
    await waitFor(() => got.some((c) => c.topic === 'groups' && c.id === group.id && c.data.status === 'up'), 'the group going up');
    const nodeChanges = got.filter((c) => c.kind === 'NodeStatusChanged' && c.id === node.id);
    expect(nodeChanges.length).to.be.at.least(1);
    expect(nodeChanges.every((c) => c.topic === 'nodes' && c.data.status === 'up')).to.equal(true);
  });
});
