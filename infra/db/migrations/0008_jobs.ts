import { sql, type Kysely } from 'kysely';

// Read models of jobs (built by projections/jobs.ts), and two operational stores the job
// runner writes itself: execution output (too big for the log) and execution leases.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table systems (
      id uuid primary key,
      project text not null,
      name text not null,
      hostname text not null,
      port int not null,
      system_type text not null,
      username text not null,
      auth_kind text not null,
      credential_ref text not null,
      description text,
      labels jsonb not null,
      is_active boolean not null,
      health_status text not null default 'unknown',
      last_health_check timestamptz,
      response_time_ms double precision,
      last_error text,
      host_key_fingerprint text,
      deleted boolean not null default false,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  await sql`create index systems_project_idx on systems (project, name)`.execute(db);
  await sql`
    create table jobs (
      id uuid primary key,
      project text not null,
      name text not null,
      command text not null,
      status text not null,
      schedule_at timestamptz,
      timeout_seconds int not null,
      max_parallel int,
      created_by uuid,
      template_id uuid,
      params jsonb,
      queued_behind uuid,
      cancelled boolean not null default false,
      total int not null,
      created_at timestamptz not null,
      started_at timestamptz,
      finished_at timestamptz,
      revision bigint not null
    )`.execute(db);
  await sql`create index jobs_project_idx on jobs (project, created_at desc)`.execute(db);
  await sql`create index jobs_open_idx on jobs (schedule_at) where status in ('pending', 'running')`.execute(db);
  await sql`create index jobs_template_idx on jobs (template_id, created_at desc)`.execute(db);
  await sql`
    create table job_executions (
      id uuid primary key,
      job_id uuid not null,
      project text not null,
      system_id uuid not null,
      system_name text not null,
      status text not null,
      started_at timestamptz,
      completed_at timestamptz,
      exit_code int,
      error_message text,
      duration_seconds double precision,
      stdout_bytes bigint not null default 0,
      stderr_bytes bigint not null default 0,
      stdout_truncated boolean not null default false,
      stderr_truncated boolean not null default false,
      ord int not null
    )`.execute(db);
  await sql`create index job_executions_job_idx on job_executions (job_id, ord)`.execute(db);
  await sql`create index job_executions_open_idx on job_executions (status) where status in ('pending', 'running')`.execute(db);
  await sql`
    create table job_templates (
      id uuid primary key,
      project text not null,
      name text not null,
      command text not null,
      parameters jsonb not null,
      targets jsonb not null,
      cron text,
      timezone text not null,
      overlap text not null,
      timeout_seconds int not null,
      max_parallel int,
      deleted boolean not null default false,
      last_run_at timestamptz,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  // Output chunks as they arrived, up to MAX_OUTPUT_BYTES per stream (then one marker).
  await sql`
    create table execution_output (
      execution_id uuid not null,
      stream text not null,
      seq int not null,
      data text not null,
      primary key (execution_id, stream, seq)
    )`.execute(db);
  // Who runs an execution, and since when it last said so (DESIGN §5).
  await sql`
    create table execution_leases (
      execution_id uuid primary key,
      job_id uuid not null,
      owner text not null,
      heartbeat_at timestamptz not null
    )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of ['execution_leases', 'execution_output', 'job_templates', 'job_executions', 'jobs', 'systems']) {
    await sql`drop table if exists ${sql.table(t)}`.execute(db);
  }
}
