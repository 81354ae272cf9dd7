import { sql, type Kysely } from 'kysely';

// Group commit: appends to many streams (each with expected revision `any`) in one
// transaction, so that a stream of small independent writes (node snapshots from many
// nodes) pays one commit — one disk flush — per batch instead of one per event.
// Streams are locked in the order of their lock keys, so two batches never wait on each
// other in a cycle (opl_append takes the transaction-scoped stream lock for `any`).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`
    create function opl_append_many(p_batch jsonb)
    returns table (ord int, revision bigint, transaction_id text, last_position bigint)
    language plpgsql as $$
    declare
      item record;
      r record;
    begin
      for item in
        select x.e, x.n from jsonb_array_elements(p_batch) with ordinality as x(e, n)
         order by hashtext(x.e->>'stream'), x.n
      loop
        select * into r from opl_append(item.e->>'stream', -2, item.e->'events');
        ord := item.n; revision := r.revision; transaction_id := r.transaction_id; last_position := r.last_position;
        return next;
      end loop;
    end $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function if exists opl_append_many(jsonb)`.execute(db);
}
