// Monitoring benchmarks (SPEC §5, DESIGN §3 hot streams and §4 rollups). Each figure is
// measured beside a baseline from the same run, in alternating rounds, and reported as
// medians. The app runs as a CHILD process (`opsledger serve`, as in bench/api.ts) so that
// the load generator never shares its event loop.
//   snapshotPush   POST /nodes/{one of 50}/snapshots under wrk -t2 -c50: 2xx snapshots/s and p99, vs the express
//                  hello world with the same wrk settings; on embedded PGlite and on the PostgreSQL server
//   snapshotDepth  sequential POST /nodes/{id}/snapshots at a node's ~100,000th snapshot vs at another's ~100th
//                  (PostgreSQL server): a hot stream must cost the same at any length
//   uptimeYear     GET /statistics/uptime over 365 d vs over 24 h for a node with one snapshot a minute for a
//                  year (525,600); and how fast the monitoring projection built the rollups from them
//   historyPage    GET /nodes/{id}/history?limit=100 (first page, and a page reached via a cursor 80% deep) at a
//                  node with 1,000,000 snapshots vs one with 1,000
//   poller         10,000 HTTP checks by the real poller (runOnce, concurrency 50, every outcome recorded through
//                  the snapshot group commit on PostgreSQL) vs a bare fetch loop with the same concurrency
//
// Seeding: snapshots are appended through the event store itself (single-stream appends of
// 2,000 events), each one decided by decideSnapshot and wrapped by toNewEvents exactly as
// the push path does it, so the projection sees events the app could have written.
// uptimeYear and historyPage register their nodes through the API, stop the app, seed,
// and start it again: the catch-up then runs alone and can be timed.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql } from 'kysely';
import pg from 'pg';
import { monitoringEventSchemas } from '../commands/monitoringSchemas.ts';
import { recordSnapshot, type NodeRef } from '../commands/nodes.ts';
import { toNewEvents } from '../commands/handleCommand.ts';
import { createSnapshotRecorder } from '../commands/snapshotRecorder.ts';
import { decideSnapshot, snapshotStream, type Check, type SnapshotStatus } from '../domain/monitoring.ts';
import { openServerDatabase } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { EventStore, NewEvent } from '../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import { createPoller, type PolledSnapshot, type PollTarget } from '../workers/poller.ts';
import {
  BASELINE_LABEL, roundsOf, spawnChild, startApp, startHello, WRK_CONNECTIONS, WRK_THREADS, wrkSeconds, type App,
  LUA_PER_THREAD_SEED, runWrk, type WrkResult,
} from './api.ts';
import { alternate, fmt, median, percentile, timed, type BenchContext, type BenchRow } from './harness.ts';

const API = '/api/v1';
const MINUTE = 60_000;
const PROJECT = 'default';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const iso = (ms: number) => new Date(ms).toISOString();
const ms2 = (n: number) => `${n.toFixed(2)} ms`;

// ---- talking to the app ------------------------------------------------------------------------

type Answer = { status: number; body: unknown; ms: number };

/**
 * fetch, and for a GET one retry when the socket was closed under it: after a pause longer
 * than the server's keep-alive timeout (a wrk round) undici may reuse a connection the
 * server is just closing. Only idempotent requests are retried; measured loops never idle.
 */
const fetchOnce = async (url: string, init: RequestInit = {}): Promise<Response> => {
  try {
    return await fetch(url, init);
  } catch (err) {
    const code = (err as { cause?: { code?: string } }).cause?.code;
    if ((init.method ?? 'GET') !== 'GET' || (code !== 'UND_ERR_SOCKET' && code !== 'ECONNRESET')) throw err;
    return fetch(url, init);
  }
};

/** One request, body read; `ms` is the whole round trip. */
const call = async (app: App, method: 'GET' | 'POST', path: string, body?: unknown): Promise<Answer> => {
  const headers: Record<string, string> = { authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const t0 = performance.now();
  const res = await fetchOnce(`${app.url}${API}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  const ms = performance.now() - t0;
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* not JSON: kept as text for the error message */ }
  return { status: res.status, body: parsed, ms };
};

const expectStatus = (a: Answer, status: number, what: string): Answer => {
  if (a.status !== status) throw new Error(`${what} answered ${a.status} (expected ${status}): ${JSON.stringify(a.body).slice(0, 500)}`);
  return a;
};

/**
 * A push node, registered through the API. `intervalS` 3600 for every node here: a push
 * node silent for 2 × its interval gets a `down` from the app's poller, which would add
 * snapshots of its own while a benchmark runs (or while a long catch-up is still behind).
 * Seeded snapshots a minute apart are credited in full either way (a gap counts up to 2 × the interval).
 */
const registerPushNode = async (app: App, name: string): Promise<string> => {
  const a = expectStatus(await call(app, 'POST', '/nodes', { name, address: '127.0.0.1', check: { type: 'push', interval_s: 3600 } }), 201, `POST /nodes ${name}`);
  return (a.body as { id: string }).id;
};

type HistoryPage = { items: { revision: string; observed_at: string }[]; next_cursor: string | null };

const history = async (app: App, nodeId: string, query: string): Promise<Answer & { page: HistoryPage }> => {
  const a = expectStatus(await call(app, 'GET', `/nodes/${nodeId}/history?${query}`), 200, `GET /nodes/${nodeId}/history?${query}`);
  return { ...a, page: a.body as HistoryPage };
};

/** The newest snapshot revision in the node's history read model (-1: none yet). */
const newestProjected = async (app: App, nodeId: string): Promise<number> =>
  Number((await history(app, nodeId, 'limit=1')).page.items[0]?.revision ?? -1);

/**
 * Polls the history read model until each node's newest projected revision reaches
 * `last` (the projection applies a stream in revision order, and the seeded observed_at
 * grow with the revision). Returns the events projected while it watched and how long that took.
 */
const waitForProjection = async (
  ctx: BenchContext, app: App, nodes: { id: string; last: number }[], label: string,
): Promise<{ seenEvents: number; seenMs: number }> => {
  const total = nodes.reduce((s, n) => s + n.last + 1, 0);
  const progress = async () => (await Promise.all(nodes.map(async (n) => Math.min(n.last, await newestProjected(app, n.id)) + 1))).reduce((a, b) => a + b, 0);
  const t0 = performance.now();
  const first = await progress();
  let done = first;
  let lastLog = t0;
  const deadline = t0 + 30 * MINUTE;
  while (done < total) {
    if (performance.now() > deadline) throw new Error(`${label}: the projection did not catch up within 30 min (${fmt(done)}/${fmt(total)})`);
    await sleep(250);
    done = await progress();
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      const s = (lastLog - t0) / 1000;
      ctx.log(`  ${label}: projected ${fmt(done)}/${fmt(total)} snapshots (${fmt((done - first) / s)}/s so far)`);
    }
  }
  return { seenEvents: total - first, seenMs: performance.now() - t0 };
};

/** Each projection's backlog as /health/detailed reports it (events after its checkpoint, counted up to 100,001). */
const projectionLag = async (app: { url: string }): Promise<string> => {
  const res = await fetchOnce(`${app.url}/health/detailed`);
  const body = await res.json() as { projections?: { name: string; lag_events: number | null }[] };
  return (body.projections ?? []).map((p) => `${p.name} ${p.lag_events === null ? '?' : fmt(p.lag_events)}`).join(', ') || 'not reported';
};

/** Steady state before measuring: autovacuum would have analysed tables that grew this much. */
const analyze = async (url: string) => {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('analyze');
  } finally {
    await client.end();
  }
};

// ---- seeding -----------------------------------------------------------------------------------

const SEED_BATCH = 2000;
const SEED_ACTOR = { user_id: null, username: 'bench-seed', token_id: null };

/** One day's outage of a few minutes, at a different time each day, and a two-hour one every quarter. */
const outagePattern = (i: number): SnapshotStatus => {
  const day = Math.floor(i / 1440);
  const minute = i % 1440;
  const start = (day * 7919 + 311) % 1400;
  const length = 3 + ((day * 13) % 12);
  if (minute >= start && minute < start + length) return 'down';
  if (day % 91 === 45 && minute >= 600 && minute < 720) return 'down';
  return 'up';
};

/**
 * `count` snapshots on the node's snapshot stream, one a minute, the last at `endMs`;
 * each decided and wrapped as the push path does. The next batch is built while the
 * previous one is written. Returns the time it took.
 */
const seedSnapshots = async (
  ctx: BenchContext, store: EventStore, node: { id: string; name: string }, count: number,
  opts: { endMs: number; statusOf?: (i: number) => SnapshotStatus; label: string },
): Promise<number> => {
  const target = { nodeId: node.id, name: node.name, decommissioned: false };
  const startMs = opts.endMs - (count - 1) * MINUTE;
  const nowIso = iso(Date.now());
  const stream = snapshotStream(node.id);
  const build = (from: number, to: number): NewEvent[] => {
    const out: NewEvent[] = [];
    for (let i = from; i < to; i++) {
      const status = opts.statusOf?.(i) ?? 'up';
      const observedAt = iso(startMs + i * MINUTE);
      const event = decideSnapshot(target, node.id, {
        data: {
          status, latencyMs: status === 'up' ? 8 + (i % 9) : null, version: '1.4.2', metrics: { wraps: i % 7 },
          observedAt, source: 'push', error: status === 'up' ? null : 'connection refused',
        },
        metadata: { now: nowIso },
      });
      out.push(...toNewEvents([event], monitoringEventSchemas, { actor: SEED_ACTOR, ip: '127.0.0.1', project: PROJECT, now: observedAt }));
    }
    return out;
  };
  const t0 = performance.now();
  let writing: Promise<unknown> = Promise.resolve();
  let nextLog = count / 4;
  for (let from = 0; from < count; from += SEED_BATCH) {
    const events = build(from, Math.min(count, from + SEED_BATCH));
    await writing;
    writing = store.append(stream, events, { expectedRevision: 'any' });
    if (from >= nextLog) {
      while (nextLog <= from) nextLog += count / 4;
      ctx.log(`  ${opts.label}: seeded ${fmt(from)}/${fmt(count)} snapshots of ${node.name}`);
    }
  }
  await writing;
  const ms = performance.now() - t0;
  ctx.log(`  ${opts.label}: seeded ${fmt(count)} snapshots of ${node.name} in ${(ms / 1000).toFixed(1)} s (${fmt(count / (ms / 1000))}/s)`);
  return ms;
};

/** Opens the database in this process, seeds, closes: the app is stopped meanwhile (or keeps running: both work). */
const withStore = async <T>(url: string, fn: (store: EventStore) => Promise<T>): Promise<T> => {
  const database = openServerDatabase({ url, poolSize: 2 });
  let store: EventStore | null = null;
  try {
    store = await createPostgresEventStore(database);
    return await fn(store);
  } finally {
    await store?.close();
    await database.close();
  }
};

/** Sequential requests; returns their round-trip times. */
const sequential = async (n: number, op: (i: number) => Promise<Answer>): Promise<number[]> => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await op(i)).ms);
  return out;
};

/** wrk with its latency distribution: every run here reports a p99. */
type WrkRun = WrkResult & { p99Ms: number };
const latencyWrk = (url: string, seconds: number, script?: string): WrkRun => {
  const r = runWrk(url, seconds, { latency: true, ...(script ? { script } : {}) });
  return { ...r, p99Ms: r.p99Ms! };
};

// ---- snapshotPush ------------------------------------------------------------------------------

const PUSH_NODES = 50;
const PUSH_BODY = '{"status":"up","latency_ms":12,"metrics":{"wraps":3}}';

const pushScript = (dir: string, token: string, ids: string[]): string => {
  const path = join(dir, 'push.lua');
  writeFileSync(path, `-- POST ${PUSH_BODY} to /api/v1/nodes/<one of ${ids.length} push nodes, at random>/snapshots
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer ${token}"
wrk.body = '${PUSH_BODY}'
local ids = { ${ids.map((id) => `"${id}"`).join(', ')} }
${LUA_PER_THREAD_SEED}
request = function()
  return wrk.format(nil, "/api/v1/nodes/" .. ids[math.random(1, #ids)] .. "/snapshots")
end
`);
  return path;
};

/** One flavour: 50 push nodes, then wrk pushing snapshots at random ones, alternating with hello world. */
const pushFlavour = async (ctx: BenchContext, flavour: string, env: Record<string, string>, url: string | null): Promise<BenchRow[]> => {
  const app = await startApp(env);
  const dir = mkdtempSync(join(tmpdir(), 'opsledger-bench-push-'));
  try {
    const run = randomUUID().slice(0, 6);
    const ids: string[] = [];
    for (let i = 0; i < PUSH_NODES; i++) ids.push(await registerPushNode(app, `push-${run}-${i}`));
    expectStatus(await call(app, 'POST', `/nodes/${ids[0]}/snapshots`, JSON.parse(PUSH_BODY)), 202, 'POST /nodes/{id}/snapshots');
    const script = pushScript(dir, app.token, ids);
    const hello = await startHello();
    const all: WrkRun[] = [];
    let r: { baseline: WrkRun[]; ours: WrkRun[] };
    try {
      latencyWrk(`${hello.url}/`, 1);
      all.push(latencyWrk(app.url, 1, script));
      r = await alternate(roundsOf(ctx),
        async () => latencyWrk(`${hello.url}/`, wrkSeconds(ctx)),
        async () => {
          const o = latencyWrk(app.url, wrkSeconds(ctx), script);
          all.push(o);
          return o;
        },
        (i, b, o) => ctx.log(`  snapshotPush (${flavour}) round ${i + 1}: hello ${fmt(b.rps)} req/s p99 ${ms2(b.p99Ms)}; ` +
          `ours ${fmt(o.okRps)} 2xx/s p99 ${ms2(o.p99Ms)} (non-2xx ${o.non2xx}/${o.requests})${o.socketErrors ? `, ${o.socketErrors}` : ''}`));
    } finally {
      await hello.stop();
    }
    const lag = await projectionLag(app);
    // wrk leaves out of `requests` (and of its latency figures) what it gave up on after 2 s: reported beside them.
    const socketErrors = r.ours.map((x) => x.socketErrors).filter((x): x is string => x !== null);
    const non2xx = r.ours.reduce((a, x) => a + x.non2xx, 0);
    const total = r.ours.reduce((a, x) => a + x.requests, 0);
    // Every 2xx wrk counted must be stored (wrk does not count answers still in flight at its end, so stored ≥ counted).
    const counted2xx = all.reduce((a, x) => a + x.requests - x.non2xx, 0) + 1;
    let stored = '';
    if (url) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const { rows } = await client.query<{ n: string }>("select count(*)::text as n from events where type = 'SnapshotRecorded'");
        stored = `; ${fmt(Number(rows[0]!.n))} SnapshotRecorded events stored for ${fmt(counted2xx)} 2xx answers counted by wrk`;
        if (Number(rows[0]!.n) < counted2xx) stored += ' — FEWER STORED THAN ANSWERED';
      } finally {
        await client.end();
      }
    }
    const newest = await history(app, ids[0]!, 'limit=1');
    if (newest.page.items.length === 0) throw new Error(`no snapshot in the history of ${ids[0]} after the rounds`);
    const base = {
      bench: 'snapshotPush', baselineLabel: BASELINE_LABEL,
    };
    return [
      {
        ...base, metric: `POST /nodes/{one of ${PUSH_NODES}}/snapshots, ${flavour} (wrk -t${WRK_THREADS} -c${WRK_CONNECTIONS}), 2xx snapshots/s`, unit: 'req/s',
        baseline: median(r.baseline.map((x) => x.rps)), ours: median(r.ours.map((x) => x.okRps)), goal: { kind: 'atLeast', ratio: 0.3 },
        rounds: { baseline: r.baseline.map((x) => x.rps), ours: r.ours.map((x) => x.okRps) },
        note: `${flavour}: wrk Non-2xx ${non2xx} of ${fmt(total)} requests${stored}; projections' lag right after the last round: ${lag}` +
          `${socketErrors.length > 0 ? `; wrk ${socketErrors.join(' / ')} (timeouts are requests unanswered after 2 s, counted nowhere else)` : ''}`,
      },
      {
        ...base, metric: `the same, p99 latency (wrk --latency), ${flavour}`, unit: 'ms',
        baseline: median(r.baseline.map((x) => x.p99Ms)), ours: median(r.ours.map((x) => x.p99Ms)), goal: { kind: 'info' },
        rounds: { baseline: r.baseline.map((x) => x.p99Ms), ours: r.ours.map((x) => x.p99Ms) },
      },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await app.stop();
  }
};

export const snapshotPush = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const embedded = await pushFlavour(ctx, 'embedded PGlite', {}, null);
  const url = await ctx.freshDatabaseUrl('snapshot_push');
  const server = await pushFlavour(ctx, 'PostgreSQL server', { DATABASE_URL: url }, url);
  return [...embedded, ...server];
};

// ---- snapshotDepth -----------------------------------------------------------------------------

export const snapshotDepth = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const deep = ctx.quick ? 10_000 : 100_000;
  const shallow = 100;
  const posts = ctx.quick ? 100 : 300;
  const perRound = Math.max(1, Math.round(posts / ctx.rounds));
  const url = await ctx.freshDatabaseUrl('snapshot_depth');
  const app = await startApp({ DATABASE_URL: url });
  try {
    const a = { id: await registerPushNode(app, 'depth-a'), name: 'depth-a' };
    const b = { id: await registerPushNode(app, 'depth-b'), name: 'depth-b' };
    // Node A's stream gets all but its last `shallow` snapshots here (the app keeps running
    // and projects them as they come); both then take `shallow` warm-up POSTs, so that the
    // measured POSTs land at A's ~100,000th snapshot and at B's ~100th.
    await withStore(url, (store) => seedSnapshots(ctx, store, a, deep - shallow, { endMs: Date.now() - 10 * MINUTE, label: 'snapshotDepth' }));
    await waitForProjection(ctx, app, [{ id: a.id, last: deep - shallow - 1 }], 'snapshotDepth');
    const body = { status: 'up', latency_ms: 12, metrics: { wraps: 3 } };
    const post = (node: { id: string }) => async () => expectStatus(await call(app, 'POST', `/nodes/${node.id}/snapshots`, body), 202, 'POST /nodes/{id}/snapshots');
    for (let i = 0; i < shallow; i++) {
      await post(a)();
      await post(b)();
    }
    await waitForProjection(ctx, app, [{ id: a.id, last: deep - 1 }, { id: b.id, last: shallow - 1 }], 'snapshotDepth');
    await analyze(url);
    const r = await alternate(ctx.rounds,
      () => sequential(perRound, post(b)),
      () => sequential(perRound, post(a)),
      (i, bs, os) => ctx.log(`  snapshotDepth round ${i + 1}: at ~${shallow}: p50 ${ms2(median(bs))} p99 ${ms2(percentile(bs, 99))}; ` +
        `at ~${fmt(deep)}: p50 ${ms2(median(os))} p99 ${ms2(percentile(os, 99))}`));
    const allB = r.baseline.flat();
    const allA = r.ours.flat();
    const n = perRound * ctx.rounds;
    const base = { bench: 'snapshotDepth', unit: 'ms', baselineLabel: `same POST, node at its ~${shallow}th snapshot` };
    return [
      {
        ...base, metric: `p50 POST /nodes/{id}/snapshots, node at its ~${fmt(deep)}th snapshot (sequential, PostgreSQL server)`,
        baseline: median(r.baseline.map(median)), ours: median(r.ours.map(median)), goal: { kind: 'atMost', ratio: 1.2 },
        rounds: { baseline: r.baseline.map(median), ours: r.ours.map(median) },
        note: `${n} sequential POSTs per node (after ${shallow} warm-up each), ${perRound} a round; A's stream went from ${fmt(deep)} to ${fmt(deep + n)} ` +
          `snapshots, B's from ${shallow} to ${shallow + n}; the medians are of the rounds' medians, the p99 row is over all ${n} POSTs`,
      },
      {
        ...base, metric: `p99 of the same (all ${n} POSTs)`,
        baseline: percentile(allB, 99), ours: percentile(allA, 99), goal: { kind: 'info' },
        rounds: { baseline: r.baseline.map((x) => percentile(x, 99)), ours: r.ours.map((x) => percentile(x, 99)) },
      },
    ];
  } finally {
    await app.stop();
  }
};

// ---- uptimeYear --------------------------------------------------------------------------------

/**
 * The environment of both runs of the app on one database: the same keys, or the second
 * run could not decrypt what the first stored in its vault.
 */
const serverEnv = (url: string): Record<string, string> =>
  ({ DATABASE_URL: url, SECRET_KEY: randomBytes(32).toString('hex'), SECRETS_KEY: randomBytes(32).toString('hex') });

/** Registers `names` through a first run of the app, then stops it: seeding follows with the app down. */
const registerThenStop = async (env: Record<string, string>, names: string[]): Promise<{ id: string; name: string }[]> => {
  const app = await startApp(env);
  try {
    const out = [];
    for (const name of names) out.push({ id: await registerPushNode(app, name), name });
    return out;
  } finally {
    await app.stop();
  }
};

/**
 * Starts the app on the seeded database and waits for the monitoring projection to take
 * in everything; the rate counts the snapshots projected between the first look (right
 * after /health/ready) and the end.
 */
const startAndCatchUp = async (ctx: BenchContext, env: Record<string, string>, nodes: { id: string; last: number }[], label: string) => {
  const url = env['DATABASE_URL']!;
  const t0 = performance.now();
  const app = await startApp(env);
  try {
    const seen = await waitForProjection(ctx, app, nodes, label);
    const wallMs = performance.now() - t0;
    const rate = seen.seenEvents / (seen.seenMs / 1000);
    ctx.log(`  ${label}: caught up ${(wallMs / 1000).toFixed(1)} s after the app was spawned; ` +
      `${fmt(seen.seenEvents)} snapshots projected in ${(seen.seenMs / 1000).toFixed(1)} s after it was ready (${fmt(rate)}/s)`);
    await analyze(url);
    return { app, wallMs, rate, seen };
  } catch (err) {
    await app.stop();
    throw err;
  }
};

type Uptime = { uptime_pct: number | null; up_ms: number; down_ms: number; unknown_ms: number };

export const uptimeYear = async (ctx: BenchContext): Promise<BenchRow[]> => {
  // Quick: a week of minutes instead of a year.
  const count = ctx.quick ? 10_080 : 525_600;
  const perRound = ctx.quick ? 50 : 200;
  const url = await ctx.freshDatabaseUrl('uptime_year');
  const env = serverEnv(url);
  const [node] = await registerThenStop(env, ['uptime-year']);
  const endMs = Math.floor(Date.now() / MINUTE) * MINUTE - MINUTE;
  const seedMs = await withStore(url, (store) => seedSnapshots(ctx, store, node!, count, { endMs, statusOf: outagePattern, label: 'uptimeYear' }));
  const seedRate = count / (seedMs / 1000);
  const upShare = Array.from({ length: count - 1 }, (_, i) => outagePattern(i)).filter((s) => s === 'up').length / (count - 1);
  const { app, wallMs, rate } = await startAndCatchUp(ctx, env, [{ id: node!.id, last: count - 1 }], 'uptimeYear');
  try {
    const get = (window: string) => async () =>
      expectStatus(await call(app, 'GET', `/statistics/uptime?node_id=${node!.id}&window=${window}`), 200, `GET /statistics/uptime ${window}`);
    const year = (await get('365d')()).body as Uptime;
    const day = (await get('24h')()).body as Uptime;
    ctx.log(`  uptimeYear: 365d ${year.uptime_pct}% up (unknown ${fmt(year.unknown_ms / MINUTE)} min), 24h ${day.uptime_pct}% up; seeded ${(upShare * 100).toFixed(3)}% of minutes up`);
    await sequential(20, get('24h'));
    await sequential(20, get('365d'));
    const r = await alternate(ctx.rounds,
      () => sequential(perRound, get('24h')),
      () => sequential(perRound, get('365d')),
      (i, d, y) => ctx.log(`  uptimeYear round ${i + 1}: 24h p50 ${ms2(median(d))} p99 ${ms2(percentile(d, 99))}; 365d p50 ${ms2(median(y))} p99 ${ms2(percentile(y, 99))}`));
    const base = { bench: 'uptimeYear', unit: 'ms', baselineLabel: 'window=24h, same node' };
    return [
      {
        ...base, metric: `p50 GET /statistics/uptime?window=365d, node with ${fmt(count)} snapshots (one a minute)`,
        baseline: median(r.baseline.map(median)), ours: median(r.ours.map(median)), goal: { kind: 'atMost', ratio: 2 },
        rounds: { baseline: r.baseline.map(median), ours: r.ours.map(median) },
        note: `${perRound} sequential GETs per window a round; 365d answered ${year.uptime_pct}% up (seeded: ${(upShare * 100).toFixed(3)}% of minutes up), ` +
          `24h ${day.uptime_pct}%; PostgreSQL server`,
      },
      {
        ...base, metric: 'p99 of the same',
        baseline: percentile(r.baseline.flat(), 99), ours: percentile(r.ours.flat(), 99), goal: { kind: 'info' },
        rounds: { baseline: r.baseline.map((x) => percentile(x, 99)), ours: r.ours.map((x) => percentile(x, 99)) },
      },
      {
        ...base, metric: `monitoring projection catch-up over the ${fmt(count)} seeded snapshots, snapshots/s`, unit: 'events/s',
        baselineLabel: 'seeding them: 2,000-event appends from the bench', baseline: seedRate, ours: rate, goal: { kind: 'info' },
        rounds: { baseline: [seedRate], ours: [rate] },
        note: `the app caught up ${(wallMs / 1000).toFixed(1)} s after it was spawned (all four projections running; ` +
          'the rate counts from its first answer). One measurement, not rounds',
      },
    ];
  } finally {
    await app.stop();
  }
};

// ---- historyPage -------------------------------------------------------------------------------

export const historyPage = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const big = ctx.quick ? 10_000 : 1_000_000;
  const small = 1_000;
  const perRound = ctx.quick ? 50 : 200;
  const url = await ctx.freshDatabaseUrl('history_page');
  const env = serverEnv(url);
  const [bigNode, smallNode] = await registerThenStop(env, ['history-big', 'history-small']);
  const endMs = Math.floor(Date.now() / MINUTE) * MINUTE - MINUTE;
  await withStore(url, async (store) => {
    await seedSnapshots(ctx, store, smallNode!, small, { endMs, statusOf: outagePattern, label: 'historyPage' });
    await seedSnapshots(ctx, store, bigNode!, big, { endMs, statusOf: outagePattern, label: 'historyPage' });
  });
  const { app } = await startAndCatchUp(ctx, env, [{ id: smallNode!.id, last: small - 1 }, { id: bigNode!.id, last: big - 1 }], 'historyPage');
  try {
    // A cursor 80% deep, as a client gets it: a one-item page ending just after the
    // snapshot at that depth (newest first) hands out its next_cursor.
    const deepCursor = async (node: { id: string }, count: number) => {
      const depth = Math.floor(count * 0.8);
      const a = await history(app, node.id, `limit=1&to=${encodeURIComponent(iso(endMs - (depth - 1) * MINUTE))}`);
      const cursor = a.page.next_cursor;
      if (!cursor || a.page.items[0]?.revision !== String(count - 1 - depth)) {
        throw new Error(`no cursor at depth ${depth}: ${JSON.stringify(a.page).slice(0, 300)}`);
      }
      return { cursor, depth, firstRevision: String(count - 2 - depth) };
    };
    const deepBig = await deepCursor(bigNode!, big);
    const deepSmall = await deepCursor(smallNode!, small);
    /** `perRound` first pages, then `perRound` cursor pages; each checked (100 items, the right place). */
    const side = (node: { id: string }, count: number, deep: { cursor: string; firstRevision: string }) => async () => {
      const first = await sequential(perRound, async () => {
        const a = await history(app, node.id, 'limit=100');
        if (a.page.items.length !== 100 || a.page.items[0]!.revision !== String(count - 1)) throw new Error(`first page of ${node.id} is off: ${a.page.items[0]?.revision}`);
        return a;
      });
      const cursor = await sequential(perRound, async () => {
        const a = await history(app, node.id, `limit=100&cursor=${deep.cursor}`);
        if (a.page.items.length !== 100 || a.page.items[0]!.revision !== deep.firstRevision) throw new Error(`cursor page of ${node.id} is off: ${a.page.items[0]?.revision}`);
        return a;
      });
      return { first, cursor };
    };
    const smallSide = side(smallNode!, small, deepSmall);
    const bigSide = side(bigNode!, big, deepBig);
    await smallSide();
    await bigSide();
    const r = await alternate(ctx.rounds, smallSide, bigSide,
      (i, s, b) => ctx.log(`  historyPage round ${i + 1}: first page p50 ${ms2(median(s.first))} (${fmt(small)}) vs ${ms2(median(b.first))} (${fmt(big)}); ` +
        `cursor page p50 ${ms2(median(s.cursor))} vs ${ms2(median(b.cursor))}`));
    const pick = (k: 'first' | 'cursor') => ({ baseline: r.baseline.map((x) => median(x[k])), ours: r.ours.map((x) => median(x[k])) });
    const p99 = (k: 'first' | 'cursor') =>
      `p99 ${ms2(percentile(r.ours.flatMap((x) => x[k]), 99))} (${fmt(big)}) vs ${ms2(percentile(r.baseline.flatMap((x) => x[k]), 99))} (${fmt(small)})`;
    const base = { bench: 'historyPage', unit: 'ms', baselineLabel: `same request, node with ${fmt(small)} snapshots` };
    const first = pick('first');
    const cursor = pick('cursor');
    return [
      {
        ...base, metric: `p50 GET /nodes/{id}/history?limit=100 (first page), node with ${fmt(big)} snapshots`,
        baseline: median(first.baseline), ours: median(first.ours), goal: { kind: 'atMost', ratio: 1.5 }, rounds: first,
        note: `${perRound} sequential GETs of each kind a round, every page checked (100 items from the expected revision); first page ${p99('first')}; ` +
          `cursor page ${p99('cursor')}; PostgreSQL server`,
      },
      {
        ...base, metric: `p50 the same via a cursor 80% deep (${fmt(deepBig.depth)} vs ${fmt(deepSmall.depth)} snapshots down)`,
        baseline: median(cursor.baseline), ours: median(cursor.ours), goal: { kind: 'atMost', ratio: 1.5 }, rounds: cursor,
      },
    ];
  } finally {
    await app.stop();
  }
};

// ---- poller ------------------------------------------------------------------------------------

const POLL_CONCURRENCY = 50;
const MONITOR_ACTOR = { user_id: null, username: 'monitor', token_id: null };

export const poller = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const checks = ctx.quick ? 1_000 : 10_000;
  const warmup = ctx.quick ? 200 : 1_000;
  const health = await spawnChild(['bench/support/healthServer.ts'], {}, '/health');
  const url = await ctx.freshDatabaseUrl('poller');
  const database = openServerDatabase({ url, poolSize: 4 });
  let store: EventStore | null = null;
  try {
    await migrateToLatest(database);
    store = await createPostgresEventStore(database);
    const recorder = createSnapshotRecorder(store);
    const check: Check = { type: 'http', url: `${health.url}/health`, port: null, expectStatus: null, timeoutMs: 5000, intervalS: 60, retries: 0 };
    // The nodes exist only here: recordSnapshot needs a NodeRef, which the app would read from its (cached) read model.
    const targets: PollTarget[] = Array.from({ length: checks }, (_, i) => ({
      nodeId: randomUUID(), name: `poll-${i}`, address: '127.0.0.1', check, lastObservedAt: null,
    }));
    const refs = new Map<string, NodeRef>(targets.map((t) => [t.nodeId, { nodeId: t.nodeId, name: t.name, project: 'bench', decommissioned: false }]));
    const outcomes = { up: 0, down: 0, warnings: 0, lastWarning: '' };
    const record = async (nodeId: string, snapshot: PolledSnapshot) => {
      outcomes[snapshot.status] += 1;
      if (snapshot.status === 'down') outcomes.lastWarning = snapshot.error ?? 'down';
      await recordSnapshot({ recorder }, refs.get(nodeId)!, nodeId, snapshot, { actor: MONITOR_ACTOR, now: snapshot.observedAt });
    };
    const logger = { warn: (o: object, msg?: string) => { outcomes.warnings += 1; outcomes.lastWarning = `${msg}: ${JSON.stringify(o).slice(0, 200)}`; } };

    /** A fresh poller each round (a poller remembers what it checked): one tick over `n` due targets, every check recorded. */
    const pollerRound = async (n: number): Promise<number> => {
      const list = targets.slice(0, n);
      const p = createPoller({ listTargets: async () => list, record, defaultIntervalS: 60, concurrency: POLL_CONCURRENCY, logger });
      let checked = 0;
      const ms = await timed(async () => { checked = (await p.runOnce()).checked; });
      if (checked !== n) throw new Error(`the poller checked ${checked} of ${n} targets`);
      return n / (ms / 1000);
    };
    /** The floor of any poller: the same GETs, bodies read, same concurrency, nothing else. */
    let fetchFailures = 0;
    const fetchRound = async (n: number): Promise<number> => {
      let next = 0;
      const ms = await timed(() => Promise.all(Array.from({ length: POLL_CONCURRENCY }, async () => {
        while (next < n) {
          next += 1;
          const res = await fetch(check.url!);
          await res.text();
          if (!res.ok) fetchFailures += 1;
        }
      })));
      return n / (ms / 1000);
    };

    await fetchRound(warmup);
    await pollerRound(warmup);
    const r = await alternate(ctx.rounds, () => fetchRound(checks), () => pollerRound(checks),
      (i, b, o) => ctx.log(`  poller round ${i + 1}: fetch loop ${fmt(b)} GETs/s, poller ${fmt(o)} checks/s (${fmt(checks)} each)`));
    await recorder.flush();
    const stats = recorder.stats();
    const { rows } = await sql<{ n: string }>`select count(*)::text as n from events where type = 'SnapshotRecorded'`.execute(database.db);
    const expected = warmup + checks * ctx.rounds;
    const stored = Number(rows[0]!.n);
    return [{
      bench: 'poller', metric: `poller.runOnce over ${fmt(checks)} http targets (concurrency ${POLL_CONCURRENCY}, each recorded), checks/s`, unit: 'checks/s',
      baselineLabel: `bare fetch loop, ${POLL_CONCURRENCY} at once, bodies read (same process)`,
      baseline: median(r.baseline), ours: median(r.ours), goal: { kind: 'atLeast', ratio: 0.5 }, rounds: r,
      note: `outcomes up ${fmt(outcomes.up)}, down ${fmt(outcomes.down)}; ${fmt(stored)} snapshots stored of ${fmt(expected)} expected ` +
        `in ${fmt(stats.batches)} group commits (${fmt(stats.appended / Math.max(1, stats.batches), 1)} a commit); ` +
        `poller warnings ${outcomes.warnings}; fetch-loop failures ${fetchFailures}${outcomes.lastWarning ? `; last problem: ${outcomes.lastWarning}` : ''}` +
        `${stored !== expected ? ' — STORED COUNT DIFFERS' : ''}; health server and PostgreSQL server in their own processes`,
    }];
  } finally {
    await store?.close();
    await database.close();
    await health.stop();
  }
};
