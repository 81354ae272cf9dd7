import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { sql } from 'kysely';
import { firstValueFrom, filter, toArray, take } from 'rxjs';
import type { Database } from '../../infra/db/database.ts';
import { openServerDatabase } from '../../infra/db/database.ts';
import type { EventStore, NewEvent } from '../../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { createProjectionRuntime, type ProjectionRuntime, type ReplayProgress } from '../../projections/projectionRuntime.ts';
import type { Projector } from '../../projections/projector.ts';
import { streamCatalogProjection } from '../../projections/streamCatalog.ts';
import { freshDatabase, freshDatabaseUrl, FLAVOURS } from '../support/databases.ts';
import { migrateToLatest } from '../../infra/db/migrate.ts';
import { waitFor } from '../support/waitFor.ts';

const ev = (type: string, data: Record<string, unknown> = {}): NewEvent => ({
  id: randomUUID(), type, data, metadata: { occurred_at: new Date().toISOString(), schema_version: 1 },
});

const catalog = async (database: Database) =>
  (await database.db.selectFrom('stream_catalog').select(['stream_id', 'revision', 'event_count', 'last_type']).orderBy('stream_id').execute());

for (const flavour of FLAVOURS) {
  describe(`projection runtime (${flavour})`, () => {
    let database: Database;
    let store: EventStore;
    let runtime: ProjectionRuntime;
    beforeEach(async () => {
      database = await freshDatabase(flavour);
      store = await createPostgresEventStore(database);
      runtime = createProjectionRuntime({ database, store, projectors: [streamCatalogProjection], batchSize: 50 });
    });
    afterEach(async () => {
      await runtime.stop();
      await store.close();
      await database.close();
    });

    it('projects what was in the log before it started and what is appended after', async () => {
      await store.append('order-1', [ev('Placed'), ev('Paid')]);
      await runtime.start();
      const r = await store.append('order-2', [ev('Placed')]);
      await runtime.whenCaughtUp(r.position);
      expect(await catalog(database)).to.deep.equal([
        { stream_id: 'order-1', revision: '1', event_count: '2', last_type: 'Paid' },
        { stream_id: 'order-2', revision: '0', event_count: '1', last_type: 'Placed' },
      ]);
    });

    it('publishes each change after its transaction committed, with its position', async () => {
      await runtime.start();
      const seen = firstValueFrom(runtime.changes$.pipe(filter((c) => c.id === 'cart-9')));
      const r = await store.append('cart-9', [ev('Created')]);
      const change = await seen;
      expect(change).to.include({ projection: 'stream_catalog', topic: 'streams', kind: 'updated', id: 'cart-9' });
      expect(change.position).to.deep.equal(r.position);
      // Committed: a reader on any connection sees the row when the change arrives.
      const row = await database.db.selectFrom('stream_catalog').selectAll().where('stream_id', '=', 'cart-9').executeTakeFirst();
      expect(row?.last_type).to.equal('Created');
    });

    it('keeps the checkpoint with the rows: a restart applies nothing twice', async () => {
      await runtime.start();
      let last = await store.append('a-1', [ev('X'), ev('Y')]);
      await runtime.whenCaughtUp(last.position);
      await runtime.stop();
      last = await store.append('a-1', [ev('Z')]);
      const again = createProjectionRuntime({ database, store, projectors: [streamCatalogProjection] });
      const changes = firstValueFrom(again.changes$.pipe(take(1), toArray()));
      await again.start();
      await again.whenCaughtUp(last.position);
      expect((await changes)[0]!.data).to.deep.include({ revision: '2' }); // only the new event was applied
      await again.stop();
      expect(await catalog(database)).to.deep.equal([{ stream_id: 'a-1', revision: '2', event_count: '3', last_type: 'Z' }]);
    });

    it('rebuilds from the log when the projector version changes', async () => {
      await runtime.start();
      const r = await store.append('b-1', [ev('One')]);
      await runtime.whenCaughtUp(r.position);
      await runtime.stop();
      await database.db.updateTable('stream_catalog').set({ last_type: 'tampered' }).execute();
      const v2 = createProjectionRuntime({ database, store, projectors: [{ ...streamCatalogProjection, version: 2 }] });
      await v2.start();
      await v2.whenCaughtUp(r.position);
      await v2.stop();
      expect(await catalog(database)).to.deep.equal([{ stream_id: 'b-1', revision: '0', event_count: '1', last_type: 'One' }]);
    });

    it('replays a projection from zero with progress, converging on the same rows', async () => {
      for (let i = 0; i < 12; i++) await store.append(`s-${i % 4}`, [ev('E', { i }), ev('F')]);
      await runtime.start();
      await runtime.whenCaughtUp(await store.headPosition());
      const live = await catalog(database);
      await runtime.stop();
      await database.db.deleteFrom('stream_catalog').where('stream_id', '=', 's-1').execute();
      const progress: ReplayProgress[] = [];
      const result = await runtime.replay('stream_catalog', (p) => progress.push(p));
      expect(result.events).to.equal(24);
      expect(progress[0]).to.deep.equal({ name: 'stream_catalog', done: 0, total: 24 });
      expect(progress.at(-1)).to.deep.equal({ name: 'stream_catalog', done: 24, total: 24 });
      expect(await catalog(database)).to.deep.equal(live);
    });

    it('reads only the event types a projector handles, yet reports progress past the others', async () => {
      const seen: string[] = [];
      const onlyB: Projector = {
        name: 'only_b', version: 1, handles: ['B'], tables: [],
        async apply(_trx, events) { for (const e of events) seen.push(e.type); },
      };
      const rt = createProjectionRuntime({ database, store, projectors: [onlyB] });
      await rt.start();
      await store.append('m-1', [ev('A'), ev('B'), ev('A')]);
      const last = await store.append('m-2', [ev('A')]);
      await rt.whenCaughtUp(last.position);
      await rt.stop();
      expect(seen).to.deep.equal(['B']);
    });

    it('moves a projection\'s generation when a batch of its events commits, and by event type only for those types', async () => {
      // Memory caches of read models (infra/epochCache.ts) are exact only if this moves
      // before whenCaughtUp lets a command answer.
      const cat: Projector = {
        name: 'cat', version: 1, handles: ['Named', 'Recoloured'], tables: [],
        async apply() { /* a read model elsewhere */ },
      };
      const rt = createProjectionRuntime({ database, store, projectors: [cat] });
      await rt.start();
      const before = { all: rt.generation(['cat']), named: rt.generation(['cat'], ['Named']), recoloured: rt.generation(['cat'], ['Recoloured']) };
      const r = await store.append('cat-1', [ev('Recoloured')]);
      await rt.whenCaughtUp(r.position);
      expect(rt.generation(['cat'])).to.be.greaterThan(before.all);
      expect(rt.generation(['cat'], ['Recoloured'])).to.be.greaterThan(before.recoloured);
      expect(rt.generation(['cat'], ['Named'])).to.equal(before.named);
      // Events the projection does not handle leave it alone.
      const mid = rt.generation(['cat']);
      const other = await store.append('dog-1', [ev('Barked')]);
      await rt.whenCaughtUp(other.position);
      expect(rt.generation(['cat'])).to.equal(mid);
      expect(() => rt.generation(['nope'])).to.throw(/unknown projection nope/);
      await rt.stop();
    });

    it('waits only for the projections that handle the given event types', async () => {
      const never: Projector = { name: 'stuck', version: 1, handles: ['Never'], tables: [], async apply() { throw new Error('unreachable'); } };
      const rt = createProjectionRuntime({ database, store, projectors: [streamCatalogProjection, never] });
      await rt.start();
      const r = await store.append('w-1', [ev('Hello')]);
      await rt.whenCaughtUp(r.position, { eventTypes: ['Hello'] });
      await rt.stop();
    });

    it('marks a failing projector failed, keeps its checkpoint, and recovers once the cause is gone', async () => {
      let broken = true;
      const rows: string[] = [];
      const flaky: Projector = {
        name: 'flaky', version: 1, handles: ['T'], tables: [],
        async apply(_trx, events) {
          if (broken) throw new Error('read model unavailable');
          rows.push(...events.map((e) => e.streamId));
        },
      };
      const rt = createProjectionRuntime({ database, store, projectors: [flaky] });
      await rt.start();
      const r = await store.append('f-1', [ev('T')]);
      try {
        await rt.whenCaughtUp(r.position, { timeoutMs: 300 });
        expect.fail('should not catch up while failing');
      } catch (err) {
        expect((err as { code: string }).code).to.equal('TIMEOUT');
      }
      expect(rt.status()[0]).to.include({ name: 'flaky', state: 'failed', lastError: 'read model unavailable' });
      broken = false;
      await rt.whenCaughtUp(r.position, { timeoutMs: 5000 });
      await rt.stop();
      expect(rows).to.deep.equal(['f-1']);
    });
  });
}

describe('projection runtime on several instances (postgres)', () => {
  it('runs each projector on exactly one instance and fails over when it stops', async () => {
    const url = await freshDatabaseUrl();
    const open = async () => {
      const database = openServerDatabase({ url, poolSize: 4 });
      await migrateToLatest(database);
      const store = await createPostgresEventStore(database);
      return { database, store };
    };
    const a = await open();
    const b = await open();
    const applied: Record<string, number> = { a: 0, b: 0 };
    const counting = (who: 'a' | 'b'): Projector => ({
      ...streamCatalogProjection,
      async apply(trx, events, emit) { applied[who] += events.length; await streamCatalogProjection.apply(trx, events, emit); },
    });
    const ra = createProjectionRuntime({ database: a.database, store: a.store, projectors: [counting('a')] });
    const rb = createProjectionRuntime({ database: b.database, store: b.store, projectors: [counting('b')] });
    try {
      await ra.start();
      await waitFor(() => ra.status()[0]!.state === 'running', 'instance a to lead');
      await rb.start();
      await waitFor(() => rb.status()[0]!.state === 'standby', 'instance b to stand by');
      for (let i = 0; i < 20; i++) await a.store.append(`x-${i}`, [ev('E')]);
      const head = await a.store.headPosition();
      // Both instances can wait for read-your-writes: the standby follows the leader's NOTIFY.
      await Promise.all([ra.whenCaughtUp(head), rb.whenCaughtUp(head)]);
      expect(applied.a + applied.b).to.equal(20);
      expect(applied).to.deep.equal({ a: 20, b: 0 });
      await ra.stop();
      const more = await b.store.append('after-failover', [ev('E')]);
      await rb.whenCaughtUp(more.position, { timeoutMs: 10_000 });
      expect(rb.status()[0]!.state).to.equal('running');
      expect(applied.a + applied.b).to.equal(21);
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from stream_catalog`.execute(a.database.db);
      expect(rows[0]!.n).to.equal(21);
    } finally {
      await ra.stop();
      await rb.stop();
      for (const x of [a, b]) { await x.store.close(); await x.database.close(); }
    }
  });
});
