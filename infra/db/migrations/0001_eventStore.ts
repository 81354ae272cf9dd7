import { sql, type Kysely } from 'kysely';

// The event log. See DESIGN.md §3: subscribers read only below pg_snapshot_xmin and
// checkpoint on (transaction_id, global_position), so an event that commits late is
// never skipped. All appends go through opl_append(): one statement, one round trip.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table events (
      global_position bigserial not null,
      transaction_id xid8 not null default pg_current_xact_id(),
      stream_id text not null,
      stream_revision bigint not null,
      event_id uuid not null,
      type text not null,
      data jsonb not null,
      metadata jsonb not null,
      created_at timestamptz not null default now(),
      constraint events_stream_revision_key unique (stream_id, stream_revision),
      constraint events_pkey primary key (transaction_id, global_position),
      constraint events_event_id_key unique (event_id)
    )`.execute(db);
  await sql`create index events_type_idx on events (type, transaction_id, global_position)`.execute(db);

  // p_expected: -1 no_stream, -2 any, -3 stream_exists, n >= 0 the exact revision.
  // One statement per append, and nothing in it that grows with the log: `any` writers to
  // one stream take turns on a transaction-scoped advisory lock (a two-key space apart from
  // database.ts's session locks) so they never lose a race; for an exact expectation the
  // unique key settles races. The revision comes from a backward index scan, and a
  // mismatch answers ok=false (no exception, no subtransaction). Retries of stored events
  // are recognised by the adapter only on the slow path (a mismatch or the event_id key).
  // No NOTIFY here: it would hold PostgreSQL's global notify lock across the commit's
  // disk flush and so serialise every append; the adapter notifies after commit.
  await sql.raw(`
    create function opl_append(p_stream text, p_expected bigint, p_events jsonb)
    returns table (ok boolean, revision bigint, transaction_id text, first_position bigint, last_position bigint)
    language plpgsql as $$
    declare
      v_current bigint;
      v_count int := jsonb_array_length(p_events);
    begin
      if p_expected = -2 then
        perform pg_advisory_xact_lock(1869639788, hashtext(p_stream));
      end if;
      select max(e.stream_revision) into v_current from events e where e.stream_id = p_stream;
      if (p_expected = -1 and v_current is not null)
         or (p_expected = -3 and v_current is null)
         or (p_expected >= 0 and v_current is distinct from p_expected) then
        return query select false, v_current, null::text, null::bigint, null::bigint;
        return;
      end if;
      return query
        with ins as (
          insert into events (stream_id, stream_revision, event_id, type, data, metadata)
          select p_stream, coalesce(v_current, -1) + x.ord, (x.e->>'id')::uuid, x.e->>'type', x.e->'data', x.e->'metadata'
            from jsonb_array_elements(p_events) with ordinality as x(e, ord)
          returning events.global_position
        )
        select true, coalesce(v_current, -1) + v_count, pg_current_xact_id()::text, min(ins.global_position), max(ins.global_position) from ins;
    end $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function if exists opl_append(text, bigint, jsonb)`.execute(db);
  await sql`drop table if exists events`.execute(db);
}
