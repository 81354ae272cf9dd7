// Kernel read model: one row per stream with its revision and last event. It lets
// operators browse the log and is the runtime's own end-to-end exercise.
import { sql } from 'kysely';
import type { Projector } from './projector.ts';

/** `job-1f0c…` → `job`: the part of a stream id before the first '-' (EventStoreDB's category). */
export const streamCategory = (streamId: string): string => streamId.split('-', 1)[0]!;

export const streamCatalogProjection: Projector = {
  name: 'stream_catalog',
  version: 1,
  handles: 'all',
  tables: ['stream_catalog'],
  async apply(trx, events, emit) {
    const latest = new Map<string, { first: (typeof events)[number]; last: (typeof events)[number] }>();
    for (const e of events) {
      const seen = latest.get(e.streamId);
      if (!seen) latest.set(e.streamId, { first: e, last: e });
      else if (e.revision > seen.last.revision) seen.last = e;
    }
    const rows = [...latest.values()].map(({ first, last }) => ({
      stream_id: last.streamId,
      category: streamCategory(last.streamId),
      revision: last.revision.toString(),
      event_count: (last.revision + 1n).toString(),
      last_type: last.type,
      first_at: first.createdAt,
      last_at: last.createdAt,
    }));
    if (rows.length === 0) return;
    // Guarded by revision: re-applying an old batch never moves a row backwards.
    await trx.insertInto('stream_catalog').values(rows).onConflict((oc) => oc.column('stream_id').doUpdateSet({
      revision: sql`excluded.revision`,
      event_count: sql`excluded.event_count`,
      last_type: sql`excluded.last_type`,
      last_at: sql`excluded.last_at`,
    }).where('stream_catalog.revision', '<', sql<string>`excluded.revision`)).execute();
    for (const r of rows) {
      emit({ topic: 'streams', kind: 'updated', id: r.stream_id, data: { revision: r.revision, last_type: r.last_type }, position: latest.get(r.stream_id)!.last.position });
    }
  },
};
