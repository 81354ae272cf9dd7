// Single-event appends from 8 concurrent writers, each on its own stream with the exact
// expected revision, against the physical limit: autocommit single-row INSERTs of the
// same row into a plain table from 8 concurrent clients on the same server.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openEmbeddedDatabase, openServerDatabase } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { EventStore, ExpectedRevision } from '../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import {
  alternate, benchEvent, fmt, median, RAW_EVENTS_DDL, RAW_INSERT_ONE, rawParams, throughputFor,
  type BenchContext, type BenchRow,
} from './harness.ts';

const WRITERS = 8;

/** One round of `ms` milliseconds; returns events/s. */
type Side = (ms: number) => Promise<number>;

/** 8 writers appending one event at a time to their own streams; events/s for one round. */
const oursSide = (store: EventStore, tag: string): Side => {
  const expected: ExpectedRevision[] = Array.from({ length: WRITERS }, () => 'no_stream');
  let seq = 0;
  return (ms) => throughputFor(ms, WRITERS, async (w) => {
    const r = await store.append(`${tag}-writer-${w}`, [benchEvent(seq++)], { expectedRevision: expected[w]! });
    expected[w] = r.nextExpectedRevision;
    return 1;
  });
};

const rawSide = (insert: (params: unknown[]) => Promise<unknown>, tag: string): Side => {
  let seq = 0;
  return (ms) => throughputFor(ms, WRITERS, async (w) => {
    await insert(rawParams(`${tag}-raw-${w}`, benchEvent(seq++)));
    return 1;
  });
};

const measure = async (
  ctx: BenchContext, bench: string, baselineLabel: string, ms: number,
  baseline: Side, ours: Side,
): Promise<BenchRow> => {
  // Warm up both sides (connections, plan caches) before anything is counted.
  await baseline(300);
  await ours(300);
  const rounds = await alternate(ctx.rounds, () => baseline(ms), () => ours(ms), (r, b, o) =>
    ctx.log(`  round ${r + 1}/${ctx.rounds}: raw ${fmt(b)} ev/s, ours ${fmt(o)} ev/s (${(o / b).toFixed(2)})`));
  return {
    bench, metric: `single-event appends, ${WRITERS} writers`, unit: 'events/s', baselineLabel,
    baseline: median(rounds.baseline), ours: median(rounds.ours), goal: bench === 'appendSingle' ? { kind: 'atLeast', ratio: 0.7 } : { kind: 'info' },
    rounds,
  };
};

export const appendSingle = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const ms = ctx.quick ? 1000 : 3000;
  const url = await ctx.freshDatabaseUrl('append_single');
  const database = openServerDatabase({ url, poolSize: WRITERS });
  const rawPool = new pg.Pool({ connectionString: url, max: WRITERS });
  rawPool.on('error', () => undefined);
  let store: EventStore | null = null;
  try {
    await migrateToLatest(database);
    await rawPool.query(RAW_EVENTS_DDL);
    store = await createPostgresEventStore(database);
    const row = await measure(ctx, 'appendSingle', `raw INSERT, ${WRITERS} clients`, ms,
      rawSide((p) => rawPool.query(RAW_INSERT_ONE, p), 's'),
      oursSide(store, 's'));
    return [row];
  } finally {
    await store?.close();
    await database.close();
    await rawPool.end();
  }
};

/** The same measurement on embedded PGlite (one connection: the 8 writers queue), for information. */
export const appendSinglePglite = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const ms = ctx.quick ? 1000 : 2000;
  const dir = mkdtempSync(join(tmpdir(), 'opl-bench-pglite-'));
  let database: Awaited<ReturnType<typeof openEmbeddedDatabase>> | null = null;
  let store: EventStore | null = null;
  try {
    ctx.log('  creating PGlite data directory (initdb in WASM takes a few seconds)');
    database = await openEmbeddedDatabase({ dataDir: join(dir, 'data') });
    const { pglite } = database;
    await migrateToLatest(database);
    await pglite.exec(RAW_EVENTS_DDL);
    store = await createPostgresEventStore(database);
    const row = await measure(ctx, 'appendSinglePglite', 'raw INSERT into PGlite', ms,
      rawSide((p) => pglite.query(RAW_INSERT_ONE, p), 'p'),
      oursSide(store, 'p'));
    return [row];
  } finally {
    await store?.close();
    await database?.close();
    rmSync(dir, { recursive: true, force: true });
  }
};
