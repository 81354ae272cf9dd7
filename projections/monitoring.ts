// Monitoring read models (SPEC §5): nodes, their current status, snapshot history,
// uptime and metric rollups (minute/hour/day), status changes, groups with their quorum,
// alert channels — and the alert outbox rows for each status change.
//
// Snapshots are folded in log order per node (domain nextStatus): each one credits the
// time since the previous one to the previous status, at most the validity window, so
// time nobody was looking stays unknown. Runs of snapshots are applied in bulk (one
// multi-row statement per table), since they are nearly all the events. Idempotent: a
// snapshot at or below node_status.snapshot_revision is skipped, rows are guarded by
// stream revision, and change rows are keyed by the event that caused them.
import { sql, type Insertable, type Transaction } from 'kysely';
import {
  alertOf, groupStatus, nextStatus, snapshotValidityMs,
  type Check, type MonitoringEvent, type NodeStatus, type SnapshotRecorded,
} from '../domain/monitoring.ts';
import { splitSpan, UNIT_MS, UNITS } from '../infra/timeBuckets.ts';
import type { Tables } from '../infra/db/tables.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import { queueAlert } from './alertOutbox.ts';
import type { Emit, Projector } from './projector.ts';

export const NODE_LIFECYCLE_EVENT_TYPES = ['NodeRegistered', 'NodeUpdated', 'NodeDecommissioned'] as const;
export const MONITORING_EVENT_TYPES: MonitoringEvent['type'][] = [
  ...NODE_LIFECYCLE_EVENT_TYPES, 'SnapshotRecorded', 'GroupCreated', 'GroupUpdated', 'GroupDeleted', 'AlertChannelCreated', 'AlertChannelDeleted',
];

/** The change kinds that may have queued alerts (what the alert notifier wakes up for). */
export const STATUS_CHANGE_KINDS: readonly string[] = ['NodeStatusChanged', 'GroupStatusChanged'];

/** Fallback for a check without an interval (commands always set one). */
const FALLBACK_INTERVAL_S = 60;
// PostgreSQL takes at most 65,535 parameters per statement.
const MAX_PARAMS = 60_000;

type Trx = Transaction<Tables>;
type Recorded<E> = RecordedEvent & E;
type Snapshot = Recorded<SnapshotRecorded>;

const chunked = async <R extends object>(rows: R[], run: (part: R[]) => Promise<unknown>) => {
  if (rows.length === 0) return;
  const per = Math.max(1, Math.floor(MAX_PARAMS / Object.keys(rows[0]!).length));
  for (let i = 0; i < rows.length; i += per) await run(rows.slice(i, i + per));
};

const iso = (ms: number) => new Date(ms).toISOString();

type NodeInfo = {
  id: string; project: string; name: string; address: string; intervalS: number; retries: number;
  status: NodeStatus; failures: number; snapshotRevision: bigint; lastObservedMs: number | null;
  lastSnapshotStatus: string | null; latencyMs: number | null; version: string | null; lastError: string | null;
  lastSource: string | null; statusSince: string | null; snapshots: number; dirty: boolean;
};


/**
 * Recounts the groups of a project (or one group) after something that may change their
 * quorum, and records each group whose status changed. `key` names the cause, so that a
 * redelivered batch makes no second change row or alert.
 */
const recountGroups = async (trx: Trx, emit: Emit, where: { project: string } | { groupId: string }, key: string, atMs: number, position: RecordedEvent['position']) => {
  const { rows } = await sql<{ id: string; project: string; name: string; min_online: number; status: string; online: number; total: number; reporting: number }>`
    select g.id, g.project, g.name, g.min_online, g.status,
           count(n.id) filter (where s.status = 'up')::int as online,
           count(n.id)::int as total,
           count(n.id) filter (where s.status is not null and s.status <> 'unknown')::int as reporting
      from node_groups g
      left join nodes n on n.project = g.project and not n.decommissioned and n.active
           and (case when g.selector ? 'nodeIds' then (g.selector->'nodeIds') ? n.id::text
                     else n.labels @> coalesce(g.selector->'labels', '{}'::jsonb) end)
      left join node_status s on s.node_id = n.id
     where not g.deleted and ${'project' in where ? sql`g.project = ${where.project}` : sql`g.id = ${where.groupId}`}
     group by g.id`.execute(trx);
  for (const g of rows) {
    const to = groupStatus(g.online, g.reporting, g.min_online);
    const from = g.status as NodeStatus;
    await trx.updateTable('node_groups').set({
      online: g.online, total: g.total, status: to,
      ...(to !== from ? { status_since: iso(atMs) } : {}),
    }).where('id', '=', g.id).execute();
    if (to === from) continue;
    await trx.insertInto('group_status_changes').values({
      id: `${key}:${g.id}`, group_id: g.id, at: iso(atMs), from_status: from, to_status: to, online: g.online, total: g.total,
    }).onConflict((oc) => oc.column('id').doNothing()).execute();
    emit({ topic: 'groups', kind: 'GroupStatusChanged', id: g.id, project: g.project, position,
      data: { status: to, previous: from, online: g.online, total: g.total, min_online: g.min_online, at: iso(atMs) } });
    const alert = alertOf('group', from, to);
    if (alert) {
      await queueAlert(trx, `${key}:${g.id}`, g.project, alert, atMs, {
        group: { id: g.id, name: g.name, min_online: g.min_online, online: g.online, total: g.total }, status: { from, to },
      });
    }
  }
};

/** Node rows and status for the nodes of a run of snapshots, in one query. */
const loadNodes = async (trx: Trx, ids: string[]): Promise<Map<string, NodeInfo>> => {
  const rows = await trx.selectFrom('nodes as n').leftJoin('node_status as s', 's.node_id', 'n.id')
    .select(['n.id', 'n.project', 'n.name', 'n.address', 'n.check_config', 's.status', 's.failures', 's.snapshot_revision',
      's.last_observed_at', 's.last_snapshot_status', 's.latency_ms', 's.version', 's.last_error', 's.last_source', 's.status_since', 's.snapshots'])
    .where('n.id', 'in', ids).execute();
  return new Map(rows.map((r) => {
    const check = r.check_config as Partial<Check>;
    return [r.id, {
      id: r.id, project: r.project, name: r.name, address: r.address,
      intervalS: check.intervalS ?? FALLBACK_INTERVAL_S, retries: check.retries ?? 0,
      status: (r.status ?? 'unknown') as NodeStatus, failures: r.failures ?? 0,
      snapshotRevision: BigInt(r.snapshot_revision ?? -1), lastObservedMs: r.last_observed_at ? new Date(r.last_observed_at).getTime() : null,
      lastSnapshotStatus: r.last_snapshot_status ?? null, latencyMs: r.latency_ms ?? null, version: r.version ?? null,
      lastError: r.last_error ?? null, lastSource: r.last_source ?? null,
      statusSince: r.status_since ? new Date(r.status_since).toISOString() : null, snapshots: Number(r.snapshots ?? 0), dirty: false,
    }];
  }));
};

const writeStatus = (trx: Trx, nodes: NodeInfo[]) =>
  chunked(nodes.map((n) => ({
    node_id: n.id, status: n.status, failures: n.failures, snapshot_revision: n.snapshotRevision.toString(),
    last_observed_at: n.lastObservedMs === null ? null : iso(n.lastObservedMs), last_snapshot_status: n.lastSnapshotStatus,
    latency_ms: n.latencyMs, version: n.version, last_error: n.lastError, last_source: n.lastSource,
    status_since: n.statusSince, snapshots: n.snapshots,
  })), (part) => trx.insertInto('node_status').values(part).onConflict((oc) => oc.column('node_id').doUpdateSet((eb) => ({
    status: eb.ref('excluded.status'), failures: eb.ref('excluded.failures'), snapshot_revision: eb.ref('excluded.snapshot_revision'),
    last_observed_at: eb.ref('excluded.last_observed_at'), last_snapshot_status: eb.ref('excluded.last_snapshot_status'),
    latency_ms: eb.ref('excluded.latency_ms'), version: eb.ref('excluded.version'), last_error: eb.ref('excluded.last_error'),
    last_source: eb.ref('excluded.last_source'), status_since: eb.ref('excluded.status_since'), snapshots: eb.ref('excluded.snapshots'),
  }))).execute());

/** A run of SnapshotRecorded events: history rows, status, rollups, changes and alerts. */
const applySnapshots = async (trx: Trx, run: Snapshot[], emit: Emit) => {
  const nodes = await loadNodes(trx, [...new Set(run.map((e) => e.data.nodeId))]);
  const history: Insertable<Tables['node_snapshots']>[] = [];
  const uptime = new Map<string, { node_id: string; unit: string; bucket: string; up_ms: number; down_ms: number; pending_ms: number }>();
  const metrics = new Map<string, { metric: string; unit: string; bucket: string; node_id: string; count: number; sum: number; min: number; max: number }>();

  for (const e of run) {
    const node = nodes.get(e.data.nodeId);
    if (!node || e.revision <= node.snapshotRevision) continue; // unknown node, or applied before
    const d = e.data;
    const t = Date.parse(d.observedAt);
    node.snapshotRevision = e.revision;
    node.snapshots += 1;
    node.dirty = true;
    history.push({ node_id: d.nodeId, revision: e.revision.toString(), observed_at: d.observedAt, status: d.status,
      latency_ms: d.latencyMs, version: d.version, metrics: d.metrics ? JSON.stringify(d.metrics) : null, source: d.source, error: d.error });
    for (const [name, value] of Object.entries(d.metrics ?? {})) {
      for (const unit of UNITS) {
        const bucket = iso(Math.floor(t / UNIT_MS[unit]) * UNIT_MS[unit]);
        const k = `${name}\u0000${unit}\u0000${bucket}\u0000${d.nodeId}`;
        const m = metrics.get(k);
        if (m) { m.count += 1; m.sum += value; m.min = Math.min(m.min, value); m.max = Math.max(m.max, value); }
        else metrics.set(k, { metric: name, unit, bucket, node_id: d.nodeId, count: 1, sum: value, min: value, max: value });
      }
    }
    // An observation older than the newest one is history only: the present is already known.
    if (node.lastObservedMs !== null && t < node.lastObservedMs) continue;
    if (node.lastObservedMs !== null && node.status !== 'unknown') {
      const credited = Math.min(t - node.lastObservedMs, snapshotValidityMs(node.intervalS));
      const column = node.status === 'up' ? 'up_ms' : node.status === 'down' ? 'down_ms' : 'pending_ms';
      for (const unit of UNITS) {
        for (const [bucket, ms] of splitSpan(node.lastObservedMs, node.lastObservedMs + credited, UNIT_MS[unit])) {
          const k = `${d.nodeId}\u0000${unit}\u0000${bucket}`;
          const row = uptime.get(k) ?? { node_id: d.nodeId, unit, bucket: iso(bucket), up_ms: 0, down_ms: 0, pending_ms: 0 };
          row[column] += ms;
          uptime.set(k, row);
        }
      }
    }
    const from = node.status;
    const next = nextStatus({ status: from, failures: node.failures }, d, node.retries);
    Object.assign(node, {
      status: next.status, failures: next.failures, lastObservedMs: t, lastSnapshotStatus: d.status,
      latencyMs: d.latencyMs, version: d.version ?? node.version, lastError: d.error, lastSource: d.source,
    });
    if (next.status === from) continue;
    node.statusSince = d.observedAt;
    await trx.insertInto('node_status_changes').values({
      id: e.id, node_id: d.nodeId, project: node.project, at: d.observedAt, from_status: from, to_status: next.status,
    }).onConflict((oc) => oc.column('id').doNothing()).execute();
    emit({ topic: 'nodes', kind: 'NodeStatusChanged', id: d.nodeId, project: node.project, position: e.position,
      data: { status: next.status, previous: from, at: d.observedAt, latency_ms: d.latencyMs, error: d.error } });
    const alert = alertOf('node', from, next.status);
    if (alert) {
      await queueAlert(trx, e.id, node.project, alert, t, {
        node: { id: node.id, name: node.name, address: node.address }, status: { from, to: next.status }, error: d.error, latency_ms: d.latencyMs,
      });
    }
    // The groups read node_status: write this node's row first.
    await writeStatus(trx, [node]);
    node.dirty = false;
    await recountGroups(trx, emit, { project: node.project }, e.id, t, e.position);
  }

  await chunked(history, (part) => trx.insertInto('node_snapshots').values(part).onConflict((oc) => oc.columns(['node_id', 'revision']).doNothing()).execute());
  await chunked([...uptime.values()], (part) => trx.insertInto('node_uptime_rollups').values(part)
    .onConflict((oc) => oc.columns(['node_id', 'unit', 'bucket']).doUpdateSet({
      up_ms: sql`node_uptime_rollups.up_ms + excluded.up_ms`,
      down_ms: sql`node_uptime_rollups.down_ms + excluded.down_ms`,
      pending_ms: sql`node_uptime_rollups.pending_ms + excluded.pending_ms`,
    })).execute());
  await chunked([...metrics.values()], (part) => trx.insertInto('node_metric_rollups').values(part)
    .onConflict((oc) => oc.columns(['metric', 'unit', 'bucket', 'node_id']).doUpdateSet({
      count: sql`node_metric_rollups.count + excluded.count`,
      sum: sql`node_metric_rollups.sum + excluded.sum`,
      min: sql`least(node_metric_rollups.min, excluded.min)`,
      max: sql`greatest(node_metric_rollups.max, excluded.max)`,
    })).execute());
  await writeStatus(trx, [...nodes.values()].filter((n) => n.dirty));
};

const checkConfig = (check: Check) => {
  const { type: _type, ...config } = check;
  return JSON.stringify(config);
};

/** Every event but snapshots: a node's, a group's or a channel's life. */
const applyOne = async (trx: Trx, recorded: RecordedEvent, emit: Emit) => {
  const e = recorded as Recorded<Exclude<MonitoringEvent, SnapshotRecorded>>;
  const at = recorded.createdAt.toISOString();
  const atMs = recorded.createdAt.getTime();
  const revision = recorded.revision.toString();
  const { position } = recorded;
  switch (e.type) {
    case 'NodeRegistered': {
      const d = e.data;
      const row = { project: d.project, name: d.name, address: d.address, pubkey: d.pubkey, labels: JSON.stringify(d.labels),
        check_type: d.check.type, check_config: checkConfig(d.check), active: d.active, decommissioned: false, updated_at: at, revision };
      // A decommissioned node registered again keeps its id, history and status row.
      await trx.insertInto('nodes').values({ id: d.nodeId, ...row, created_at: at })
        .onConflict((oc) => oc.column('id').doUpdateSet(row).where('nodes.revision', '<', revision)).execute();
      await trx.insertInto('node_status').values({ node_id: d.nodeId, status: 'unknown' }).onConflict((oc) => oc.column('node_id').doNothing()).execute();
      emit({ topic: 'nodes', kind: e.type, id: d.nodeId, project: d.project, position, data: { name: d.name } });
      await recountGroups(trx, emit, { project: d.project }, recorded.id, atMs, position);
      return;
    }
    case 'NodeUpdated': {
      const { nodeId, labels, check, ...rest } = e.data;
      const updated = await trx.updateTable('nodes').set({
        ...rest, ...(labels ? { labels: JSON.stringify(labels) } : {}),
        ...(check ? { check_type: check.type, check_config: checkConfig(check) } : {}), updated_at: at, revision,
      }).where('id', '=', nodeId).where('revision', '<', revision).returning(['project', 'name']).executeTakeFirst();
      if (!updated) return;
      emit({ topic: 'nodes', kind: e.type, id: nodeId, project: updated.project, position, data: { name: updated.name } });
      await recountGroups(trx, emit, { project: updated.project }, recorded.id, atMs, position);
      return;
    }
    case 'NodeDecommissioned': {
      const done = await trx.updateTable('nodes').set({ decommissioned: true, updated_at: at, revision })
        .where('id', '=', e.data.nodeId).where('revision', '<', revision).executeTakeFirst();
      if (done.numUpdatedRows === 0n) return;
      emit({ topic: 'nodes', kind: e.type, id: e.data.nodeId, project: e.data.project, position, data: { name: e.data.name } });
      await recountGroups(trx, emit, { project: e.data.project }, recorded.id, atMs, position);
      return;
    }
    case 'GroupCreated': {
      const d = e.data;
      await trx.insertInto('node_groups').values({
        id: d.groupId, project: d.project, name: d.name, min_online: d.minOnline, selector: JSON.stringify(d.selector),
        created_at: at, updated_at: at, revision,
      }).onConflict((oc) => oc.column('id').doNothing()).execute();
      emit({ topic: 'groups', kind: e.type, id: d.groupId, project: d.project, position, data: { name: d.name } });
      await recountGroups(trx, emit, { groupId: d.groupId }, recorded.id, atMs, position);
      return;
    }
    case 'GroupUpdated': {
      const { groupId, minOnline, selector, name } = e.data;
      const updated = await trx.updateTable('node_groups').set({
        ...(name !== undefined ? { name } : {}), ...(minOnline !== undefined ? { min_online: minOnline } : {}),
        ...(selector !== undefined ? { selector: JSON.stringify(selector) } : {}), updated_at: at, revision,
      }).where('id', '=', groupId).where('revision', '<', revision).returning(['project', 'name']).executeTakeFirst();
      if (!updated) return;
      emit({ topic: 'groups', kind: e.type, id: groupId, project: updated.project, position, data: { name: updated.name } });
      await recountGroups(trx, emit, { groupId }, recorded.id, atMs, position);
      return;
    }
    case 'GroupDeleted': {
      const done = await trx.updateTable('node_groups').set({ deleted: true, updated_at: at, revision })
        .where('id', '=', e.data.groupId).where('revision', '<', revision).executeTakeFirst();
      if (done.numUpdatedRows > 0n) emit({ topic: 'groups', kind: e.type, id: e.data.groupId, project: e.data.project, position });
      return;
    }
    case 'AlertChannelCreated': {
      const d = e.data;
      await trx.insertInto('alert_channels').values({
        id: d.channelId, project: d.project, name: d.name, url: d.url, events: JSON.stringify(d.events), secret_ref: d.secretRef, created_at: at, revision,
      }).onConflict((oc) => oc.column('id').doNothing()).execute();
      return;
    }
    case 'AlertChannelDeleted':
      await trx.updateTable('alert_channels').set({ deleted: true, revision }).where('id', '=', e.data.channelId).where('revision', '<', revision).execute();
      return;
    default: { const _never: never = e; void _never; }
  }
};

export const monitoringProjection: Projector = {
  name: 'monitoring',
  version: 1,
  handles: MONITORING_EVENT_TYPES,
  tables: ['nodes', 'node_status', 'node_snapshots', 'node_uptime_rollups', 'node_metric_rollups', 'node_status_changes',
    'node_groups', 'group_status_changes', 'alert_channels'],
  async apply(trx, events, emit) {
    // Consecutive snapshots go in bulk; anything else one by one, in order.
    for (let i = 0; i < events.length; ) {
      if (events[i]!.type !== 'SnapshotRecorded') {
        await applyOne(trx, events[i]!, emit);
        i += 1;
        continue;
      }
      let j = i;
      while (j < events.length && events[j]!.type === 'SnapshotRecorded') j += 1;
      await applySnapshots(trx, events.slice(i, j) as Snapshot[], emit);
      i = j;
    }
  },
};
