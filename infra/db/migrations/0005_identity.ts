import { sql, type Kysely } from 'kysely';

// Read models of identity and projects (built by projections/identity.ts and projections/projects.ts).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table users (
      id uuid primary key,
      username text not null,
      email text,
      role text not null,
      active boolean not null default true,
      rate_limit_per_second int,
      rate_limit_burst int,
      password_ref text not null,
      session_version int not null default 0,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  await sql`create unique index users_username_key on users (lower(username))`.execute(db);
  await sql`
    create table api_tokens (
      id uuid primary key,
      user_id uuid not null,
      name text not null,
      token_hash text not null,
      prefix text not null,
      scopes jsonb,
      project text,
      expires_at timestamptz,
      revoked_at timestamptz,
      created_at timestamptz not null,
      last_used_at timestamptz
    )`.execute(db);
  await sql`create unique index api_tokens_hash_key on api_tokens (token_hash)`.execute(db);
  await sql`create index api_tokens_user_idx on api_tokens (user_id)`.execute(db);
  await sql`
    create table projects (
      slug text primary key,
      display_name text not null,
      billing_account jsonb,
      deleted boolean not null default false,
      created_by uuid,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  await sql`
    create table project_members (
      project text not null,
      user_id uuid not null,
      role text not null,
      updated_at timestamptz not null,
      primary key (project, user_id)
    )`.execute(db);
  await sql`create index project_members_user_idx on project_members (user_id)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of ['project_members', 'projects', 'api_tokens', 'users']) await sql`drop table if exists ${sql.table(t)}`.execute(db);
}
