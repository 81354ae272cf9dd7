// 500-event appends on one connection against raw 500-row multi-value INSERTs of the
// same rows on one connection (the bulk path: imports, replays into a new store).
import pg from 'pg';
import { openServerDatabase } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { EventStore, ExpectedRevision } from '../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import {
  alternate, benchEvents, fmt, median, RAW_EVENTS_DDL, rawInsertMany, rawParams, throughputFor,
  type BenchContext, type BenchRow,
} from './harness.ts';

const BATCH = 500;

export const appendBatch = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const ms = ctx.quick ? 1000 : 3000;
  const url = await ctx.freshDatabaseUrl('append_batch');
  const database = openServerDatabase({ url, poolSize: 1 });
  const raw = new pg.Client({ connectionString: url });
  let store: EventStore | null = null;
  try {
    await raw.connect();
    await migrateToLatest(database);
    await raw.query(RAW_EVENTS_DDL);
    store = await createPostgresEventStore(database);
    const s = store;
    const insertMany = rawInsertMany(BATCH);
    let seq = 0;

    const rawRound = (t: number) => throughputFor(t, 1, async () => {
      const events = benchEvents(BATCH, seq);
      seq += BATCH;
      await raw.query(insertMany, events.flatMap((e) => rawParams('raw-batch', e)));
      return BATCH;
    });
    // Each round appends to a stream of its own, with the exact expected revision.
    let streamNo = 0;
    const oursRound = (t: number) => {
      const stream = `batch-${streamNo++}`;
      let expected: ExpectedRevision = 'no_stream';
      return throughputFor(t, 1, async () => {
        const events = benchEvents(BATCH, seq);
        seq += BATCH;
        expected = (await s.append(stream, events, { expectedRevision: expected })).nextExpectedRevision;
        return BATCH;
      });
    };

    await rawRound(300);
    await oursRound(300);
    const rounds = await alternate(ctx.rounds, () => rawRound(ms), () => oursRound(ms), (r, b, o) =>
      ctx.log(`  round ${r + 1}/${ctx.rounds}: raw ${fmt(b)} ev/s, ours ${fmt(o)} ev/s (${(o / b).toFixed(2)})`));
    return [{
      bench: 'appendBatch', metric: `${BATCH}-event appends, 1 connection`, unit: 'events/s',
      baselineLabel: `raw ${BATCH}-row INSERT, 1 connection`,
      baseline: median(rounds.baseline), ours: median(rounds.ours), goal: { kind: 'atLeast', ratio: 0.7 }, rounds,
    }];
  } finally {
    await store?.close();
    await database.close();
    await raw.end().catch(() => undefined);
  }
};
