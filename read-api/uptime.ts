// Uptime over any window from the rollups (DESIGN §4): the window is tiled by the coarsest
// buckets that fit (domain/timeBuckets.ts), so a year reads about 500 rows, not half a
// million snapshots. The time since a node's last snapshot is not in the rollups yet (it
// is credited when the next one arrives): it is added from the node's status row, up to
// the validity window. Time nobody observed is `unknown`, never `up`.
import { sql, type Kysely } from 'kysely';
import { coverWindow, floorTo, UNIT_MS } from '../infra/timeBuckets.ts';
import type { Tables } from '../infra/db/tables.ts';

export type UptimeTotals = { up_ms: number; down_ms: number; pending_ms: number; unknown_ms: number; uptime_pct: number | null };

/** Percent up of the observed time (3 decimals), or null when nothing was observed. */
export const percentUp = (up: number, observed: number): number | null => (observed > 0 ? Math.round((up / observed) * 100_000) / 1000 : null);

export const totals = (windowMs: number, up: number, down: number, pending: number): UptimeTotals => ({
  up_ms: up, down_ms: down, pending_ms: pending,
  unknown_ms: Math.max(0, windowMs - up - down - pending),
  uptime_pct: percentUp(up, up + down + pending),
});

/** The windows the API names, in ms. */
export const WINDOWS = { '24h': 86_400_000, '7d': 7 * 86_400_000, '30d': 30 * 86_400_000, '90d': 90 * 86_400_000, '365d': 365 * 86_400_000 } as const;
export type WindowName = keyof typeof WINDOWS;

/** The minute-aligned window actually summed (rollups have minute resolution). */
export const alignedWindow = (fromMs: number, toMs: number) => ({ from: floorTo(fromMs, UNIT_MS.minute), to: Math.ceil(toMs / UNIT_MS.minute) * UNIT_MS.minute });

/**
 * Up/down/pending time of the nodes in `nodeIds` (all of them summed) over [from, to):
 * one query over the rollups, one over the status rows for the open intervals.
 */
export const nodesUptime = async (db: Kysely<Tables>, nodeIds: readonly string[], fromMs: number, toMs: number, nowMs: number): Promise<UptimeTotals> => {
  const { from, to } = alignedWindow(fromMs, toMs);
  const windowMs = (to - from) * nodeIds.length;
  if (nodeIds.length === 0 || to <= from) return totals(0, 0, 0, 0);
  const cover = coverWindow(from, to);
  const ranges = sql.join(cover.map((c) =>
    sql`(unit = ${c.unit} and bucket >= ${new Date(c.from).toISOString()}::timestamptz and bucket < ${new Date(c.to).toISOString()}::timestamptz)`), sql` or `);
  const ids = sql`node_id = any(${[...nodeIds]}::uuid[])`;
  const [{ rows: [sum] }, open] = await Promise.all([
    sql<{ up: string | null; down: string | null; pending: string | null }>`
      select sum(up_ms)::text as up, sum(down_ms)::text as down, sum(pending_ms)::text as pending
        from node_uptime_rollups where ${ids} and (${ranges})`.execute(db),
    db.selectFrom('node_status as s').innerJoin('nodes as n', 'n.id', 's.node_id')
      .select(['s.status', 's.last_observed_at', 'n.check_config'])
      .where('s.node_id', 'in', [...nodeIds]).where('s.last_observed_at', 'is not', null).where('s.status', '!=', 'unknown').execute(),
  ]);
  let up = Number(sum?.up ?? 0);
  let down = Number(sum?.down ?? 0);
  let pending = Number(sum?.pending ?? 0);
  for (const s of open) {
    const last = new Date(s.last_observed_at!).getTime();
    const intervalS = (s.check_config as { intervalS?: number }).intervalS ?? 60;
    const end = Math.min(nowMs, last + 2 * intervalS * 1000, to);
    const ms = Math.max(0, end - Math.max(last, from));
    if (s.status === 'up') up += ms;
    else if (s.status === 'down') down += ms;
    else pending += ms;
  }
  return totals(windowMs, up, down, pending);
};

type Change = { at: Date | string; to_status: string };

/** Up/down time of a status timeline (a group's changes, oldest first; `before` = the status at `from`). */
export const timelineTotals = (before: string, changes: readonly Change[], fromMs: number, toMs: number): UptimeTotals => {
  let up = 0;
  let down = 0;
  let status = before;
  let t = fromMs;
  const credit = (until: number) => {
    const ms = Math.max(0, Math.min(until, toMs) - t);
    if (status === 'up') up += ms;
    else if (status === 'down') down += ms;
  };
  for (const c of changes) {
    const at = new Date(c.at).getTime();
    if (at <= fromMs) { status = c.to_status; continue; }
    if (at >= toMs) break;
    credit(at);
    t = at;
    status = c.to_status;
  }
  credit(toMs);
  return totals(toMs - fromMs, up, down, 0);
};

/** A group's status changes over [from, to), with the status it had at `from`. */
export const groupTimeline = async (db: Kysely<Tables>, groupId: string, fromMs: number, toMs: number) => {
  const [before, changes] = await Promise.all([
    db.selectFrom('group_status_changes').select('to_status').where('group_id', '=', groupId)
      .where('at', '<=', new Date(fromMs)).orderBy('at', 'desc').orderBy('id', 'desc').limit(1).executeTakeFirst(),
    db.selectFrom('group_status_changes').select(['at', 'to_status']).where('group_id', '=', groupId)
      .where('at', '>', new Date(fromMs)).where('at', '<', new Date(toMs)).orderBy('at').orderBy('id').execute(),
  ]);
  return { before: before?.to_status ?? 'unknown', changes };
};
