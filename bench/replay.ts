// Projection replay through the runtime (read a batch after the checkpoint, apply it with
// a multi-row insert, move the checkpoint, all in one transaction) against the physical
// limit: the same rows, already in memory, written with the same 500-row multi-value
// INSERTs, one transaction per batch, on one connection, into an identical table.
import { sql } from 'kysely';
import pg from 'pg';
import { openServerDatabase } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { Tables } from '../infra/db/tables.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import { createProjectionRuntime } from '../projections/projectionRuntime.ts';
import type { Projector } from '../projections/projector.ts';
import { alternate, benchEvents, fmt, median, timed, type BenchContext, type BenchRow } from './harness.ts';

const BATCH = 500;
const EVENT_TYPE = 'NodeSnapshotRecorded';

const readModelDdl = (table: string) => `create table ${table} (
  id uuid primary key,
  stream_id text not null,
  type text not null,
  value bigint not null
)`;

type ReadRow = { id: string; stream: string; type: string; value: number };

/**
 * The bench's read model: one row per event. Idempotent by event id, as DESIGN.md §4 asks.
 * It inserts a whole batch as four arrays through unnest(): four parameters however many
 * rows, so no 65,535-parameter limit and no per-row query building in Node.
 */
const benchRowsProjection: Projector = {
  name: 'bench_rows',
  version: 1,
  handles: [EVENT_TYPE],
  tables: ['bench_rows' as keyof Tables & string],
  async apply(trx, events) {
    await sql`insert into bench_rows (id, stream_id, type, value)
      select * from unnest(${events.map((e) => e.id)}::uuid[], ${events.map((e) => e.streamId)}::text[],
                           ${events.map((e) => e.type)}::text[], ${events.map((e) => Number(e.data['value']))}::bigint[])
      on conflict (id) do nothing`.execute(trx);
  },
};

const rawInsert = (rows: number): string =>
  `insert into bench_rows_raw (id, stream_id, type, value) values ${Array.from({ length: rows }, (_, i) =>
    `($${i * 4 + 1}, $${i * 4 + 2}, $${i * 4 + 3}, $${i * 4 + 4})`).join(', ')}`;

/** Appends `total` events in 500-event batches, two writers at once; returns the rows the read model should end up with. */
const fill = async (store: EventStore, total: number, streams: number): Promise<ReadRow[]> => {
  const rows: ReadRow[] = [];
  const batches = Math.ceil(total / BATCH);
  let next = 0;
  await Promise.all([0, 1].map(async () => {
    for (let b = next++; b < batches; b = next++) {
      const stream = `replay-${b % streams}`;
      const events = benchEvents(Math.min(BATCH, total - b * BATCH), b * BATCH);
      await store.append(stream, events, { expectedRevision: 'any' });
      for (const e of events) rows.push({ id: e.id, stream, type: e.type, value: Number(e.data['value']) });
    }
  }));
  return rows;
};

export const replay = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const total = ctx.quick ? 20_000 : 200_000;
  const url = await ctx.freshDatabaseUrl('replay');
  const database = openServerDatabase({ url, poolSize: 2 });
  const raw = new pg.Client({ connectionString: url });
  let store: EventStore | null = null;
  try {
    await raw.connect();
    await migrateToLatest(database);
    await raw.query(readModelDdl('bench_rows'));
    await raw.query(readModelDdl('bench_rows_raw'));
    store = await createPostgresEventStore(database);
    const runtime = createProjectionRuntime({ database, store, projectors: [benchRowsProjection], batchSize: BATCH });

    let rows: ReadRow[] = [];
    const fillMs = await timed(async () => {
      rows = await fill(store!, total, 2_000);
    });
    ctx.log(`  appended ${fmt(total)} events in ${fmt(fillMs)} ms (${fmt(total / (fillMs / 1000))} ev/s); vacuum analyze`);
    // A replay reads old, settled history: let the visibility map and statistics be what
    // autovacuum would have made them.
    await raw.query('vacuum analyze events');

    const insert = rawInsert(BATCH);
    const rawRound = async (): Promise<number> => {
      await raw.query('truncate bench_rows_raw');
      const ms = await timed(async () => {
        for (let i = 0; i < rows.length; i += BATCH) {
          const chunk = rows.slice(i, i + BATCH);
          await raw.query('begin');
          await raw.query(chunk.length === BATCH ? insert : rawInsert(chunk.length),
            chunk.flatMap((r) => [r.id, r.stream, r.type, r.value]));
          await raw.query('commit');
        }
      });
      return rows.length / (ms / 1000);
    };
    // The replay must deliver each event exactly once; the figure is rows in the read
    // model per second, and a failed check is reported next to it rather than hidden.
    const problems = new Set<string>();
    const oursRound = async (): Promise<number> => {
      let events = 0;
      const ms = await timed(async () => {
        events = (await runtime.replay(benchRowsProjection.name)).events;
      });
      const { rows: [count] } = await raw.query<{ n: string }>('select count(*)::text as n from bench_rows');
      const inModel = Number(count!.n);
      if (events !== total || inModel !== total) {
        const problem = `replay delivered ${fmt(events)} events (${fmt(total)} in the log) and left ${fmt(inModel)} rows in the read model`;
        ctx.log(`  CORRECTNESS: ${problem}`);
        problems.add(problem);
      }
      return inModel / (ms / 1000);
    };

    const rounds = await alternate(ctx.rounds, rawRound, oursRound, (r, b, o) =>
      ctx.log(`  round ${r + 1}/${ctx.rounds}: raw ${fmt(b)} rows/s, replay ${fmt(o)} rows/s (${(o / b).toFixed(2)})`));
    return [{
      bench: 'replay', metric: `projection replay of ${fmt(total)} events`, unit: 'rows/s',
      baselineLabel: `raw ${BATCH}-row INSERT, tx per batch`,
      baseline: median(rounds.baseline), ours: median(rounds.ours), goal: { kind: 'atLeast', ratio: 0.5 }, rounds,
      ...(problems.size > 0 ? { note: `replay is not exactly-once: ${[...problems].join('; ')}` } : {}),
    }];
  } finally {
    await store?.close();
    await database.close();
    await raw.end().catch(() => undefined);
  }
};
