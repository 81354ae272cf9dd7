// The whole app, wired by bin/app.ts: a command's change reaches a Socket.IO subscriber,
// shows in /audit with its actor, folds in /streams, and counts in /metrics.
import { expect } from 'chai';
import { io, type Socket } from 'socket.io-client';
import { startApi, unique, type TestApi } from '../support/apiClient.ts';

describe('the wired app (live, audit, streams, metrics)', () => {
  let api: TestApi;
  const sockets: Socket[] = [];
  before(async () => {
    api = await startApi();
  });
  after(async () => {
    sockets.forEach((s) => s.close());
    await api.close();
  });

  const connect = (token: string): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const s = io(`${api.url}/live`, { auth: { token }, transports: ['websocket'], reconnection: false });
      sockets.push(s);
      s.once('connect', () => resolve(s));
      s.once('connect_error', (err) => reject(err));
    });

  it('pushes a committed project change to a subscribed client', async () => {
    const socket = await connect(api.adminToken);
    const ack = await socket.emitWithAck('subscribe', 'projects');
    expect(ack).to.deep.equal({ ok: true });
    const slug = unique('live');
    const change = new Promise<{ topic: string; id: string; kind: string; position: string }>((resolve) => {
      socket.on('change', (c) => { if (c.id === slug) resolve(c); });
    });
    const r = await api.admin.post('/projects', { slug, display_name: 'Live' });
    expect(r.status, r.text).to.equal(201);
    const got = await change;
    expect(got).to.include({ topic: 'projects', id: slug, kind: 'ProjectCreated' });
    expect(got.position).to.match(/^\d+\/\d+$/);
  });

  it('refuses a socket without a valid token', async () => {
    try {
      await connect('not-a-token');
      expect.fail('connected without a valid token');
    } catch (err) {
      expect((err as Error).message).to.equal('unauthorized');
    }
  });

  it('lists the change in /audit with who made it, and folds its stream', async () => {
    const slug = unique('audited');
    const created = await api.admin.post('/projects', { slug, display_name: 'Audited' });
    expect(created.status, created.text).to.equal(201);
    const audit = await api.admin.get(`/audit?stream=project-${slug}`);
    expect(audit.status, audit.text).to.equal(200);
    const first = audit.body.items.at(-1);
    expect(first).to.include({ stream: `project-${slug}`, type: 'ProjectCreated' });
    expect(first.actor).to.include({ username: 'admin' });
    const stream = await api.admin.get(`/streams/project-${slug}`);
    expect(stream.status, stream.text).to.equal(200);
    expect(stream.body.state).to.include({ status: 'active', slug });
  });

  it('exposes request counts by route pattern on /metrics', async () => {
    const r = await fetch(`${api.url}/metrics`);
    expect(r.status).to.equal(200);
    const text = await r.text();
    expect(text).to.match(/opsledger_http_requests_total\{[^}]*route="\/api\/v1\/projects"[^}]*\} \d+/);
    expect(text).to.include('opsledger_event_append_duration_seconds_count');
  });

  describe('workers', () => {
    it('starts the workers a module registers once the API listens, shows them in /health/detailed, and stops them on shutdown', async () => {
      const calls: string[] = [];
      let beats = 0;
      const own = await startApi({
        server: {
          extraRoutes: [{
            name: 'test-worker',
            install(ctx) {
              void ctx.workers.register({
                name: 'heartbeat',
                start: () => { calls.push('start'); },
                stop: async () => { calls.push('stop'); },
                details: () => ({ beats: ++beats }),
              });
            },
          }],
        },
      });
      try {
        expect(calls).to.deep.equal(['start']);
        const r = await own.anonymous.get('//health/detailed');
        expect(r.status, r.text).to.equal(200);
        const worker = (r.body.workers as Array<Record<string, unknown>>).find((w) => w['name'] === 'heartbeat');
        expect(worker).to.include({ name: 'heartbeat', state: 'running', error: null });
        expect(worker!['beats']).to.be.a('number').and.greaterThan(0);
      } finally {
        await own.close();
      }
      expect(calls).to.deep.equal(['start', 'stop']);
    });
  });
});
