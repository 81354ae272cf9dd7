// SPEC §10 live updates through real Socket.IO clients over 127.0.0.1: authentication,
// subscriptions, per-principal filtering, revocation, and two instances sharing a real
// Redis. Absence is proven by a sentinel change delivered after the one that must not
// arrive (delivery is in order), never by sleeping.
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { Subject } from 'rxjs';
import { io as connectClient, type ManagerOptions, type Socket as ClientSocket, type SocketOptions } from 'socket.io-client';
import { signSession, verifySession } from '../../infra/auth/jwt.ts';
import type { Permission, ProjectRole } from '../../infra/auth/permissions.ts';
import type { Principal } from '../../infra/auth/principal.ts';
import { attachLiveGateway, type LiveAck, type LiveChange, type LiveChangePayload, type LiveGateway, type LiveGatewayOptions } from '../../read-api/liveGateway.ts';
import { canReadLiveChange } from '../../read-api/livePermissions.ts';
import { parseTopic, roomsOf } from '../../read-api/liveTopics.ts';
import { freePort } from '../support/postgresServer.ts';
import { startRedisServer, type RedisServer } from '../support/redisServer.ts';
import { waitFor } from '../support/waitFor.ts';

// ---- a user directory standing in for the real one --------------------------------------
const SECRET = randomBytes(32);
type User = { principal: Principal; sessionVersion: number; active: boolean; outage: boolean };
const users = new Map<string, User>();
let lookups = 0;

const addUser = (o: { role?: 'admin' | 'user'; memberships?: Record<string, ProjectRole>; scopes?: Permission[] } = {}) => {
  const userId = randomUUID();
  const principal: Principal = {
    userId, username: `u-${userId.slice(0, 8)}`, role: o.role ?? 'user', memberships: o.memberships ?? {},
    tokenId: null, scopes: o.scopes ? new Set(o.scopes) : null, projectPin: null,
  };
  const user: User = { principal, sessionVersion: 1, active: true, outage: false };
  users.set(userId, user);
  return { user, token: signSession({ userId, sessionVersion: 1 }, { secret: SECRET, expiresInSeconds: 600 }) };
};

/** What the composition root's resolver does, in miniature: verify the JWT, then check the user is still good. */
const resolvePrincipal = async (token: string): Promise<Principal | null> => {
  lookups += 1;
  const claims = verifySession(token, { secret: SECRET }); // throws AppError UNAUTHORIZED / TOKEN_EXPIRED
  const user = users.get(claims.sub);
  if (user?.outage) throw new Error('database unavailable');
  if (!user || !user.active || user.sessionVersion !== claims.sv) return null;
  return user.principal;
};

// ---- instances and clients -----------------------------------------------------------------
type Instance = { url: string; changes: Subject<LiveChange>; gateway: LiveGateway; server: HttpServer };
const instances: Instance[] = [];
const clients: ClientSocket[] = [];

const startInstance = async (o: Partial<LiveGatewayOptions> = {}): Promise<Instance> => {
  const server = createServer((_req, res) => {
    res.statusCode = 404;
    res.end();
  });
  const changes = new Subject<LiveChange>();
  const gateway = await attachLiveGateway({ httpServer: server, changes$: changes, resolvePrincipal, ...o });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const instance = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, changes, gateway, server };
  instances.push(instance);
  return instance;
};

const client = (instance: Instance, token?: string, o: Partial<ManagerOptions & SocketOptions> = {}): ClientSocket => {
  const socket = connectClient(`${instance.url}/live`, {
    auth: token === undefined ? {} : { token }, transports: ['websocket'], reconnection: false, forceNew: true, ...o,
  });
  clients.push(socket);
  return socket;
};

const connected = (socket: ClientSocket): Promise<void> =>
  new Promise((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });

const refused = (socket: ClientSocket): Promise<Error & { data?: { code?: string } }> =>
  new Promise((resolve, reject) => {
    socket.once('connect', () => reject(new Error('connected, but should have been refused')));
    socket.once('connect_error', resolve);
  });

const subscribe = (socket: ClientSocket, topic: unknown): Promise<LiveAck> => socket.timeout(5000).emitWithAck('subscribe', topic);
const unsubscribe = (socket: ClientSocket, topic: unknown): Promise<LiveAck> => socket.timeout(5000).emitWithAck('unsubscribe', topic);

/** A connected client subscribed to the topics, recording what it receives. */
const listener = async (instance: Instance, token: string, topics: string[]) => {
  const socket = client(instance, token);
  const got: LiveChangePayload[] = [];
  socket.on('change', (p: LiveChangePayload) => got.push(p));
  await connected(socket);
  for (const t of topics) expect(await subscribe(socket, t), t).to.deep.equal({ ok: true });
  const until = (kind: string) => waitFor(() => got.some((p) => p.kind === kind), `a ${kind} change`);
  return { socket, got, until, kinds: () => got.map((p) => p.kind) };
};

let prepare = 1000n;
const change = (o: Partial<LiveChange> = {}): LiveChange => ({
  topic: 'nodes', kind: 'NodeUpdated', id: randomUUID(), data: { status: 'up' }, project: 'alpha',
  position: { commit: 7n, prepare: ++prepare }, at: new Date().toISOString(), ...o,
});

const payloadOf = (c: LiveChange): LiveChangePayload => ({
  topic: c.topic, kind: c.kind, id: c.id, data: c.data ?? null, position: `${c.position.commit}/${c.position.prepare}`, at: c.at,
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const i of instances.splice(0)) {
    await i.gateway.close();
    await new Promise((r) => i.server.close(r));
  }
});

describe('live topics', () => {
  it('accepts the topics of SPEC §10 (and the identity ones), normalising ids', () => {
    const id = randomUUID();
    for (const t of ['nodes', 'groups', 'jobs', 'proxies', 'stacks', 'users', 'projects', 'streams',
      `node:${id}`, `group:${id}`, `job:${id}`, 'proxy:web-1', 'stack:shop', `workflow-run:${id}`, `user:${id}`, 'project:default']) {
      expect(parseTopic(t), t).to.deep.include({ ok: true, topic: t });
    }
    expect(parseTopic(`node:${id.toUpperCase()}`)).to.deep.include({ ok: true, topic: `node:${id}` });
  });

  it('refuses unknown and malformed topics', () => {
    for (const t of ['', 'bogus', 'node', 'node:', 'node:42', 'workflow-runs', `nodes:${randomUUID()}`, 'proxy:Web_1', 'proxy:-x',
      `stack:${'a'.repeat(64)}`, 'stream:user-1', '__proto__', 'constructor', 'x'.repeat(200), 42, null, { topic: 'nodes' }]) {
      const r = parseTopic(t);
      expect(r.ok, String(t)).to.equal(false);
    }
  });

  it('routes a change to its collection and its item room', () => {
    expect(roomsOf('nodes', 'ABC')).to.deep.equal(['nodes', 'node:abc']);
    expect(roomsOf('proxies', 'web')).to.deep.equal(['proxies', 'proxy:web']);
    expect(roomsOf('workflow-runs', 'r1')).to.deep.equal(['workflow-runs', 'workflow-run:r1']);
    expect(roomsOf('streams', 'user-1')).to.deep.equal(['streams']);
  });
});

describe('live gateway (SPEC §10)', () => {
  describe('handshake', () => {
    it('fails the connection with "unauthorized" without a token, with a forged, expired or unknown user\'s token', async () => {
      const instance = await startInstance();
      // Default transports (polling, then upgrade) for the first one: what a browser does.
      const none = client(instance, undefined, { transports: ['polling', 'websocket'] });
      expect((await refused(none)).message).to.equal('unauthorized');
      const forged = signSession({ userId: addUser().user.principal.userId, sessionVersion: 1 }, { secret: randomBytes(32), expiresInSeconds: 600 });
      expect((await refused(client(instance, forged))).message).to.equal('unauthorized');
      const expired = signSession({ userId: addUser().user.principal.userId, sessionVersion: 1 }, { secret: SECRET, expiresInSeconds: 60, now: Date.now() - 3_600_000 });
      const err = await refused(client(instance, expired));
      expect(err.message).to.equal('unauthorized');
      expect(err.data).to.deep.equal({ code: 'TOKEN_EXPIRED' });
      const stranger = signSession({ userId: randomUUID(), sessionVersion: 1 }, { secret: SECRET, expiresInSeconds: 600 });
      expect((await refused(client(instance, stranger))).message).to.equal('unauthorized');
      const gone = addUser();
      gone.user.active = false;
      expect((await refused(client(instance, gone.token))).message).to.equal('unauthorized');
      // The default namespace serves nothing.
      const root = connectClient(instance.url, { auth: { token: addUser().token }, transports: ['websocket'], reconnection: false, forceNew: true });
      clients.push(root);
      expect((await refused(root)).message).to.match(/unknown namespace/);
    });

    it('takes the token from ?token= as well, and says "unavailable" when it cannot check it', async () => {
      const instance = await startInstance();
      const { token } = addUser();
      const socket = client(instance, undefined, { query: { token } });
      await connected(socket);
      expect(await subscribe(socket, 'nodes')).to.deep.equal({ ok: true });
      const down = addUser();
      down.user.outage = true;
      expect((await refused(client(instance, down.token))).message).to.equal('unavailable');
    });
  });

  describe('subscriptions', () => {
    it('acks valid topics with ok, and unknown or malformed ones with an error', async () => {
      const instance = await startInstance({ maxSubscriptions: 3 });
      const socket = client(instance, addUser().token);
      await connected(socket);
      expect(await subscribe(socket, 'nodes')).to.deep.equal({ ok: true });
      expect(await subscribe(socket, `job:${randomUUID()}`)).to.deep.equal({ ok: true });
      expect(await subscribe(socket, 'nodes')).to.deep.equal({ ok: true }); // again: still one room
      expect(await subscribe(socket, 'bogus')).to.deep.equal({ ok: false, error: 'unknown topic: bogus' });
      expect(await subscribe(socket, 'node:42')).to.deep.equal({ ok: false, error: 'malformed node id: expected a uuid' });
      expect(await subscribe(socket, 'proxy:Not A Slug')).to.deep.equal({ ok: false, error: 'malformed proxy id: expected a slug' });
      expect(await subscribe(socket, 7)).to.deep.equal({ ok: false, error: 'topic must be a non-empty string' });
      expect(await subscribe(socket, 'stacks')).to.deep.equal({ ok: true });
      expect(await subscribe(socket, 'proxies')).to.deep.equal({ ok: false, error: 'too many subscriptions (at most 3)' });
      expect(await unsubscribe(socket, 'stacks')).to.deep.equal({ ok: true });
      expect(await unsubscribe(socket, 'node:42')).to.deep.include({ ok: false });
      expect(await subscribe(socket, 'proxies')).to.deep.equal({ ok: true });
      // Without an ack callback nothing breaks.
      socket.emit('subscribe', 'groups');
      expect(await subscribe(socket, 'users')).to.deep.equal({ ok: false, error: 'too many subscriptions (at most 3)' });
    });
  });

  describe('delivery', () => {
    it('delivers a change with the exact payload to collection and item subscribers, once each', async () => {
      const instance = await startInstance();
      const { token } = addUser({ memberships: { alpha: 'viewer' } });
      const nodeId = randomUUID();
      const all = await listener(instance, token, ['nodes']);
      const item = await listener(instance, token, [`node:${nodeId}`]);
      const both = await listener(instance, token, ['nodes', `node:${nodeId}`]);
      const c = change({ id: nodeId, kind: 'NodeRegistered', data: { name: 'n1', labels: { env: 'prod' } } });
      instance.changes.next(c);
      const done = change({ id: nodeId, kind: 'Sentinel' });
      instance.changes.next(done);
      for (const l of [all, item, both]) {
        await l.until('Sentinel');
        expect(l.got).to.deep.equal([payloadOf(c), payloadOf(done)]);
      }
      expect(all.got[0]).to.deep.equal({
        topic: 'nodes', kind: 'NodeRegistered', id: nodeId, data: { name: 'n1', labels: { env: 'prod' } },
        position: `7/${c.position.prepare}`, at: c.at,
      });
    });

    it('does not deliver to a socket not subscribed to the topic, to another item\'s room, or after unsubscribe', async () => {
      const instance = await startInstance();
      const { token } = addUser({ memberships: { alpha: 'admin' } });
      const mine = randomUUID();
      const jobsOnly = await listener(instance, token, ['jobs']);
      const otherNode = await listener(instance, token, [`node:${mine}`]);
      const leaving = await listener(instance, token, ['nodes', 'jobs']);
      expect(await unsubscribe(leaving.socket, 'nodes')).to.deep.equal({ ok: true });

      instance.changes.next(change({ kind: 'NodeChanged' })); // another node
      instance.changes.next(change({ topic: 'jobs', kind: 'Sentinel' }));
      instance.changes.next(change({ id: mine, kind: 'Sentinel' }));
      await jobsOnly.until('Sentinel');
      await otherNode.until('Sentinel');
      await leaving.until('Sentinel');
      expect(jobsOnly.kinds()).to.deep.equal(['Sentinel']);
      expect(otherNode.kinds()).to.deep.equal(['Sentinel']);
      expect(leaving.kinds()).to.deep.equal(['Sentinel']);
    });

    it('delivers only to principals that may read the change (project roles, scopes, global admin)', async () => {
      const instance = await startInstance();
      const alice = await listener(instance, addUser({ memberships: { alpha: 'viewer' } }).token, ['nodes', 'users', 'streams']);
      const bob = await listener(instance, addUser({ memberships: { beta: 'operator', alpha: 'viewer' } }).token, ['nodes']);
      const scoped = await listener(instance, addUser({ memberships: { beta: 'admin', alpha: 'admin' }, scopes: ['jobs:read'] }).token, ['nodes', 'jobs']);
      const admin = await listener(instance, addUser({ role: 'admin' }).token, ['nodes', 'users', 'streams']);

      instance.changes.next(change({ kind: 'InBeta', project: 'beta' }));
      instance.changes.next(change({ kind: 'NoProject', project: null }));
      instance.changes.next(change({ topic: 'users', kind: 'SomeoneElse' }));
      instance.changes.next(change({ topic: 'streams', kind: 'Stream', id: 'user-1', project: undefined }));
      instance.changes.next(change({ kind: 'Sentinel', project: 'alpha' }));
      instance.changes.next(change({ topic: 'jobs', kind: 'Sentinel', project: 'alpha' }));
      for (const l of [alice, bob, admin, scoped]) await l.until('Sentinel');
      expect(alice.kinds()).to.deep.equal(['Sentinel']);
      expect(bob.kinds()).to.deep.equal(['InBeta', 'Sentinel']);
      expect(scoped.kinds()).to.deep.equal(['Sentinel']); // the jobs one only: its token may not read nodes
      expect(scoped.got[0]!.topic).to.equal('jobs');
      expect(admin.kinds()).to.deep.equal(['InBeta', 'NoProject', 'SomeoneElse', 'Stream', 'Sentinel']);
    });

    it('asks the injected canRead, which may be async, with the principal and the change', async () => {
      const asked: Array<[string, string]> = [];
      const instance = await startInstance({
        canRead: async (principal, c) => {
          asked.push([principal.username, c.kind]);
          await new Promise((r) => setTimeout(r, 1));
          return c.kind !== 'Secret';
        },
      });
      const { user, token } = addUser();
      const l = await listener(instance, token, ['proxies']);
      instance.changes.next(change({ topic: 'proxies', id: 'web', kind: 'Secret' }));
      instance.changes.next(change({ topic: 'proxies', id: 'web', kind: 'Sentinel' }));
      await l.until('Sentinel');
      expect(l.kinds()).to.deep.equal(['Sentinel']);
      expect(asked).to.deep.equal([[user.principal.username, 'Secret'], [user.principal.username, 'Sentinel']]);
    });

    it('stops a deactivated user\'s socket at its next delivery; a failed check withholds without disconnecting', async () => {
      const instance = await startInstance({ revalidateMs: 0 });
      const alice = addUser({ memberships: { alpha: 'viewer' } });
      const carol = addUser({ memberships: { alpha: 'viewer' } });
      const bob = await listener(instance, addUser({ memberships: { alpha: 'viewer' } }).token, ['nodes']);
      const a = await listener(instance, alice.token, ['nodes']);
      const c = await listener(instance, carol.token, ['nodes']);
      const told = new Promise((resolve) => a.socket.once('unauthorized', resolve));
      const gone = new Promise((resolve) => a.socket.once('disconnect', resolve));

      alice.user.active = false;
      carol.user.outage = true;
      instance.changes.next(change({ kind: 'AfterRevocation' }));
      await bob.until('AfterRevocation');
      expect(await told).to.deep.equal({ error: 'unauthorized' });
      expect(await gone).to.equal('io server disconnect');
      expect(a.got).to.deep.equal([]);

      carol.user.outage = false;
      instance.changes.next(change({ kind: 'Sentinel' }));
      await c.until('Sentinel');
      expect(c.kinds()).to.deep.equal(['Sentinel']);
      expect(c.socket.connected).to.equal(true);
    });

    it('fans out to many sockets with one principal lookup per token', async () => {
      const instance = await startInstance();
      const alpha = addUser({ memberships: { alpha: 'viewer' } }).token;
      const beta = addUser({ memberships: { beta: 'viewer' } }).token;
      const before = lookups;
      const many = await Promise.all(Array.from({ length: 300 }, (_, i) => listener(instance, i % 2 ? beta : alpha, ['nodes'])));
      instance.changes.next(change({ kind: 'ForAlpha', project: 'alpha' }));
      instance.changes.next(change({ kind: 'Sentinel', project: 'beta' }));
      instance.changes.next(change({ kind: 'Sentinel', project: 'alpha' }));
      await Promise.all(many.map((l) => l.until('Sentinel')));
      many.forEach((l, i) => expect(l.kinds(), `socket ${i}`).to.deep.equal(i % 2 ? ['Sentinel'] : ['ForAlpha', 'Sentinel']));
      expect(lookups - before).to.equal(2);
    });

    it('close() disconnects every client', async () => {
      const instance = await startInstance();
      const l = await listener(instance, addUser().token, ['nodes']);
      const gone = new Promise((resolve) => l.socket.once('disconnect', resolve));
      await instance.gateway.close();
      expect(await gone).to.equal('io server disconnect');
    });
  });

  describe('several instances (REDIS_URL)', () => {
    let redis: RedisServer;
    before(async () => {
      redis = await startRedisServer();
    });
    after(() => redis?.stop());

    it('a change seen on one instance reaches permitted clients on every instance, filtered where they are connected', async () => {
      const redisPrefix = `t-${randomUUID().slice(0, 8)}`;
      const a = await startInstance({ redisUrl: redis.url, redisPrefix });
      const b = await startInstance({ redisUrl: redis.url, redisPrefix });
      const alphaToken = addUser({ memberships: { alpha: 'viewer' } }).token;
      const betaToken = addUser({ memberships: { beta: 'viewer' } }).token;
      const nodeId = randomUUID();
      const onB = await listener(b, alphaToken, [`node:${nodeId}`]);
      const forbiddenOnB = await listener(b, betaToken, ['nodes']);
      const onA = await listener(a, alphaToken, ['nodes']);
      // One adapter over both: Socket.IO's own cross-instance operations see every socket.
      expect(await a.gateway.io.of('/live').fetchSockets()).to.have.length(3);

      // Only A's projections run (it leads): the change appears on A alone.
      const c = change({ id: nodeId, kind: 'NodeRegistered', data: { name: 'n1' }, project: 'alpha' });
      const ordered = Array.from({ length: 20 }, (_, i) => change({ id: nodeId, kind: `Step${i}` }));
      a.changes.next(c);
      for (const o of ordered) a.changes.next(o);
      a.changes.next(change({ kind: 'Sentinel', project: 'beta' }));
      a.changes.next(change({ id: nodeId, kind: 'Sentinel', project: 'alpha' }));

      await onB.until('Sentinel');
      expect(onB.got[0]).to.deep.equal(payloadOf(c));
      expect(onB.kinds()).to.deep.equal(['NodeRegistered', ...ordered.map((o) => o.kind), 'Sentinel']);
      await forbiddenOnB.until('Sentinel');
      expect(forbiddenOnB.kinds()).to.deep.equal(['Sentinel']);
      await onA.until('Sentinel');
      expect(onA.kinds()).to.deep.equal(['NodeRegistered', ...ordered.map((o) => o.kind), 'Sentinel']); // once, not echoed back

      // And the other way round, when B leads.
      b.changes.next(change({ id: nodeId, kind: 'FromB' }));
      await onA.until('FromB');
      await onB.until('FromB');
      expect(onA.kinds().filter((k) => k === 'FromB')).to.have.length(1);
    });

    it('an instance whose Redis is away at start still serves its own clients', async () => {
      const dead = `redis://127.0.0.1:${await freePort()}`; // nothing listens there
      const instance = await startInstance({ redisUrl: dead, redisPrefix: `t-${randomUUID().slice(0, 8)}`, logger: { info() {}, warn() {}, error() {} } });
      const l = await listener(instance, addUser({ memberships: { alpha: 'viewer' } }).token, ['nodes']);
      instance.changes.next(change({ kind: 'Local' }));
      await l.until('Local');
    });
  });
});

describe('canReadLiveChange', () => {
  const principal = (o: Partial<Principal>): Principal => ({
    userId: randomUUID(), username: 'p', role: 'user', memberships: {}, tokenId: null, scopes: null, projectPin: null, ...o,
  });
  const at = (topic: string, project: string | null, id = 'x') => ({ topic, id, project });

  it('applies each topic\'s read permission in the change\'s project', () => {
    const viewer = principal({ memberships: { alpha: 'viewer' } });
    for (const t of ['nodes', 'groups', 'jobs', 'proxies', 'stacks', 'workflow-runs']) {
      expect(canReadLiveChange(viewer, at(t, 'alpha')), t).to.equal(true);
      expect(canReadLiveChange(viewer, at(t, 'beta')), t).to.equal(false);
      expect(canReadLiveChange(viewer, at(t, null)), t).to.equal(false);
    }
    expect(canReadLiveChange(viewer, at('unknown-topic', 'alpha'))).to.equal(false);
    expect(canReadLiveChange(principal({ role: 'admin', projectPin: 'beta' }), at('nodes', 'alpha'))).to.equal(false);
    expect(canReadLiveChange(principal({ role: 'admin', projectPin: 'beta' }), at('nodes', null))).to.equal(false);
    expect(canReadLiveChange(principal({ role: 'admin', scopes: new Set(['jobs:read']) }), at('nodes', null))).to.equal(false);
  });

  it('shows users to user admins and to themselves, projects to their members, streams to system admins', () => {
    const p = principal({ memberships: { alpha: 'viewer' } });
    expect(canReadLiveChange(p, at('users', null, p.userId))).to.equal(true);
    expect(canReadLiveChange(p, at('users', null, randomUUID()))).to.equal(false);
    expect(canReadLiveChange(p, at('projects', 'alpha', 'alpha'))).to.equal(true);
    expect(canReadLiveChange(p, at('projects', 'beta', 'beta'))).to.equal(false);
    expect(canReadLiveChange(p, at('streams', null, 'user-1'))).to.equal(false);
    const admin = principal({ role: 'admin' });
    for (const t of ['users', 'projects', 'streams']) expect(canReadLiveChange(admin, at(t, null, 'beta')), t).to.equal(true);
  });
});
