import { sql, type Kysely } from 'kysely';

// Idempotency-Key (SPEC §3): the first response to a POST command, kept 24 h per caller
// and key, so that a retry is answered from here and appends nothing. A row whose status
// is null is a request still in progress (infra/http/idempotency.ts).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table idempotency_keys (
      key text not null,
      principal text not null,
      method text not null,
      path text not null,
      request_hash text not null,
      status int,
      headers jsonb,
      body text,
      created_at timestamptz not null default now(),
      primary key (principal, key)
    )`.execute(db);
  // For the opportunistic pruning of expired keys.
  await sql`create index idempotency_keys_created_at_idx on idempotency_keys (created_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table if exists idempotency_keys`.execute(db);
}
