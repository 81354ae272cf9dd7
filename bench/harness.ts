// What every benchmark shares: the context run.ts hands it, the result rows it returns,
// alternating rounds and the statistics. The machine is shared and noisy, so a figure is
// only ever compared with a baseline measured in the same run, round by round.
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { NewEvent } from '../infra/eventStore/eventStore.ts';
import type { PostgresServer } from '../test/support/postgresServer.ts';

export type Goal =
  | { kind: 'atLeast'; ratio: number } // ours / baseline must be >= ratio (throughput)
  | { kind: 'atMost'; ratio: number } // ours / baseline must be <= ratio (latency)
  | { kind: 'info' };

export type BenchRow = {
  bench: string;
  metric: string;
  unit: string;
  baselineLabel: string;
  /** Medians over the rounds. */
  baseline: number;
  ours: number;
  goal: Goal;
  rounds: { baseline: number[]; ours: number[] };
  /** Printed under the table: anything that makes the figure suspect (e.g. a correctness check that failed). */
  note?: string;
};

export type BenchContext = {
  quick: boolean;
  rounds: number;
  /** The shared throwaway server (started on first use). */
  server(): Promise<PostgresServer>;
  /** URL of a fresh, empty database on the server, named after the benchmark. */
  freshDatabaseUrl(name: string): Promise<string>;
  log(message: string): void;
};

export type Benchmark = { name: string; needsServer: boolean; run(ctx: BenchContext): Promise<BenchRow[]> };

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Nearest-rank percentile (p in 0..100). */
export const percentile = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
};

export const ratioOf = (row: Pick<BenchRow, 'baseline' | 'ours'>): number => row.ours / row.baseline;

export const passes = (row: BenchRow): boolean | null => {
  const r = ratioOf(row);
  switch (row.goal.kind) {
    case 'atLeast': return r >= row.goal.ratio;
    case 'atMost': return r <= row.goal.ratio;
    case 'info': return null;
    default: { const _never: never = row.goal; throw new Error(`unknown goal ${String(_never)}`); }
  }
};

/**
 * Runs baseline, ours, baseline, ours, … for `rounds` rounds; each call returns one
 * round's figure. Alternating spreads the machine's noise over both sides alike.
 */
export const alternate = async <T>(
  rounds: number,
  baseline: (round: number) => Promise<T>,
  ours: (round: number) => Promise<T>,
  log?: (round: number, b: T, o: T) => void,
): Promise<{ baseline: T[]; ours: T[] }> => {
  const out = { baseline: [] as T[], ours: [] as T[] };
  for (let r = 0; r < rounds; r++) {
    const b = await baseline(r);
    const o = await ours(r);
    out.baseline.push(b);
    out.ours.push(o);
    log?.(r, b, o);
  }
  return out;
};

/**
 * `workers` loops each call `op` until `ms` have passed; `op` returns how many units it
 * did. Returns units per second over the real elapsed time (the last calls overrun).
 */
export const throughputFor = async (ms: number, workers: number, op: (worker: number) => Promise<number>): Promise<number> => {
  const start = performance.now();
  const deadline = start + ms;
  let units = 0;
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    while (performance.now() < deadline) units += await op(w);
  }));
  return units / ((performance.now() - start) / 1000);
};

export const timed = async (fn: () => Promise<unknown>): Promise<number> => {
  const start = performance.now();
  await fn();
  return performance.now() - start;
};

// A realistic small event: a node snapshot-like payload and the full metadata shape of
// DESIGN.md §3 (≈ 350 bytes of JSON together). Raw baselines store the same JSON text.
const metadataOf = () => ({
  actor: { user_id: '5b1e9a8e-0c1f-4c5e-9a51-3f0d1c2b7e11', username: 'bench' },
  request_id: 'req-0123456789',
  ip: '127.0.0.1',
  project: 'bench',
  correlation_id: null,
  causation_id: null,
  occurred_at: new Date().toISOString(),
  schema_version: 1,
});

export const benchEvent = (seq: number): NewEvent => ({
  id: randomUUID(),
  type: 'NodeSnapshotRecorded',
  data: { node_id: 'node-0017', seq, value: seq % 1000, status: 'ok', load: [0.42, 0.37, 0.31], latency_ms: 12.5 },
  metadata: metadataOf(),
});

export const benchEvents = (n: number, firstSeq = 0): NewEvent[] => Array.from({ length: n }, (_, i) => benchEvent(firstSeq + i));

/** The raw baselines' table: the same columns an event row carries, with a uuid primary key. */
export const RAW_EVENTS_DDL = `create table raw_events (
  id uuid primary key,
  stream_id text not null,
  type text not null,
  data jsonb not null,
  metadata jsonb not null,
  created_at timestamptz not null default now()
)`;

export const RAW_INSERT_ONE = 'insert into raw_events (id, stream_id, type, data, metadata) values ($1, $2, $3, $4::jsonb, $5::jsonb)';

/** A multi-value INSERT of `rows` rows into raw_events, numbered parameters. */
export const rawInsertMany = (rows: number): string =>
  `insert into raw_events (id, stream_id, type, data, metadata) values ${Array.from({ length: rows }, (_, i) => {
    const p = i * 5;
    return `($${p + 1}, $${p + 2}, $${p + 3}, $${p + 4}::jsonb, $${p + 5}::jsonb)`;
  }).join(', ')}`;

export const rawParams = (stream: string, e: NewEvent): unknown[] =>
  [e.id, stream, e.type, JSON.stringify(e.data), JSON.stringify(e.metadata)];

export const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : String(n);
