// DESIGN.md §3, hot streams: an append must cost the same at a stream's 100,000th event as
// at its first. Sequential single-event appends (exact expected revision) to a stream
// that already holds 100k events, against the same appends to a fresh, empty stream in
// the same database, alternating round by round.
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import { openServerDatabase } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { EventStore, ExpectedRevision } from '../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import { alternate, benchEvent, benchEvents, fmt, median, percentile, timed, type BenchContext, type BenchRow } from './harness.ts';

const FILL_BATCH = 500;
const HOT = 'node-hot';

type Latencies = { p50: number; p99: number };

export const appendLatency = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const hotSize = ctx.quick ? 10_000 : 100_000;
  const appends = ctx.quick ? 100 : 500;
  const url = await ctx.freshDatabaseUrl('append_latency');
  const database = openServerDatabase({ url, poolSize: 1 });
  let store: EventStore | null = null;
  try {
    await migrateToLatest(database);
    store = await createPostgresEventStore(database);
    const s = store;

    let hotRevision: ExpectedRevision = 'no_stream';
    let seq = 0;
    const fillMs = await timed(async () => {
      for (let n = 0; n < hotSize; n += FILL_BATCH) {
        hotRevision = (await s.append(HOT, benchEvents(FILL_BATCH, seq), { expectedRevision: hotRevision })).nextExpectedRevision;
        seq += FILL_BATCH;
      }
    });
    ctx.log(`  filled ${HOT} with ${fmt(hotSize)} events in ${fmt(fillMs)} ms; analyze events`);
    // Steady state: autovacuum would have analysed a table that grew this much.
    await sql`analyze events`.execute(database.db);

    /** `appends` sequential single-event appends to `stream`; returns the expected revision after them and the latencies. */
    const run = async (stream: string, from: ExpectedRevision): Promise<{ next: ExpectedRevision; lat: Latencies }> => {
      const samples: number[] = [];
      let expected = from;
      for (let i = 0; i < appends; i++) {
        const e = benchEvent(seq++);
        const t0 = performance.now();
        expected = (await s.append(stream, [e], { expectedRevision: expected })).nextExpectedRevision;
        samples.push(performance.now() - t0);
      }
      return { next: expected, lat: { p50: percentile(samples, 50), p99: percentile(samples, 99) } };
    };

    // Warm up: the connection's plan cache for opl_append, on both kinds of stream.
    await run('fresh-warmup', 'no_stream');
    hotRevision = (await run(HOT, hotRevision)).next;

    const rounds = await alternate(
      ctx.rounds,
      async (r) => (await run(`fresh-${r}`, 'no_stream')).lat,
      async () => {
        const { next, lat } = await run(HOT, hotRevision);
        hotRevision = next;
        return lat;
      },
      (r, b, o) => ctx.log(`  round ${r + 1}/${ctx.rounds}: fresh p50 ${b.p50.toFixed(2)} / p99 ${b.p99.toFixed(2)} ms, ` +
        `hot p50 ${o.p50.toFixed(2)} / p99 ${o.p99.toFixed(2)} ms`),
    );
    const pick = (k: keyof Latencies) => ({ baseline: rounds.baseline.map((l) => l[k]), ours: rounds.ours.map((l) => l[k]) });
    const row = (k: keyof Latencies, goal: BenchRow['goal']): BenchRow => {
      const r = pick(k);
      return {
        bench: 'appendLatency', metric: `${k} append latency, stream of ${fmt(hotSize)} events`, unit: 'ms',
        baselineLabel: 'same, fresh empty stream', baseline: median(r.baseline), ours: median(r.ours), goal, rounds: r,
      };
    };
    return [row('p50', { kind: 'atMost', ratio: 1.2 }), row('p99', { kind: 'info' })];
  } finally {
    await store?.close();
    await database.close();
  }
};
