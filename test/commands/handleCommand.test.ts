import { expect } from 'chai';
import { createCommandHandler, type CommandHandler } from '../../commands/handleCommand.ts';
import type { Database } from '../../infra/db/database.ts';
import type { EventStore } from '../../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { counterDecider, counterSchemas } from '../support/counterDecider.ts';
import { freshDatabase } from '../support/databases.ts';

const ctx = { actor: { user_id: 'u-1', username: 'alice', token_id: null }, requestId: 'req-1', ip: '127.0.0.1', project: 'default' };

describe('handleCommand', () => {
  let database: Database;
  let store: EventStore;
  let handle: CommandHandler;
  before(async () => {
    database = await freshDatabase('pglite');
    store = await createPostgresEventStore(database);
    handle = createCommandHandler(store, counterSchemas);
  });
  after(async () => {
    await store.close();
    await database.close();
  });

  it('loads, folds, decides and appends with the full metadata', async () => {
    await handle(counterDecider, 'counter-a', { type: 'Open', name: 'a' }, ctx);
    const r = await handle(counterDecider, 'counter-a', { type: 'Increment', by: 3 }, { ...ctx, now: '2026-01-02T03:04:05.000Z' });
    expect(r.state).to.deep.equal({ status: 'open', value: 3 });
    expect(r.append?.nextExpectedRevision).to.equal(1n);
    const [, inc] = await store.readStream('counter-a');
    expect(inc!.type).to.equal('CounterIncremented');
    expect(inc!.metadata).to.deep.include({
      request_id: 'req-1', ip: '127.0.0.1', project: 'default', correlation_id: 'req-1', causation_id: null,
      occurred_at: '2026-01-02T03:04:05.000Z', schema_version: 2,
    });
    expect(inc!.metadata.actor).to.deep.equal(ctx.actor);
  });

  it('surfaces a domain refusal and appends nothing', async () => {
    const before = await store.streamRevision('counter-a');
    try {
      await handle(counterDecider, 'counter-a', { type: 'Open', name: 'again' }, ctx);
      expect.fail('should have thrown');
    } catch (err) {
      expect((err as { code: string }).code).to.equal('COUNTER_EXISTS');
    }
    expect(await store.streamRevision('counter-a')).to.equal(before);
  });

  it('rejects a malformed event with INVALID_EVENT and writes none of the batch', async () => {
    const before = await store.streamRevision('counter-a');
    try {
      await handle(counterDecider, 'counter-a', { type: 'Corrupt' }, ctx);
      expect.fail('should have thrown');
    } catch (err) {
      expect((err as { code: string }).code).to.equal('INVALID_EVENT');
      expect((err as Error).message).to.match(/CounterIncremented is malformed: by/);
    }
    expect(await store.streamRevision('counter-a')).to.equal(before);
  });

  it('rejects an event type it has no schema for', async () => {
    const strict = createCommandHandler(store, { CounterOpened: counterSchemas.CounterOpened });
    await strict(counterDecider, 'counter-u', { type: 'Open', name: 'u' }, ctx);
    try {
      await strict(counterDecider, 'counter-u', { type: 'Increment', by: 1 }, ctx);
      expect.fail('should have thrown');
    } catch (err) {
      expect((err as { code: string }).code).to.equal('INVALID_EVENT');
      expect((err as Error).message).to.include('unknown event type CounterIncremented');
    }
    expect(await store.streamRevision('counter-u')).to.equal(0n);
  });

  it('answers a decision without events with no append', async () => {
    const r = await handle(counterDecider, 'counter-a', { type: 'Increment', by: 0 }, ctx);
    expect(r.append).to.equal(null);
  });

  it('refuses a stale expected revision with CONFLICT', async () => {
    try {
      await handle(counterDecider, 'counter-a', { type: 'Increment', by: 1 }, ctx, { expectedRevision: 0n });
      expect.fail('should have thrown');
    } catch (err) {
      expect((err as { code: string }).code).to.equal('CONFLICT');
    }
  });

  it('re-decides on a lost race so that concurrent increments all count', async () => {
    await handle(counterDecider, 'counter-race', { type: 'Open', name: 'race' }, ctx);
    await Promise.all(Array.from({ length: 10 }, () => handle(counterDecider, 'counter-race', { type: 'Increment', by: 1 }, ctx, { retries: 20 })));
    const events = await store.readStream('counter-race');
    const state = events.reduce((s, e) => counterDecider.evolve(s, e as never), counterDecider.initialState());
    expect(state).to.deep.equal({ status: 'open', value: 10 });
  });

  it('exactly one of two concurrent conflicting writes succeeds', async () => {
    const results = await Promise.allSettled([
      handle(counterDecider, 'counter-once', { type: 'Open', name: 'x' }, ctx),
      handle(counterDecider, 'counter-once', { type: 'Open', name: 'y' }, ctx),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).to.have.length(1);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(['COUNTER_EXISTS', 'CONFLICT']).to.include(rejected.reason.code);
    expect(await store.streamRevision('counter-once')).to.equal(0n);
  });
});
