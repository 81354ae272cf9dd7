import { sql, type Kysely } from 'kysely';

// Read models of monitoring (built by projections/monitoring.ts), and the alert outbox
// (written by that projection, drained by workers/alertNotifier.ts).
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table nodes (
      id uuid primary key,
      project text not null,
      name text not null,
      address text not null,
      pubkey text,
      labels jsonb not null,
      check_type text not null,
      check_config jsonb not null,
      active boolean not null,
      decommissioned boolean not null default false,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  await sql`create index nodes_project_name_idx on nodes (project, lower(name))`.execute(db);
  // The current status, and what folding the snapshots in log order needs (failures, the last one).
  await sql`
    create table node_status (
      node_id uuid primary key,
      status text not null,
      failures int not null default 0,
      snapshot_revision bigint not null default -1,
      last_observed_at timestamptz,
      last_snapshot_status text,
      latency_ms double precision,
      version text,
      last_error text,
      last_source text,
      status_since timestamptz,
      snapshots bigint not null default 0
    )`.execute(db);
  await sql`
    create table node_snapshots (
      node_id uuid not null,
      revision bigint not null,
      observed_at timestamptz not null,
      status text not null,
      latency_ms double precision,
      version text,
      metrics jsonb,
      source text not null,
      error text,
      primary key (node_id, revision)
    )`.execute(db);
  await sql`create index node_snapshots_time_idx on node_snapshots (node_id, observed_at desc, revision desc)`.execute(db);
  // Time (ms) spent up / down / pending per node and minute, hour, day (UTC).
  await sql`
    create table node_uptime_rollups (
      node_id uuid not null,
      unit text not null,
      bucket timestamptz not null,
      up_ms bigint not null default 0,
      down_ms bigint not null default 0,
      pending_ms bigint not null default 0,
      primary key (node_id, unit, bucket)
    )`.execute(db);
  await sql`
    create table node_metric_rollups (
      metric text not null,
      unit text not null,
      bucket timestamptz not null,
      node_id uuid not null,
      count bigint not null,
      sum double precision not null,
      min double precision not null,
      max double precision not null,
      primary key (metric, unit, bucket, node_id)
    )`.execute(db);
  await sql`
    create table node_status_changes (
      id text primary key,
      node_id uuid not null,
      project text not null,
      at timestamptz not null,
      from_status text not null,
      to_status text not null
    )`.execute(db);
  await sql`create index node_status_changes_node_idx on node_status_changes (node_id, at)`.execute(db);
  await sql`
    create table node_groups (
      id uuid primary key,
      project text not null,
      name text not null,
      min_online int not null,
      selector jsonb not null,
      status text not null default 'unknown',
      online int not null default 0,
      total int not null default 0,
      status_since timestamptz,
      deleted boolean not null default false,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  await sql`create index node_groups_project_idx on node_groups (project, name)`.execute(db);
  await sql`
    create table group_status_changes (
      id text primary key,
      group_id uuid not null,
      at timestamptz not null,
      from_status text not null,
      to_status text not null,
      online int not null,
      total int not null
    )`.execute(db);
  await sql`create index group_status_changes_group_idx on group_status_changes (group_id, at)`.execute(db);
  await sql`
    create table alert_channels (
      id uuid primary key,
      project text not null,
      name text not null,
      url text not null,
      events jsonb not null,
      secret_ref text not null,
      deleted boolean not null default false,
      created_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  // The outbox: one row per (status change, channel), created in the projection's
  // transaction and keyed so that a rebuild never creates a second one. Not a projection
  // table: a rebuild leaves it (and what was delivered) alone.
  await sql`
    create table alert_deliveries (
      id text primary key,
      channel_id uuid not null,
      event text not null,
      payload jsonb not null,
      state text not null default 'pending',
      attempts int not null default 0,
      next_attempt_at timestamptz not null,
      last_error text,
      last_status int,
      created_at timestamptz not null,
      delivered_at timestamptz
    )`.execute(db);
  await sql`create index alert_deliveries_due_idx on alert_deliveries (next_attempt_at) where state = 'pending'`.execute(db);
  await sql`create index alert_deliveries_channel_idx on alert_deliveries (channel_id, created_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of ['alert_deliveries', 'alert_channels', 'group_status_changes', 'node_groups', 'node_status_changes',
    'node_metric_rollups', 'node_uptime_rollups', 'node_snapshots', 'node_status', 'nodes']) {
    await sql`drop table if exists ${sql.table(t)}`.execute(db);
  }
}
