import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table projection_checkpoints (
      name text primary key,
      version int not null,
      transaction_id xid8 not null default '0',
      global_position bigint not null default 0,
      updated_at timestamptz not null default now()
    )`.execute(db);
  await sql`
    create table stream_catalog (
      stream_id text primary key,
      category text not null,
      revision bigint not null,
      event_count bigint not null,
      last_type text not null,
      first_at timestamptz not null,
      last_at timestamptz not null
    )`.execute(db);
  await sql`create index stream_catalog_category_idx on stream_catalog (category)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table if exists stream_catalog`.execute(db);
  await sql`drop table if exists projection_checkpoints`.execute(db);
}
