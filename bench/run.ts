// `npm run bench [-- FILTER…]`: the kernel benchmarks, each against a baseline measured in
// the same run on the same throwaway PostgreSQL server (fsync on). Every benchmark gets
// a fresh database; the server is stopped at the end, also on errors and Ctrl-C.
//   FILTER       run only benchmarks whose name contains it (case-insensitive), e.g. `append`
//   BENCH_QUICK=1  reduced sizes and 2 rounds: a smoke run, not figures to quote
//   BENCH_ROUNDS=n override the number of alternating rounds (default 5, quick 2)
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { createDatabase, startPostgresServer, type PostgresServer } from '../test/support/postgresServer.ts';
import { apiCommand, apiRead, livePush } from './api.ts';
import { appendBatch } from './appendBatch.ts';
import { appendLatency } from './appendLatency.ts';
import { appendSingle, appendSinglePglite } from './appendSingle.ts';
import { fmt, passes, ratioOf, type Benchmark, type BenchContext, type BenchRow } from './harness.ts';
import { jobFanout } from './jobs.ts';
import { proxyApply } from './proxies.ts';
import { historyPage, poller, snapshotDepth, snapshotPush, uptimeYear } from './monitoring.ts';
import { replay } from './replay.ts';

const benchmarks: Benchmark[] = [
  { name: 'appendSingle', needsServer: true, run: appendSingle },
  { name: 'appendBatch', needsServer: true, run: appendBatch },
  { name: 'replay', needsServer: true, run: replay },
  { name: 'appendLatency', needsServer: true, run: appendLatency },
  { name: 'appendSinglePglite', needsServer: false, run: appendSinglePglite },
  { name: 'apiRead', needsServer: false, run: apiRead },
  { name: 'apiCommand', needsServer: true, run: apiCommand },
  { name: 'livePush', needsServer: false, run: livePush },
  { name: 'snapshotPush', needsServer: true, run: snapshotPush },
  { name: 'snapshotDepth', needsServer: true, run: snapshotDepth },
  { name: 'uptimeYear', needsServer: true, run: uptimeYear },
  { name: 'historyPage', needsServer: true, run: historyPage },
  { name: 'poller', needsServer: true, run: poller },
  { name: 'jobFanout', needsServer: false, run: jobFanout },
  { name: 'proxyApply', needsServer: false, run: proxyApply },
];

const filters = process.argv.slice(2).map((f) => f.toLowerCase());
const selected = benchmarks.filter((b) => filters.length === 0 || filters.some((f) => b.name.toLowerCase().includes(f)));
const quick = /^(1|true|yes)$/i.test(process.env['BENCH_QUICK'] ?? '');
const rounds = Number(process.env['BENCH_ROUNDS'] ?? (quick ? 2 : 5));
if (!Number.isInteger(rounds) || rounds < 1) {
  process.stderr.write(`BENCH_ROUNDS must be a positive integer, got ${process.env['BENCH_ROUNDS']}\n`);
  process.exit(2);
}

const log = (message: string) => process.stderr.write(`${message}\n`);

let server: PostgresServer | null = null;
let starting: Promise<PostgresServer> | null = null;
const stopServer = () => {
  try {
    server?.stop();
  } catch (err) {
    log(`could not stop the PostgreSQL server: ${(err as Error).message}`);
  }
  server = null;
};
process.on('exit', stopServer);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`\n${signal}: stopping the PostgreSQL server`);
    stopServer();
    process.exit(130);
  });
}

const ctx: BenchContext = {
  quick,
  rounds,
  server: () => (starting ??= startPostgresServer({ fsync: true }).then((s) => (server = s))),
  async freshDatabaseUrl(name) {
    return createDatabase(await ctx.server(), `bench_${name}`);
  },
  log,
};

const goalText = (row: BenchRow): string => {
  switch (row.goal.kind) {
    case 'atLeast': return `≥ ${row.goal.ratio}×`;
    case 'atMost': return `≤ ${row.goal.ratio}×`;
    case 'info': return 'info';
    default: { const _never: never = row.goal; return String(_never); }
  }
};
const verdict = (row: BenchRow): string => {
  const p = passes(row);
  return p === null ? '—' : p ? 'PASS' : 'MISS';
};
const figure = (row: BenchRow, n: number) => `${row.unit === 'ms' ? n.toFixed(2) : fmt(n)} ${row.unit}`;

const serverVersion = async (): Promise<string> => {
  if (!server) return 'not started';
  const client = new pg.Client({ connectionString: server.url() });
  await client.connect();
  try {
    const { rows } = await client.query<{ v: string }>("select current_setting('server_version') as v");
    return `PostgreSQL ${rows[0]!.v}`;
  } finally {
    await client.end();
  }
};

const main = async (): Promise<number> => {
  if (selected.length === 0) {
    log(`no benchmark matches ${filters.join(', ')}; known: ${benchmarks.map((b) => b.name).join(', ')}`);
    return 2;
  }
  log(`benchmarks: ${selected.map((b) => b.name).join(', ')} — ${rounds} alternating rounds${quick ? ', QUICK (smoke run)' : ''}`);
  const results: BenchRow[] = [];
  const started = performance.now();
  try {
    if (selected.some((b) => b.needsServer)) {
      await ctx.server();
      log(`PostgreSQL on 127.0.0.1:${server!.port} (fsync on)`);
    }
    for (const b of selected) {
      log(`\n▶ ${b.name}`);
      const t0 = performance.now();
      const rows = await b.run(ctx);
      results.push(...rows);
      for (const r of rows) {
        log(`  ${r.metric}: ${figure(r, r.ours)} vs ${figure(r, r.baseline)} (${r.baselineLabel}) = ${ratioOf(r).toFixed(2)}× [goal ${goalText(r)}] ${verdict(r)}`);
      }
      log(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    const version = await serverVersion();
    const total = (performance.now() - started) / 1000;

    const header = ['Benchmark', 'Metric', 'Baseline (same run)', 'Baseline', 'Opsledger', 'Ratio', 'Goal', 'Result'];
    const lines = results.map((r) => [
      r.bench, r.metric, r.baselineLabel, figure(r, r.baseline), figure(r, r.ours), `${ratioOf(r).toFixed(2)}×`, goalText(r), verdict(r),
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
    const row = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
    const out = [
      '',
      `Kernel benchmarks — ${new Date().toISOString().slice(0, 10)}, ${version} (fsync on) and PGlite, Node ${process.version}, ` +
        `${cpus().length} cores; medians of ${rounds} alternating rounds${quick ? ' (BENCH_QUICK: smoke run, reduced sizes)' : ''}; ` +
        `total ${total.toFixed(0)} s.`,
      '',
      row(header),
      `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
      ...lines.map(row),
      '',
      ...results.filter((r) => r.note).map((r) => `- **${r.bench}**: ${r.note}`),
      '',
    ];
    process.stdout.write(out.join('\n'));
    return 0;
  } finally {
    stopServer();
  }
};

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    stopServer();
    process.exit(1);
  },
);
