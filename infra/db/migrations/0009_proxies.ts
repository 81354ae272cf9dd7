import { sql, type Kysely } from 'kysely';

// Read models of proxies and their certificates (built by projections/proxies.ts), and one
// row of the engine's recent history for /proxies/health.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table proxies (
      name text primary key,
      project text not null,
      domain text not null,
      upstream_host text not null,
      upstream_port int not null,
      upstream_scheme text not null,
      require_healthy boolean not null,
      enable_ssl boolean not null,
      websockets boolean not null,
      status text not null,
      last_error jsonb,
      config_revision bigint not null,
      handled_revision bigint,
      handled_tls_serial text,
      applied_definition jsonb,
      applied_tls_serial text,
      applied_at timestamptz,
      deleted boolean not null default false,
      site_removed boolean not null default false,
      created_at timestamptz not null,
      updated_at timestamptz not null,
      revision bigint not null
    )`.execute(db);
  await sql`create index proxies_project_idx on proxies (project, name)`.execute(db);
  // The commands keep one live proxy per domain (nginx would only warn about a second server_name).
  await sql`create index proxies_domain_idx on proxies (lower(domain)) where not deleted`.execute(db);
  await sql`
    create table proxy_certificates (
      name text primary key,
      project text not null,
      domain text not null,
      status text not null,
      not_before timestamptz,
      expiry timestamptz,
      issuer text,
      serial text,
      chain_pem text,
      key_ref uuid,
      issued_at timestamptz,
      request_reason text,
      email text,
      requested_at timestamptz,
      last_error jsonb,
      renewal_failures int not null default 0,
      revision bigint not null
    )`.execute(db);
  await sql`create index proxy_certificates_expiry_idx on proxy_certificates (expiry) where status in ('valid', 'renewing')`.execute(db);
  await sql`
    create table proxy_engine (
      id int primary key,
      config_test_ok boolean,
      last_test_at timestamptz,
      last_reload_at timestamptz,
      acme_last_operation text,
      acme_last_operation_at timestamptz,
      acme_last_error jsonb
    )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const t of ['proxy_engine', 'proxy_certificates', 'proxies']) await sql`drop table if exists ${sql.table(t)}`.execute(db);
}
