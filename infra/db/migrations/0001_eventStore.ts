import { sql, type Kysely } from 'kysely';

// The event log. See DESIGN.md §3: subscribers read only below pg_snapshot_xmin and
// checkpoint on (transaction_id, global_position), so an event that commits late is
// never skipped. All appends go through opl_append(): one statement, one round trip.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table events (
      global_position bigserial primary key,
      transaction_id xid8 not null default pg_current_xact_id(),
      stream_id text not null,
      stream_revision bigint not null,
      event_id uuid not null,
      type text not null,
      data jsonb not null,
      metadata jsonb not null,
      created_at timestamptz not null default now(),
      constraint events_stream_revision_key unique (stream_id, stream_revision),
      constraint events_event_id_key unique (event_id)
    )`.execute(db);
  await sql`create index events_tx_position_idx on events (transaction_id, global_position)`.execute(db);
  await sql`create index events_type_idx on events (type, transaction_id, global_position)`.execute(db);

  // p_expected: -1 no_stream, -2 any, -3 stream_exists, n >= 0 the exact revision.
  // Answers ok=false with the actual revision on a mismatch (no exception, no subtransaction);
  // a race that slips past the check ends on the unique key, which the adapter maps to a
  // concurrency error. A batch whose first event id is already in the stream is a retry:
  // it appends nothing and answers the original positions. Any other id of the batch
  // that is already stored is an error (P0002), as is a first one of another stream.
  await sql.raw(`
    create function opl_append(p_stream text, p_expected bigint, p_events jsonb)
    returns table (ok boolean, revision bigint, transaction_id text, first_position bigint, last_position bigint, duplicate boolean)
    language plpgsql as $$
    declare
      v_current bigint;
      v_dup record;
      v_count int := jsonb_array_length(p_events);
    begin
      -- Writers to one stream take turns (the two-key advisory space is not the one of
      -- database.ts's session locks): a race is settled here, not by retries on the key.
      perform pg_advisory_xact_lock(1869639788, hashtext(p_stream));
      select e.stream_id, e.stream_revision into v_dup from events e where e.event_id = (p_events->0->>'id')::uuid;
      if found then
        if v_dup.stream_id <> p_stream then
          raise exception 'event id % already belongs to stream %', p_events->0->>'id', v_dup.stream_id using errcode = 'P0002';
        end if;
        return query select true, max(e.stream_revision), max(e.transaction_id)::text, min(e.global_position), max(e.global_position), true
          from events e where e.event_id in (select (x->>'id')::uuid from jsonb_array_elements(p_events) x);
        return;
      end if;
      select e.event_id, e.stream_id into v_dup from events e
       where e.event_id in (select (x->>'id')::uuid from jsonb_array_elements(p_events) x) limit 1;
      if found then
        raise exception 'event id % already belongs to stream %', v_dup.event_id, v_dup.stream_id using errcode = 'P0002';
      end if;
      select max(e.stream_revision) into v_current from events e where e.stream_id = p_stream;
      if (p_expected = -1 and v_current is not null)
         or (p_expected = -3 and v_current is null)
         or (p_expected >= 0 and v_current is distinct from p_expected) then
        return query select false, v_current, null::text, null::bigint, null::bigint, false;
        return;
      end if;
      return query
        with ins as (
          insert into events (stream_id, stream_revision, event_id, type, data, metadata)
          select p_stream, coalesce(v_current, -1) + x.ord, (x.e->>'id')::uuid, x.e->>'type', x.e->'data', x.e->'metadata'
            from jsonb_array_elements(p_events) with ordinality as x(e, ord)
          returning events.global_position
        )
        select true, coalesce(v_current, -1) + v_count, pg_current_xact_id()::text, min(ins.global_position), max(ins.global_position), false from ins;
      perform pg_notify('opl_events', pg_current_xact_id()::text);
    end $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function if exists opl_append(text, bigint, jsonb)`.execute(db);
  await sql`drop table if exists events`.execute(db);
}
