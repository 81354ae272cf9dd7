// GET /api/v1/streams/{stream_id} over real HTTP, on PGlite with events appended through
// the event store. A test middleware stands in for authentication (X-Test-User).
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Principal } from '../../infra/auth/principal.ts';
import type { Database } from '../../infra/db/database.ts';
import type { EventMetadata, EventStore, NewEvent, RecordedEvent } from '../../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { categoryOf, streamRoutes, type StreamFold } from '../../read-api/streams.ts';
import { freshDatabase } from '../support/databases.ts';
import { call, listen, type Listening } from '../infra/http/httpHarness.ts';
import { appWithTestPrincipals, principal } from '../support/testPrincipals.ts';

const PRINCIPALS: Record<string, Principal> = {
  root: principal({ username: 'root', role: 'admin' }),
  alice: principal({ username: 'alice', memberships: { alpha: 'admin' } }),
  rootPinned: principal({ username: 'root', role: 'admin', tokenId: randomUUID(), projectPin: 'alpha' }),
};

const meta = (who: Principal, project: string | null): EventMetadata => ({
  actor: { user_id: who.userId, username: who.username, token_id: who.tokenId },
  request_id: randomUUID(),
  ip: '198.51.100.7',
  project,
  correlation_id: null,
  causation_id: null,
  occurred_at: new Date().toISOString(),
  schema_version: 1,
});

const event = (type: string, data: Record<string, unknown>, project: string | null = 'alpha'): NewEvent =>
  ({ id: randomUUID(), type, data, metadata: meta(PRINCIPALS['root']!, project) });

// A module's fold as the composition root would pass it: a decider's evolve over its initial state.
type Counter = { status: 'none' | 'open' | 'closed'; total: bigint; history: Map<string, number>; secretRef: string | null };
const counterFold: StreamFold = (events: readonly RecordedEvent[]) =>
  events.reduce<Counter>((s, e) => {
    switch (e.type) {
      case 'CounterOpened': return { ...s, status: 'open', secretRef: String(e.data['secretRef']) };
      case 'CounterAdded': return { ...s, total: s.total + BigInt(e.data['n'] as number), history: new Map([...s.history, [e.id, e.data['n'] as number]]) };
      case 'CounterClosed': return { ...s, status: 'closed' };
      default: return s;
    }
  }, { status: 'none', total: 0n, history: new Map(), secretRef: null });

describe('read-api: GET /api/v1/streams/{stream_id} (PGlite)', () => {
  let database: Database;
  let store: EventStore;
  let server: Listening;
  const counter = `counter-${randomUUID()}`;
  const misc = `misc-${randomUUID()}`;

  const get = (path: string, who?: string) => call(`${server.url}${path}`, { headers: who ? { 'x-test-user': who } : {} });

  before(async () => {
    database = await freshDatabase('pglite');
    store = await createPostgresEventStore(database);
    await store.append(counter, [event('CounterOpened', { name: 'c', secretRef: 'vault:abc' })]);
    await store.append(counter, [event('CounterAdded', { n: 2 }), event('CounterAdded', { n: 3 })]);
    await store.append(counter, [event('CounterAdded', { n: 5 })]);
    await store.append(counter, [event('CounterClosed', {})]);
    await store.append(misc, [
      event('ThingCreated', { name: 'a', size: 1, token: 'opl_secret', nested: { password: 'p', keep: 1 } }, null),
      event('ThingResized', { size: 2 }, null),
      event('ThingRenamed', { name: 'b' }, null),
    ]);
    // History: the counter's events were stored on the first of Jan, Feb, Mar, Apr and May.
    await sql`update events set created_at = ('2024-0' || (stream_revision + 1)::text || '-01T00:00:00Z')::timestamptz
               where stream_id = ${counter}`.execute(database.db);

    server = await listen(appWithTestPrincipals(PRINCIPALS, (routes) => streamRoutes(routes, { store, folds: { counter: counterFold } })));
  });

  after(async () => {
    await server?.close();
    await store?.close();
    await database?.close();
  });

  it('answers the stream, its revision, its events oldest first and the state its category’s fold makes', async () => {
    const r = await get(`/api/v1/streams/${counter}`, 'root');
    expect(r.status, r.text).to.equal(200);
    const stored = await store.readStream(counter);
    expect(r.body.stream).to.equal(counter);
    expect(r.body.revision).to.equal(4);
    expect(r.body.events.map((e: any) => e.type)).to.deep.equal(['CounterOpened', 'CounterAdded', 'CounterAdded', 'CounterAdded', 'CounterClosed']);
    expect(r.body.events.map((e: any) => e.position)).to.deep.equal(stored.map((e) => `${e.position.commit}/${e.position.prepare}`));
    expect(r.body.events[1]).to.deep.equal({
      position: `${stored[1]!.position.commit}/${stored[1]!.position.prepare}`,
      stream: counter,
      type: 'CounterAdded',
      occurred_at: stored[1]!.metadata.occurred_at,
      actor: { user_id: PRINCIPALS['root']!.userId, username: 'root', token_id: null },
      request_id: stored[1]!.metadata.request_id,
      ip: '198.51.100.7',
      project: 'alpha',
      data: { n: 2 },
    });
    // bigint and Map made JSON; the secret-like key (a vault reference here) left out
    expect(r.body.state).to.deep.equal({
      status: 'closed', total: '10', history: Object.fromEntries(stored.slice(1, 4).map((e) => [e.id, e.data['n']])),
    });
    expect(r.text).to.not.include('vault:abc');
  });

  it('as_of folds only the events stored up to that time (inclusive)', async () => {
    const at = async (asOf: string) => (await get(`/api/v1/streams/${counter}?as_of=${encodeURIComponent(asOf)}`, 'root')).body;
    const march = await at('2024-03-01T00:00:00Z');
    expect(march.revision).to.equal(2);
    expect(march.events.map((e: any) => e.data)).to.deep.equal([{ name: 'c' }, { n: 2 }, { n: 3 }]);
    expect(march.state).to.include({ status: 'open', total: '5' });
    const midApril = await at('2024-04-15T12:00:00+02:00');
    expect(midApril.revision).to.equal(3);
    expect(midApril.state).to.include({ status: 'open', total: '10' });
    const now = await at(new Date().toISOString());
    expect(now.revision).to.equal(4);
    expect(now.state.status).to.equal('closed');
    const before = await at('2023-12-31T23:59:59Z');
    expect(before).to.deep.equal({ stream: counter, revision: null, events: [], state: { status: 'none', total: '0', history: {} } });
    expect((await get(`/api/v1/streams/${counter}?as_of=last-week`, 'root')).status).to.equal(400);
  });

  it('a category without a fold gets the events’ data merged in order, without secret-like keys', async () => {
    expect(categoryOf(misc)).to.equal('misc');
    const r = await get(`/api/v1/streams/${misc}`, 'root');
    expect(r.status).to.equal(200);
    expect(r.body.revision).to.equal(2);
    expect(r.body.state).to.deep.equal({ name: 'b', size: 2, nested: { keep: 1 } });
    expect(r.body.events[0].data).to.deep.equal({ name: 'a', size: 1, nested: { keep: 1 } });
    expect(r.text).to.not.include('opl_secret');
  });

  it('an unknown stream is 404, a malformed id 400', async () => {
    const r = await get(`/api/v1/streams/counter-${randomUUID()}`, 'root');
    expect(r.status).to.equal(404);
    expect(r.body.code).to.equal('NOT_FOUND');
    const bad = await get('/api/v1/streams/-bad%20id', 'root');
    expect(bad.status).to.equal(400);
    expect(bad.body.errors.map((e: any) => e.path)).to.deep.equal(['params.stream_id']);
  });

  it('only a global admin may read streams: 403 for project admins and pinned tokens, 401 when anonymous', async () => {
    for (const who of ['alice', 'rootPinned']) {
      const r = await get(`/api/v1/streams/${counter}`, who);
      expect(r.status, who).to.equal(403);
      expect(r.body.code).to.equal('FORBIDDEN');
    }
    const anonymous = await get(`/api/v1/streams/${counter}`);
    expect(anonymous.status).to.equal(401);
    expect(anonymous.body.code).to.equal('UNAUTHORIZED');
    // Not even whether the stream exists
    expect((await get(`/api/v1/streams/counter-${randomUUID()}`, 'alice')).status).to.equal(403);
  });
});
