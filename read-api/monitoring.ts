// GET endpoints of monitoring (SPEC §5): nodes, their status, details with uptime,
// history, groups and alert channels. Thin queries over the monitoring read models; a
// node, group or channel in a project the caller cannot see answers 404 like a missing one.
import { sql, type Kysely } from 'kysely';
import { z } from 'zod';
import { AppError } from '../infra/errors.ts';
import { requirePrincipal } from '../infra/auth/authenticate.ts';
import { can, visibleProjects } from '../infra/auth/authorize.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { Tables } from '../infra/db/tables.ts';
import { createEpochCache, noCache, type EpochCache } from '../infra/epochCache.ts';
import { setEtag } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { CursorPageOf, cursorPage, Limit, page, PageOf, Pagination, Slug, Uuid } from '../infra/http/validate.ts';
import { nodesUptime, WINDOWS } from './uptime.ts';
import { projectExists } from './projects.ts';

type Routes = ReturnType<typeof bindRoutes>;
const Time = z.iso.datetime();
const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

export const NODE_STATUSES = ['up', 'down', 'pending', 'unknown'] as const;
const Status = z.enum(NODE_STATUSES);

export const NodeView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), address: z.string(), pubkey: z.string().nullable(),
  labels: z.record(z.string(), z.string()),
  check: z.strictObject({
    type: z.enum(['http', 'tcp', 'push']), url: z.string().nullable(), port: z.number().int().nullable(), expect_status: z.number().int().nullable(),
    timeout_ms: z.number().int(), interval_s: z.number().int(), retries: z.number().int(),
  }),
  active: z.boolean(), decommissioned: z.boolean(),
  status: Status.meta({ description: '`unknown` when nothing was observed within twice the interval (the monitor was not looking), or never' }),
  status_since: Time.nullable(), last_observed_at: Time.nullable(), latency_ms: z.number().nullable(), version: z.string().nullable(),
  last_error: z.string().nullable(), created_at: Time, updated_at: Time,
}).meta({ id: 'Node' });
export type NodeView = z.output<typeof NodeView>;

const UptimeFigure = z.number().nullable().meta({ description: 'percent of the observed time the node was up (null: never observed in the window)' });
export const NodeDetailsView = NodeView.extend({
  uptime: z.strictObject({ '24h': UptimeFigure, '7d': UptimeFigure, '30d': UptimeFigure }),
}).meta({ id: 'NodeDetails' });

export const NodeStatusView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), status: Status, status_since: Time.nullable(),
  last_observed_at: Time.nullable(), latency_ms: z.number().nullable(), version: z.string().nullable(), last_error: z.string().nullable(),
}).meta({ id: 'NodeStatus' });

export const GroupView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), min_online: z.number().int(),
  selector: z.union([z.strictObject({ labels: z.record(z.string(), z.string()) }), z.strictObject({ node_ids: z.array(z.uuid()) })]),
  status: Status, online: z.number().int(), total: z.number().int(), status_since: Time.nullable(), created_at: Time, updated_at: Time,
}).meta({ id: 'Group' });
export type GroupView = z.output<typeof GroupView>;

export const SummaryView = z.strictObject({
  total: z.number().int(), up: z.number().int(), down: z.number().int(), pending: z.number().int(), unknown: z.number().int(),
  groups: z.array(z.strictObject({ id: z.uuid(), name: z.string(), project: z.string(), online: z.number().int(), min_online: z.number().int(), status: Status })),
}).meta({ id: 'NodeStatusSummary' });

export const SnapshotView = z.strictObject({
  revision: z.string(), observed_at: Time, status: z.enum(['up', 'down']), latency_ms: z.number().nullable(), version: z.string().nullable(),
  metrics: z.record(z.string(), z.number()).nullable(), source: z.enum(['push', 'poll', 'monitor']), error: z.string().nullable(),
}).meta({ id: 'Snapshot' });

export const AlertChannelView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), url: z.string(), events: z.array(z.string()), created_at: Time,
  deliveries: z.strictObject({ pending: z.number().int(), delivered: z.number().int(), failed: z.number().int() }),
}).meta({ id: 'AlertChannel' });

// ---- queries ---------------------------------------------------------------------------

/**
 * The status a reader sees: the projected one while it is fresh (observed within twice the
 * node's interval), `unknown` otherwise, and `unknown` for paused or decommissioned nodes.
 */
const effectiveStatus = sql<string>`case
  when n.decommissioned or not n.active or s.last_observed_at is null
    or s.last_observed_at < now() - make_interval(secs => 2 * coalesce((n.check_config->>'intervalS')::int, 60)) then 'unknown'
  else s.status end`;

const NODE_COLUMNS = ['n.id', 'n.name', 'n.project', 'n.address', 'n.pubkey', 'n.labels', 'n.check_type', 'n.check_config', 'n.active',
  'n.decommissioned', 'n.created_at', 'n.updated_at', 'n.revision', 's.status_since', 's.last_observed_at', 's.latency_ms', 's.version', 's.last_error'] as const;

type NodeRow = {
  id: string; name: string; project: string; address: string; pubkey: string | null; labels: unknown; check_type: string; check_config: unknown;
  active: boolean; decommissioned: boolean; created_at: Date; updated_at: Date; revision: string; status: string;
  status_since: Date | null; last_observed_at: Date | null; latency_ms: number | null; version: string | null; last_error: string | null;
};

const toNodeView = (r: NodeRow): NodeView => {
  const c = r.check_config as { url?: string | null; port?: number | null; expectStatus?: number | null; timeoutMs?: number; intervalS?: number; retries?: number };
  return {
    id: r.id, name: r.name, project: r.project, address: r.address, pubkey: r.pubkey, labels: r.labels as Record<string, string>,
    check: {
      type: r.check_type as NodeView['check']['type'], url: c.url ?? null, port: c.port ?? null, expect_status: c.expectStatus ?? null,
      timeout_ms: c.timeoutMs ?? 5000, interval_s: c.intervalS ?? 60, retries: c.retries ?? 0,
    },
    active: r.active, decommissioned: r.decommissioned, status: r.status as NodeView['status'],
    status_since: iso(r.status_since), last_observed_at: iso(r.last_observed_at), latency_ms: r.latency_ms, version: r.version,
    last_error: r.last_error, created_at: iso(r.created_at)!, updated_at: iso(r.updated_at)!,
  };
};

const toStatusView = (v: NodeView) => ({
  id: v.id, name: v.name, project: v.project, status: v.status, status_since: v.status_since,
  last_observed_at: v.last_observed_at, latency_ms: v.latency_ms, version: v.version, last_error: v.last_error,
});

/** `key=value` (or `key:value`) label filters. */
export const LabelFilter = z.string().regex(/^[a-z0-9][a-z0-9._/-]{0,62}[=:].{0,200}$/, 'must be key=value');
export const parseLabels = (raw: string | string[] | undefined): Record<string, string> => {
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  return Object.fromEntries(list.map((l) => {
    const i = l.search(/[=:]/);
    return [l.slice(0, i), l.slice(i + 1)];
  }));
};

export const NodeFilters = Pagination.extend({
  project: Slug.optional(),
  label: z.union([LabelFilter, z.array(LabelFilter).max(20)]).optional().meta({ description: 'key=value; repeat for several (all must match)' }),
  status: Status.optional(),
  include_decommissioned: z.enum(['true', 'false']).default('false'),
});
type NodeFilters = z.output<typeof NodeFilters>;

/** For `where project in (…)`: no project at all matches nothing ('-' is never a slug). */
export const inProjects = (projects: readonly string[]): string[] => (projects.length > 0 ? [...projects] : ['-']);

const notFound = (what: string, id: string, code: string) => new AppError(code, `${what} ${id} not found`);

export const monitoringQueries = (db: Kysely<Tables>, refCache: EpochCache<{ nodeId: string; name: string; project: string; decommissioned: boolean } | null> = noCache()) => {
  const nodesQuery = (projects: readonly string[] | 'all') => {
    let q = db.selectFrom('nodes as n').innerJoin('node_status as s', 's.node_id', 'n.id');
    if (projects !== 'all') q = q.where('n.project', 'in', inProjects(projects));
    return q;
  };
  type NodesQuery = ReturnType<typeof nodesQuery>;
  const filtered = (q: NodesQuery, f: NodeFilters): NodesQuery => {
    let out = q;
    if (f.include_decommissioned !== 'true') out = out.where('n.decommissioned', '=', false);
    const labels = parseLabels(f.label);
    if (Object.keys(labels).length > 0) out = out.where(sql<boolean>`n.labels @> ${JSON.stringify(labels)}::jsonb`);
    if (f.status) out = out.where(effectiveStatus, '=', f.status);
    return out;
  };
  const selectNodes = async (q: NodesQuery): Promise<NodeRow[]> =>
    (await q.select([...NODE_COLUMNS, effectiveStatus.as('status')]).execute()) as unknown as NodeRow[];

  const queries = {
    /** For the commands: cached until a node's life changes (not by snapshots). */
    ref: (nodeId: string) => refCache.through(nodeId, async () => {
      const r = await db.selectFrom('nodes').select(['id', 'name', 'project', 'decommissioned']).where('id', '=', nodeId).executeTakeFirst();
      return r ? { nodeId: r.id, name: r.name, project: r.project, decommissioned: r.decommissioned } : null;
    }),
    async node(nodeId: string): Promise<{ view: NodeView; revision: bigint } | null> {
      const [row] = await selectNodes(nodesQuery('all').where('n.id', '=', nodeId));
      return row ? { view: toNodeView(row), revision: BigInt(row.revision) } : null;
    },
    async listNodes(principal: Principal, f: NodeFilters) {
      const q = filtered(nodesQuery(visibleProjects(principal, 'nodes:read', f.project)), f);
      const [rows, count] = await Promise.all([
        selectNodes(q.orderBy('n.project').orderBy('n.name').limit(f.limit).offset(f.offset)),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      return page(rows.map(toNodeView), count.n, f);
    },
    async summary(principal: Principal, project?: string) {
      const projects = visibleProjects(principal, 'nodes:read', project);
      const counts = await nodesQuery(projects).where('n.decommissioned', '=', false)
        .select([effectiveStatus.as('status'), (eb) => eb.fn.countAll<string>().as('n')]).groupBy(sql`1`).execute();
      let groups = db.selectFrom('node_groups').select(['id', 'name', 'project', 'online', 'min_online', 'status']).where('deleted', '=', false);
      if (projects !== 'all') groups = groups.where('project', 'in', inProjects(projects));
      const by = Object.fromEntries(counts.map((c) => [c.status, Number(c.n)]));
      return {
        total: counts.reduce((s, c) => s + Number(c.n), 0),
        up: by.up ?? 0, down: by.down ?? 0, pending: by.pending ?? 0, unknown: by.unknown ?? 0,
        groups: (await groups.orderBy('project').orderBy('name').execute()).map((g) => ({ ...g, status: g.status as GroupView['status'] })),
      };
    },
    projectExists: (slug: string): Promise<boolean> => projectExists(db, slug),
    async group(groupId: string): Promise<{ view: GroupView; revision: bigint; project: string } | null> {
      const g = await db.selectFrom('node_groups').selectAll().where('id', '=', groupId).where('deleted', '=', false).executeTakeFirst();
      return g ? { view: toGroupView(g), revision: BigInt(g.revision), project: g.project } : null;
    },
    async listGroups(principal: Principal, p: Pagination & { project?: string | undefined }) {
      const projects = visibleProjects(principal, 'nodes:read', p.project);
      let q = db.selectFrom('node_groups').where('deleted', '=', false);
      if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
      const [rows, count] = await Promise.all([
        q.selectAll().orderBy('project').orderBy('name').limit(p.limit).offset(p.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      return page(rows.map(toGroupView), count.n, p);
    },
    async channel(id: string) {
      const c = await db.selectFrom('alert_channels').selectAll().where('id', '=', id).where('deleted', '=', false).executeTakeFirst();
      if (!c) return null;
      return { view: await channelView(db, c), project: c.project };
    },
    async listChannels(principal: Principal, p: Pagination & { project?: string | undefined }) {
      const projects = visibleProjects(principal, 'nodes:read', p.project);
      let q = db.selectFrom('alert_channels').where('deleted', '=', false);
      if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
      const [rows, count] = await Promise.all([
        q.selectAll().orderBy('project').orderBy('created_at').limit(p.limit).offset(p.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      return page(await Promise.all(rows.map((c) => channelView(db, c))), count.n, p);
    },
  };
  return queries;
};

export type MonitoringQueries = ReturnType<typeof monitoringQueries>;

const toGroupView = (g: { id: string; name: string; project: string; min_online: number; selector: unknown; status: string; online: number; total: number;
  status_since: Date | null; created_at: Date; updated_at: Date }): GroupView => {
  const s = g.selector as { labels?: Record<string, string>; nodeIds?: string[] };
  return {
    id: g.id, name: g.name, project: g.project, min_online: g.min_online,
    selector: s.nodeIds ? { node_ids: s.nodeIds } : { labels: s.labels ?? {} },
    status: g.status as GroupView['status'], online: g.online, total: g.total,
    status_since: iso(g.status_since), created_at: iso(g.created_at)!, updated_at: iso(g.updated_at)!,
  };
};

const channelView = async (db: Kysely<Tables>, c: { id: string; name: string; project: string; url: string; events: unknown; created_at: Date }) => {
  const counts = await db.selectFrom('alert_deliveries').select(['state', (eb) => eb.fn.countAll<string>().as('n')])
    .where('channel_id', '=', c.id).groupBy('state').execute();
  const by = Object.fromEntries(counts.map((r) => [r.state, Number(r.n)]));
  return {
    id: c.id, name: c.name, project: c.project, url: c.url, events: c.events as string[], created_at: iso(c.created_at)!,
    deliveries: { pending: by.pending ?? 0, delivered: by.delivered ?? 0, failed: by.failed ?? 0 },
  };
};

// ---- history cursor --------------------------------------------------------------------

/** Opaque to clients: the (observed_at, revision) of the last item of a page. */
const encodeCursor = (observedAt: Date, revision: string) => Buffer.from(`${observedAt.getTime()}:${revision}`).toString('base64url');
const decodeCursor = (cursor: string): { at: Date; revision: string } => {
  const m = /^(\d{1,15}):(\d{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw new AppError('VALIDATION_FAILED', 'cursor is not one this API handed out');
  return { at: new Date(Number(m[1])), revision: m[2]! };
};

const HistoryQuery = z.strictObject({
  limit: Limit, cursor: z.string().min(1).max(200).optional(),
  from: z.iso.datetime({ offset: true }).optional(), to: z.iso.datetime({ offset: true }).optional(),
});

// ---- routes ----------------------------------------------------------------------------

const IdParams = z.object({ id: Uuid });
const ProjectPage = Pagination.extend({ project: Slug.optional() });


export const monitoringReadRoutes = (routes: Routes, deps: { db: Kysely<Tables>; lifecycleEpoch?: () => number; now?: () => number }): MonitoringQueries => {
  const { db } = deps;
  const now = deps.now ?? Date.now;
  const q = monitoringQueries(db, deps.lifecycleEpoch ? createEpochCache({ epoch: deps.lifecycleEpoch }) : noCache());

  const requireNodeRead = async (res: Parameters<typeof requirePrincipal>[0], id: string) => {
    const found = await q.node(id);
    if (!found || !can(requirePrincipal(res), 'nodes:read', found.view.project)) throw notFound('node', id, 'NODE_NOT_FOUND');
    return found;
  };

  routes.get({
    path: '/nodes', summary: 'List nodes', tags: ['nodes'], auth: true,
    description: 'The nodes of the projects where you have nodes:read. Filters: `project`, `label=key=value` (repeatable), `status`.',
    query: NodeFilters, responses: { 200: PageOf(NodeView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listNodes(requirePrincipal(res), query));
  });

  routes.get({
    path: '/nodes/status', summary: 'Current status of every visible node', tags: ['nodes'], auth: true,
    query: NodeFilters, responses: { 200: PageOf(NodeStatusView) },
  }, async ({ query }, _req, res) => {
    const found = await q.listNodes(requirePrincipal(res), query);
    res.json({ ...found, items: found.items.map(toStatusView) });
  });

  routes.get({
    path: '/nodes/status/summary', summary: 'How many nodes are up, down, pending, unknown; and each group’s quorum', tags: ['nodes'], auth: true,
    query: z.strictObject({ project: Slug.optional() }), responses: { 200: SummaryView },
  }, async ({ query }, _req, res) => {
    res.json(await q.summary(requirePrincipal(res), query.project));
  });

  routes.get({
    path: '/nodes/:id', summary: 'A node, its status and its uptime over 24 h, 7 d and 30 d', tags: ['nodes'], auth: true,
    params: IdParams, responses: { 200: { body: NodeDetailsView, headers: { ETag: 'the node’s revision' } }, 404: 'no such node (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await requireNodeRead(res, params.id);
    const t = now();
    const [d1, d7, d30] = await Promise.all((['24h', '7d', '30d'] as const).map((w) => nodesUptime(db, [params.id], t - WINDOWS[w], t, t)));
    setEtag(res, found.revision);
    res.json({ ...found.view, uptime: { '24h': d1!.uptime_pct, '7d': d7!.uptime_pct, '30d': d30!.uptime_pct } });
  });

  routes.get({
    path: '/nodes/:id/history', summary: 'A node’s snapshots, newest first', tags: ['nodes'], auth: true,
    description: '`from`/`to` bound observed_at (from inclusive, to exclusive); follow `next_cursor` for older pages.',
    params: IdParams, query: HistoryQuery, responses: { 200: CursorPageOf(SnapshotView), 404: 'no such node (or not visible to you)' },
  }, async ({ params, query }, _req, res) => {
    await requireNodeRead(res, params.id);
    let sel = db.selectFrom('node_snapshots').selectAll().where('node_id', '=', params.id);
    if (query.from) sel = sel.where('observed_at', '>=', new Date(query.from));
    if (query.to) sel = sel.where('observed_at', '<', new Date(query.to));
    if (query.cursor) {
      const c = decodeCursor(query.cursor);
      sel = sel.where(sql<boolean>`(observed_at, revision) < (${c.at.toISOString()}::timestamptz, ${c.revision}::bigint)`);
    }
    const rows = await sel.orderBy('observed_at', 'desc').orderBy('revision', 'desc').limit(query.limit + 1).execute();
    const items = rows.slice(0, query.limit);
    const last = items.at(-1);
    res.json(cursorPage(items.map((r) => ({
      revision: String(r.revision), observed_at: iso(r.observed_at)!, status: r.status as 'up' | 'down', latency_ms: r.latency_ms,
      version: r.version, metrics: r.metrics as Record<string, number> | null, source: r.source as 'push' | 'poll' | 'monitor', error: r.error,
    })), query.limit, rows.length > query.limit && last ? encodeCursor(new Date(last.observed_at), String(last.revision)) : null));
  });

  routes.get({
    path: '/groups', summary: 'List groups', tags: ['groups'], auth: true, query: ProjectPage, responses: { 200: PageOf(GroupView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listGroups(requirePrincipal(res), query));
  });

  routes.get({
    path: '/groups/:id', summary: 'A group and its quorum', tags: ['groups'], auth: true,
    params: IdParams, responses: { 200: { body: GroupView, headers: { ETag: 'the group’s revision' } }, 404: 'no such group (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await q.group(params.id);
    if (!found || !can(requirePrincipal(res), 'nodes:read', found.project)) throw notFound('group', params.id, 'GROUP_NOT_FOUND');
    setEtag(res, found.revision);
    res.json(found.view);
  });

  routes.get({
    path: '/alert-channels', summary: 'List alert channels', tags: ['alerts'], auth: true,
    description: 'Never shows a channel’s secret. `deliveries` counts its alerts by state.',
    query: ProjectPage, responses: { 200: PageOf(AlertChannelView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listChannels(requirePrincipal(res), query));
  });

  return q;
};
