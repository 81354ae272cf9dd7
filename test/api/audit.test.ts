// GET /api/v1/audit over real HTTP, on PGlite with events appended through the event
// store. Authentication is another module's: a test middleware puts the principal named
// by X-Test-User into res.locals.principal, which is all this endpoint reads.
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { sql } from 'kysely';
import pg from 'pg';
import type { Principal } from '../../infra/auth/principal.ts';
import type { Database } from '../../infra/db/database.ts';
import type { EventMetadata, EventStore, NewEvent } from '../../infra/eventStore/eventStore.ts';
import { comparePositions, parsePosition } from '../../infra/eventStore/position.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { auditRoutes, decodeCursor, encodeCursor, isSecretLikeKey, redactSecrets } from '../../read-api/audit.ts';
import { freshDatabase, freshServerDatabase } from '../support/databases.ts';
import { call, listen, type Listening } from '../infra/http/httpHarness.ts';
import { appWithTestPrincipals, principal } from '../support/testPrincipals.ts';

const PRINCIPALS: Record<string, Principal> = {
  root: principal({ username: 'root', role: 'admin' }),
  // project admin of alpha (audit:read there), viewer of beta (no audit:read)
  alice: principal({ username: 'alice', memberships: { alpha: 'admin', beta: 'viewer' } }),
  // viewer and operator: no audit:read anywhere
  bob: principal({ username: 'bob', memberships: { alpha: 'viewer', beta: 'operator' } }),
  // project admin of both
  carol: principal({ username: 'carol', memberships: { alpha: 'admin', beta: 'admin', gamma: 'admin' } }),
  // a global admin's API token pinned to beta
  rootPinned: principal({ username: 'root', role: 'admin', tokenId: randomUUID(), projectPin: 'beta' }),
  // alice's API token without audit:read in its scopes
  aliceScoped: principal({ username: 'alice', memberships: { alpha: 'admin' }, tokenId: randomUUID(), scopes: new Set(['nodes:read']) }),
};

/** The app as the composition root builds it, with the test's stand-in for authentication. */
const auditApp = (database: Database) => appWithTestPrincipals(PRINCIPALS, (routes) => auditRoutes(routes, { db: database.db }));

const meta = (who: Principal | null, project: string | null, extra: Partial<EventMetadata> = {}): EventMetadata => ({
  actor: who ? { user_id: who.userId, username: who.username, token_id: who.tokenId } : null,
  request_id: randomUUID(),
  ip: '192.0.2.10',
  project,
  correlation_id: null,
  causation_id: null,
  occurred_at: new Date().toISOString(),
  schema_version: 1,
  ...extra,
});

const event = (type: string, data: Record<string, unknown>, m: EventMetadata): NewEvent => ({ id: randomUUID(), type, data, metadata: m });

type Logged = { position: string; stream: string; type: string; project: string | null; actor: string | null; created_at: Date };

/** The whole log as the database holds it, newest first: the truth the API is checked against. */
const logOf = async (database: Database): Promise<Logged[]> => {
  const { rows } = await sql<{ gp: string; tx: string; stream_id: string; type: string; metadata: Record<string, any>; created_at: Date }>`
    select global_position::text as gp, transaction_id::text as tx, stream_id, type, metadata, created_at
      from events order by transaction_id desc, global_position desc`.execute(database.db);
  return rows.map((r) => ({
    position: `${r.tx}/${r.gp}`, stream: r.stream_id, type: r.type, project: r.metadata['project'] ?? null,
    actor: r.metadata['actor']?.['user_id'] ?? null, created_at: new Date(r.created_at),
  }));
};

describe('read-api: GET /api/v1/audit (PGlite)', () => {
  let database: Database;
  let store: EventStore;
  let server: Listening;
  const nodeA = `node-${randomUUID()}`;
  const nodeB = `node-${randomUUID()}`;
  const jobB = `job-${randomUUID()}`;
  const nodeC = `node-${randomUUID()}`;
  const userStream = `user-${PRINCIPALS['alice']!.userId}`;
  const secretStream = `system-${randomUUID()}`;

  const get = (path: string, who?: string) => call(`${server.url}${path}`, { headers: who ? { 'x-test-user': who } : {} });
  /** Follows next_cursor to the end. */
  const allPages = async (path: string, who: string, between?: () => Promise<void>) => {
    const items: any[] = [];
    let url = path;
    for (let pages = 0; ; pages++) {
      const r = await get(url, who);
      expect(r.status, r.text).to.equal(200);
      items.push(...r.body.items);
      if (r.body.next_cursor === null) return { items, pages: pages + 1 };
      await between?.();
      url = `${path}${path.includes('?') ? '&' : '?'}cursor=${r.body.next_cursor}`;
    }
  };

  before(async () => {
    database = await freshDatabase('pglite');
    store = await createPostgresEventStore(database);
    const { root, alice, bob, carol } = PRINCIPALS as Record<string, Principal>;
    await store.append(userStream, [event('UserRegistered', { userId: alice!.userId, username: 'alice', passwordRef: `vault:${randomUUID()}`, role: 'user' }, meta(root!, null))]);
    await store.append(nodeA, [event('NodeRegistered', { nodeId: nodeA, name: 'web-1', host: '10.0.0.1' }, meta(alice!, 'alpha'))]);
    await store.append(nodeB, [event('NodeRegistered', { nodeId: nodeB, name: 'db-1', host: '10.0.1.1' }, meta(carol!, 'beta'))]);
    await store.append(jobB, [event('JobCreated', { jobId: jobB, name: 'backup', command: 'pg_dump' }, meta(bob!, 'beta'))]);
    await store.append(nodeC, [event('NodeRegistered', { nodeId: nodeC, name: 'edge-1', host: '10.0.2.1' }, meta(carol!, 'gamma'))]);
    for (let i = 0; i < 8; i++) {
      await store.append(nodeA, [event('NodeRenamed', { nodeId: nodeA, name: `web-${i + 2}` }, meta(alice!, 'alpha'))]);
      await store.append(nodeB, [
        event('NodeRenamed', { nodeId: nodeB, name: `db-${i + 2}` }, meta(carol!, 'beta')),
        event('NodeLabelled', { nodeId: nodeB, labels: [`l${i}`] }, meta(carol!, 'beta')),
      ]);
      await store.append(jobB, [event('ExecutionStarted', { jobId: jobB, executionId: randomUUID() }, meta(bob!, 'beta'))]);
    }
    await store.append(secretStream, [event('SystemConfigured', {
      name: 'ssh-1',
      password: 'hunter2',
      credentials: { username: 'deploy', privateKey: '-----BEGIN OPENSSH PRIVATE KEY-----' },
      tokenId: 'tok-1',
      tokenHash: 'f'.repeat(64),
      hosts: [{ host: 'a', private_key: 'k', ssh_password: 'p', port: 22 }, { host: 'b', api_key: 'x', apiToken: 'y' }],
      notes: { secret: 'x', secretRef: 'vault:1', keep: true },
    }, meta(root!, null))]);
    server = await listen(auditApp(database));
  });

  after(async () => {
    await server?.close();
    await store?.close();
    await database?.close();
  });

  describe('a global admin', () => {
    it('gets every event, newest first, in the audit shape', async () => {
      const log = await logOf(database);
      const { items, pages } = await allPages('/api/v1/audit?limit=500', 'root');
      expect(pages).to.equal(1);
      expect(items.map((i) => i.position)).to.deep.equal(log.map((l) => l.position));
      for (let i = 1; i < items.length; i++) {
        expect(comparePositions(parsePosition(items[i - 1].position)!, parsePosition(items[i].position)!)).to.equal(1);
      }
      const newest = items.find((i) => i.stream === jobB)!;
      const stored = (await store.readStream(jobB, { direction: 'backwards', maxCount: 1 }))[0]!;
      expect(newest).to.deep.equal({
        position: `${stored.position.commit}/${stored.position.prepare}`,
        stream: jobB,
        type: 'ExecutionStarted',
        occurred_at: stored.metadata.occurred_at,
        actor: { user_id: PRINCIPALS['bob']!.userId, username: 'bob', token_id: null },
        request_id: stored.metadata.request_id,
        ip: '192.0.2.10',
        project: 'beta',
        data: stored.data,
      });
    });

    it('defaults to pages of 50 and refuses a limit over 500', async () => {
      const first = await get('/api/v1/audit', 'root');
      expect(first.status).to.equal(200);
      expect(first.body.limit).to.equal(50);
      expect(first.body.items).to.have.length(Math.min(50, (await logOf(database)).length));
      expect((await get('/api/v1/audit?limit=501', 'root')).status).to.equal(400);
    });

    it('filters by actor_id, project, stream and type, alone and together', async () => {
      const log = await logOf(database);
      const carolId = PRINCIPALS['carol']!.userId;
      const cases: Array<[string, (l: Logged) => boolean]> = [
        [`actor_id=${carolId}`, (l) => l.actor === carolId],
        ['project=beta', (l) => l.project === 'beta'],
        [`stream=${nodeA}`, (l) => l.stream === nodeA],
        ['type=NodeRenamed', (l) => l.type === 'NodeRenamed'],
        [`project=beta&type=NodeLabelled&actor_id=${carolId}`, (l) => l.project === 'beta' && l.type === 'NodeLabelled' && l.actor === carolId],
        [`stream=${jobB}&type=JobCreated`, (l) => l.stream === jobB && l.type === 'JobCreated'],
      ];
      for (const [query, keep] of cases) {
        const { items } = await allPages(`/api/v1/audit?limit=4&${query}`, 'root');
        const expected = log.filter(keep).map((l) => l.position);
        expect(expected, query).to.not.be.empty;
        expect(items.map((i) => i.position), query).to.deep.equal(expected);
      }
      const none = await get(`/api/v1/audit?actor_id=${randomUUID()}`, 'root');
      expect(none.body).to.deep.equal({ items: [], limit: 50, next_cursor: null });
    });

    it('filters by from (inclusive) and to (exclusive) on the time the event was stored', async () => {
      const stream = `clock-${randomUUID()}`;
      for (let i = 0; i < 4; i++) await store.append(stream, [event('Ticked', { i }, meta(PRINCIPALS['root']!, null))]);
      // History: give the four events known times (the log is append-only; this is a fixture).
      await sql`update events set created_at = ('2021-0' || (stream_revision + 1)::text || '-01T00:00:00Z')::timestamptz
                 where stream_id = ${stream}`.execute(database.db);
      const data = async (query: string) => (await allPages(`/api/v1/audit?stream=${stream}&${query}`, 'root')).items.map((i) => i.data.i);
      expect(await data('from=2021-02-01T00:00:00Z')).to.deep.equal([3, 2, 1]);
      expect(await data('to=2021-03-01T00:00:00Z')).to.deep.equal([1, 0]);
      expect(await data('from=2021-02-01T00:00:00Z&to=2021-04-01T00:00:00Z')).to.deep.equal([2, 1]);
      expect(await data('from=2021-01-15T02:00:00%2B02:00&to=2021-02-01T00:00:00.001Z')).to.deep.equal([1]);
      expect(await data('from=2022-01-01T00:00:00Z')).to.deep.equal([]);
      const bad = await get('/api/v1/audit?from=yesterday', 'root');
      expect(bad.status).to.equal(400);
      expect(bad.body.errors.map((e: any) => e.path)).to.deep.equal(['query.from']);
    });

    it('pages cover every event exactly once while new events are appended between pages', async () => {
      const before = (await logOf(database)).map((l) => l.position);
      let appended = 0;
      const { items, pages } = await allPages('/api/v1/audit?limit=7', 'root', async () => {
        appended++;
        await store.append(nodeA, [event('NodeRenamed', { nodeId: nodeA, name: `late-${appended}` }, meta(PRINCIPALS['alice']!, 'alpha'))]);
        await store.append(`node-${randomUUID()}`, [event('NodeRegistered', { name: `late-${appended}` }, meta(PRINCIPALS['carol']!, 'beta'))]);
      });
      expect(pages).to.be.greaterThan(3);
      expect(appended).to.equal(pages - 1);
      expect(items.map((i) => i.position)).to.deep.equal(before);
      // A new first page starts with what was appended meanwhile.
      const fresh = await get('/api/v1/audit?limit=1', 'root');
      expect(fresh.body.items[0].position).to.equal((await logOf(database))[0]!.position);
      expect(fresh.body.items[0].data.name).to.equal(`late-${appended}`);
    });

    it('pages of one stream cover it exactly once while that stream grows between pages', async () => {
      const before = (await logOf(database)).filter((l) => l.stream === nodeB).map((l) => l.position);
      let appended = 0;
      const { items, pages } = await allPages(`/api/v1/audit?limit=4&stream=${nodeB}`, 'carol', async () => {
        appended++;
        await store.append(nodeB, [event('NodeRenamed', { nodeId: nodeB, name: `grown-${appended}` }, meta(PRINCIPALS['carol']!, 'beta'))]);
      });
      expect(pages).to.be.greaterThan(3);
      expect(items.map((i) => i.position)).to.deep.equal(before);
      expect((await get(`/api/v1/audit?stream=${nodeB}`, 'alice')).body.items).to.deep.equal([]); // beta is not alice's to audit
    });

    it('answers an opaque base64url cursor, and 400 for one it did not issue', async () => {
      const r = await get('/api/v1/audit?limit=2', 'root');
      expect(r.body.next_cursor).to.match(/^[A-Za-z0-9_-]+$/);
      expect(decodeCursor(r.body.next_cursor)).to.deep.equal(parsePosition(r.body.items[1].position));
      expect(encodeCursor(parsePosition(r.body.items[1].position)!)).to.equal(r.body.next_cursor);
      for (const cursor of ['bm9wZQ', '1/2', '', '%00']) {
        const bad = await get(`/api/v1/audit?cursor=${cursor}`, 'root');
        expect(bad.status, cursor).to.equal(400);
        expect(bad.body.code).to.equal('VALIDATION_FAILED');
      }
    });

    it('rejects unknown query parameters', async () => {
      const r = await get('/api/v1/audit?actor=alice', 'root');
      expect(r.status).to.equal(400);
      expect(r.body.errors).to.deep.equal([{ path: 'query.actor', message: 'unknown field' }]);
    });
  });

  describe('project scoping', () => {
    const projectsSeen = async (who: string, query = '') =>
      new Set((await allPages(`/api/v1/audit?limit=5${query}`, who)).items.map((i) => i.project));

    it('a project admin sees only the events of projects where they hold audit:read', async () => {
      const log = await logOf(database);
      const { items } = await allPages('/api/v1/audit?limit=6', 'alice');
      expect(items.map((i) => i.position)).to.deep.equal(log.filter((l) => l.project === 'alpha').map((l) => l.position));
      // beta: alice is only a viewer there
      const beta = await get('/api/v1/audit?project=beta', 'alice');
      expect(beta.status).to.equal(403);
      expect(beta.body.code).to.equal('FORBIDDEN');
      expect((await get('/api/v1/audit?project=nowhere', 'alice')).status).to.equal(403);
    });

    it('an admin of several projects pages through all of them, merged newest first, and nothing without a project', async () => {
      const log = await logOf(database);
      const { items } = await allPages('/api/v1/audit?limit=3', 'carol');
      const mine = log.filter((l) => l.project !== null && ['alpha', 'beta', 'gamma'].includes(l.project));
      expect(items.map((i) => i.position)).to.deep.equal(mine.map((l) => l.position));
      expect(await projectsSeen('carol')).to.deep.equal(new Set(['alpha', 'beta', 'gamma']));
      expect(await projectsSeen('carol', '&project=gamma')).to.deep.equal(new Set(['gamma']));
      const filtered = await allPages(`/api/v1/audit?limit=2&type=NodeRegistered`, 'carol');
      expect(filtered.items.map((i) => i.position)).to.deep.equal(mine.filter((l) => l.type === 'NodeRegistered').map((l) => l.position));
    });

    it('viewers and operators (no audit:read) get 403', async () => {
      const r = await get('/api/v1/audit', 'bob');
      expect(r.status).to.equal(403);
      expect(r.body).to.include({ code: 'FORBIDDEN', status: 403 });
      expect(r.headers.get('content-type')).to.match(/^application\/problem\+json/);
    });

    it('a token is held to its scopes and its project pin', async () => {
      expect((await get('/api/v1/audit', 'aliceScoped')).status).to.equal(403);
      expect(await projectsSeen('rootPinned')).to.deep.equal(new Set(['beta']));
      expect((await get('/api/v1/audit?project=alpha', 'rootPinned')).status).to.equal(403);
    });

    it('an anonymous request gets 401', async () => {
      const r = await get('/api/v1/audit');
      expect(r.status).to.equal(401);
      expect(r.body).to.include({ code: 'UNAUTHORIZED', status: 401 });
    });
  });

  describe('secrets', () => {
    it('keys that look like secrets are dropped from event data at any depth', async () => {
      const r = await get(`/api/v1/audit?stream=${secretStream}`, 'root');
      expect(r.body.items[0].data).to.deep.equal({
        name: 'ssh-1',
        tokenId: 'tok-1',
        hosts: [{ host: 'a', port: 22 }, { host: 'b' }],
        notes: { keep: true },
      });
      expect(r.text).to.not.match(/hunter2|OPENSSH|ffffffff|vault:/);
      const user = await get(`/api/v1/audit?stream=${userStream}`, 'root');
      expect(user.body.items[0].data).to.deep.equal({ userId: PRINCIPALS['alice']!.userId, username: 'alice', role: 'user' });
    });

    it('isSecretLikeKey knows secrets from ids and names', () => {
      for (const k of ['password', 'Password', 'passwordRef', 'ssh_password', 'passphrase', 'secret', 'clientSecret', 'secret_ref',
        'token', 'accessToken', 'refresh_token', 'tokenHash', 'apiToken', 'private_key', 'privateKey', 'PRIVATE-KEY', 'api_key',
        'apiKey', 'credentials', 'authorization', 'Cookie']) expect(isSecretLikeKey(k), k).to.equal(true);
      for (const k of ['tokenId', 'token_id', 'tokenName', 'token_prefix', 'name', 'host', 'key', 'publicKey', 'keyFingerprint',
        'passed', 'secretary_name', 'project', 'userId']) expect(isSecretLikeKey(k), k).to.equal(false);
      expect(redactSecrets({ a: [{ b: { password: 1, c: 2n } }], m: new Map([['token', 1], ['x', 2]]), s: new Set([1]) })).to.deep.equal({
        a: [{ b: { c: '2' } }], m: { x: 2 }, s: [1],
      });
    });
  });
});

describe('read-api: GET /api/v1/audit shows only committed events below the horizon (PostgreSQL)', () => {
  let database: Database;
  let url: string;
  let store: EventStore;
  let server: Listening;

  before(async function () {
    ({ database, url } = await freshServerDatabase());
    store = await createPostgresEventStore(database);
    server = await listen(auditApp(database));
  });

  after(async () => {
    await server?.close();
    await store?.close();
    await database?.close();
  });

  it('an event committed after an older, still open transaction appears only once that one ends', async () => {
    const stream = `node-${randomUUID()}`;
    await store.append(stream, [event('NodeRegistered', { n: 1 }, meta(PRINCIPALS['root']!, 'alpha'))]);
    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    try {
      await raw.query('begin');
      await raw.query('select pg_current_xact_id()'); // holds an xid older than the next append's
      await store.append(stream, [event('NodeRenamed', { n: 2 }, meta(PRINCIPALS['root']!, 'alpha'))]);
      const hidden = await call(`${server.url}/api/v1/audit?stream=${stream}`, { headers: { 'x-test-user': 'root' } });
      expect(hidden.body.items.map((i: any) => i.data.n)).to.deep.equal([1]);
      await raw.query('rollback');
      const shown = await call(`${server.url}/api/v1/audit?stream=${stream}`, { headers: { 'x-test-user': 'root' } });
      expect(shown.body.items.map((i: any) => i.data.n)).to.deep.equal([2, 1]);
    } finally {
      await raw.end();
    }
  });
});
