// GET /statistics/* (SPEC §5): uptime over any window, groups' up/down over time, and a
// metric's sum/avg/min/max per bucket. All from rollups and change rows, never from a
// scan of the snapshots.
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { floorTo, STAT_BUCKETS, type StatBucket } from '../infra/timeBuckets.ts';
import { requirePrincipal } from '../infra/auth/authenticate.ts';
import { can, visibleProjects } from '../infra/auth/authorize.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { Tables } from '../infra/db/tables.ts';
import { AppError } from '../infra/errors.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid, ValidationError } from '../infra/http/validate.ts';
import { inProjects } from './monitoring.ts';
import { alignedWindow, groupTimeline, nodesUptime, timelineTotals, WINDOWS, type WindowName } from './uptime.ts';

type Routes = ReturnType<typeof bindRoutes>;

const Time = z.iso.datetime({ offset: true });
const MAX_BUCKETS = 2000;
const MAX_NODES_OVERALL = 10_000;

const WindowQuery = {
  window: z.enum(Object.keys(WINDOWS) as [WindowName, ...WindowName[]]).optional(),
  from: Time.optional(),
  to: Time.optional(),
};

/** [from, to) in ms from `window` or `from`/`to` (default: the last 24 h). */
const resolveWindow = (q: { window?: WindowName | undefined; from?: string | undefined; to?: string | undefined }, nowMs: number, fallback: WindowName = '24h') => {
  if (q.window && (q.from || q.to)) throw new ValidationError([{ path: 'query.window', message: 'give either window or from/to, not both' }]);
  const to = q.to ? Date.parse(q.to) : nowMs;
  const from = q.from ? Date.parse(q.from) : to - WINDOWS[q.window ?? fallback];
  if (from >= to) throw new ValidationError([{ path: 'query.from', message: 'from must be before to' }]);
  return { from, to };
};

const UptimeView = z.strictObject({
  node_id: z.uuid().nullable(), group_id: z.uuid().nullable(), nodes: z.number().int(), from: z.iso.datetime(), to: z.iso.datetime(),
  up_ms: z.number(), down_ms: z.number(), pending_ms: z.number(), unknown_ms: z.number(),
  uptime_pct: z.number().nullable().meta({ description: 'up ÷ observed time × 100; time nobody observed is unknown, not up' }),
}).meta({ id: 'Uptime' });

const GroupBucketsView = z.strictObject({
  bucket: z.enum(['5m', '1h', '1d']), from: z.iso.datetime(), to: z.iso.datetime(),
  items: z.array(z.strictObject({
    group_id: z.uuid(), name: z.string(), project: z.string(),
    buckets: z.array(z.strictObject({ start: z.iso.datetime(), up_ms: z.number(), down_ms: z.number(), unknown_ms: z.number() })),
  })),
}).meta({ id: 'GroupTimeline' });

const MetricStatsView = z.strictObject({
  metric: z.string(), node_id: z.uuid().nullable(), bucket: z.enum(['5m', '1h', '1d']), from: z.iso.datetime(), to: z.iso.datetime(),
  items: z.array(z.strictObject({ start: z.iso.datetime(), count: z.number().int(), sum: z.number(), avg: z.number(), min: z.number(), max: z.number() })),
}).meta({ id: 'MetricStatistics' });

const Bucket = z.enum(Object.keys(STAT_BUCKETS) as [StatBucket, ...StatBucket[]]).default('1h');

const bucketStarts = (from: number, to: number, ms: number) => {
  const starts: number[] = [];
  for (let t = floorTo(from, ms); t < to; t += ms) starts.push(t);
  if (starts.length > MAX_BUCKETS) {
    throw new ValidationError([{ path: 'query.bucket', message: `${starts.length} buckets is too many (at most ${MAX_BUCKETS}): use a larger bucket or a shorter window` }]);
  }
  return starts;
};

const isoOf = (ms: number) => new Date(ms).toISOString();

export const monitoringStatsRoutes = (routes: Routes, deps: { db: Kysely<Tables>; now?: () => number }): void => {
  const { db } = deps;
  const now = deps.now ?? Date.now;

  const nodeProject = async (principal: Principal, id: string) => {
    const n = await db.selectFrom('nodes').select('project').where('id', '=', id).executeTakeFirst();
    if (!n || !can(principal, 'nodes:read', n.project)) throw new AppError('NODE_NOT_FOUND', `node ${id} not found`);
  };
  const visibleGroup = async (principal: Principal, id: string) => {
    const g = await db.selectFrom('node_groups').select(['id', 'name', 'project', 'total']).where('id', '=', id).where('deleted', '=', false).executeTakeFirst();
    if (!g || !can(principal, 'nodes:read', g.project)) throw new AppError('GROUP_NOT_FOUND', `group ${id} not found`);
    return g;
  };

  routes.get({
    path: '/statistics/uptime', summary: 'Uptime over a window, for a node, a group, or every visible node', tags: ['statistics'], auth: true,
    description: '`window` (24h, 7d, 30d, 90d, 365d) or `from`/`to` (default: the last 24 h), at minute resolution. '
      + 'With `node_id`: that node. With `group_id`: the time the group had its quorum. With neither: all visible nodes (of `project`) summed.',
    query: z.strictObject({ node_id: Uuid.optional(), group_id: Uuid.optional(), project: Slug.optional(), ...WindowQuery }),
    responses: { 200: UptimeView },
  }, async ({ query }, _req, res) => {
    const principal = requirePrincipal(res);
    if (query.node_id && query.group_id) throw new ValidationError([{ path: 'query.group_id', message: 'give node_id or group_id, not both' }]);
    const t = now();
    const { from, to } = resolveWindow(query, t);
    const aligned = alignedWindow(from, to);
    const base = { node_id: query.node_id ?? null, group_id: query.group_id ?? null, from: isoOf(aligned.from), to: isoOf(aligned.to) };
    if (query.node_id) {
      await nodeProject(principal, query.node_id);
      res.json({ ...base, nodes: 1, ...(await nodesUptime(db, [query.node_id], from, to, t)) });
      return;
    }
    if (query.group_id) {
      const g = await visibleGroup(principal, query.group_id);
      const { before, changes } = await groupTimeline(db, query.group_id, aligned.from, aligned.to);
      const tt = timelineTotals(before, changes, aligned.from, Math.min(aligned.to, t));
      res.json({ ...base, nodes: g.total, ...tt, unknown_ms: aligned.to - aligned.from - tt.up_ms - tt.down_ms });
      return;
    }
    const projects = visibleProjects(principal, 'nodes:read', query.project);
    let q = db.selectFrom('nodes').select('id').where('decommissioned', '=', false).limit(MAX_NODES_OVERALL);
    if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
    const ids = (await q.execute()).map((r) => r.id);
    res.json({ ...base, nodes: ids.length, ...(await nodesUptime(db, ids, from, to, t)) });
  });

  routes.get({
    path: '/statistics/groups', summary: 'Groups up/down over time, per bucket', tags: ['statistics'], auth: true,
    description: '`bucket` 5m, 1h (default) or 1d over `window` or `from`/`to` (default: the last 24 h); every visible group, or `group_id`.',
    query: z.strictObject({ group_id: Uuid.optional(), project: Slug.optional(), bucket: Bucket, ...WindowQuery }),
    responses: { 200: GroupBucketsView },
  }, async ({ query }, _req, res) => {
    const principal = requirePrincipal(res);
    const t = now();
    const { from, to } = resolveWindow(query, t);
    const size = STAT_BUCKETS[query.bucket].ms;
    const starts = bucketStarts(from, to, size);
    let groups;
    if (query.group_id) {
      const { id, name, project } = await visibleGroup(principal, query.group_id);
      groups = [{ id, name, project }];
    }
    else {
      const projects = visibleProjects(principal, 'nodes:read', query.project);
      let q = db.selectFrom('node_groups').select(['id', 'name', 'project']).where('deleted', '=', false).orderBy('project').orderBy('name').limit(100);
      if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
      groups = await q.execute();
    }
    const items = await Promise.all(groups.map(async (g) => {
      const first = starts[0] ?? from;
      const last = (starts.at(-1) ?? from) + size;
      const { before, changes } = await groupTimeline(db, g.id, first, last);
      let status = before;
      let i = 0;
      const buckets = starts.map((s) => {
        const end = Math.min(s + size, t);
        // The status at the bucket's start, then its changes within it.
        while (i < changes.length && new Date(changes[i]!.at).getTime() <= s) status = changes[i++]!.to_status;
        const inside = [];
        for (let j = i; j < changes.length && new Date(changes[j]!.at).getTime() < s + size; j++) inside.push(changes[j]!);
        const tt = end > s ? timelineTotals(status, inside, s, end) : { up_ms: 0, down_ms: 0 };
        return { start: isoOf(s), up_ms: tt.up_ms, down_ms: tt.down_ms, unknown_ms: size - tt.up_ms - tt.down_ms };
      });
      return { group_id: g.id, name: g.name, project: g.project, buckets };
    }));
    res.json({ bucket: query.bucket, from: isoOf(starts[0] ?? from), to: isoOf((starts.at(-1) ?? from) + size), items });
  });

  routes.get({
    path: '/statistics/metrics', summary: 'A metric’s count, sum, avg, min and max per bucket', tags: ['statistics'], auth: true,
    description: 'Metrics are the numbers nodes report in their snapshots (or health bodies). Per node with `node_id`, else over every visible node (of `project`).',
    query: z.strictObject({
      metric: z.string().regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'metric names are 1–100 letters, digits or _.:-'),
      node_id: Uuid.optional(), project: Slug.optional(), bucket: Bucket, ...WindowQuery,
    }),
    responses: { 200: MetricStatsView },
  }, async ({ query }, _req, res) => {
    const principal = requirePrincipal(res);
    const { from, to } = resolveWindow(query, now());
    const { ms: size, unit } = STAT_BUCKETS[query.bucket];
    const starts = bucketStarts(from, to, size);
    const first = starts[0] ?? from;
    const last = (starts.at(-1) ?? from) + size;
    let q = db.selectFrom('node_metric_rollups as r').select(['r.bucket', 'r.count', 'r.sum', 'r.min', 'r.max'])
      .where('r.metric', '=', query.metric).where('r.unit', '=', unit)
      .where('r.bucket', '>=', new Date(first)).where('r.bucket', '<', new Date(last));
    if (query.node_id) {
      await nodeProject(principal, query.node_id);
      q = q.where('r.node_id', '=', query.node_id);
    } else {
      const projects = visibleProjects(principal, 'nodes:read', query.project);
      if (projects !== 'all') {
        q = q.innerJoin('nodes as n', 'n.id', 'r.node_id').where('n.project', 'in', inProjects(projects));
      }
    }
    const acc = new Map<number, { count: number; sum: number; min: number; max: number }>();
    for (const r of await q.execute()) {
      const k = floorTo(new Date(r.bucket).getTime(), size);
      const count = Number(r.count);
      const a = acc.get(k);
      if (a) { a.count += count; a.sum += r.sum; a.min = Math.min(a.min, r.min); a.max = Math.max(a.max, r.max); }
      else acc.set(k, { count, sum: r.sum, min: r.min, max: r.max });
    }
    const items = [...acc.entries()].sort(([a], [b]) => a - b)
      .map(([k, a]) => ({ start: isoOf(k), count: a.count, sum: a.sum, avg: a.sum / a.count, min: a.min, max: a.max }));
    res.json({ metric: query.metric, node_id: query.node_id ?? null, bucket: query.bucket, from: isoOf(first), to: isoOf(last), items });
  });
};
