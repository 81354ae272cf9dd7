// kysely table interfaces for everything the kernel keeps in PostgreSQL. Read-model
// tables of the modules are added here as the modules arrive, so that read-api/ can
// query them without importing projections/.
import type { ColumnType, Generated } from 'kysely';

type Int8 = ColumnType<string, string | number | bigint, string | number | bigint>;
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json = ColumnType<unknown, string, string>;

export interface EventsTable {
  global_position: ColumnType<string, never, never>;
  transaction_id: ColumnType<string, never, never>;
  stream_id: string;
  stream_revision: Int8;
  event_id: string;
  type: string;
  data: Json;
  metadata: Json;
  created_at: Timestamp;
}

export interface ProjectionCheckpointsTable {
  name: string;
  version: number;
  /** xid8 as text: the transaction id half of the (transaction id, position) checkpoint. */
  transaction_id: string;
  global_position: Int8;
  updated_at: Timestamp;
}

/** Kernel read model: one row per stream (used by /streams and by the tests of the runtime). */
export interface StreamCatalogTable {
  stream_id: string;
  category: string;
  revision: Int8;
  event_count: Int8;
  last_type: string;
  first_at: Timestamp;
  last_at: Timestamp;
}

export interface UsersTable {
  id: string;
  username: string;
  email: string | null;
  role: string;
  active: boolean;
  rate_limit_per_second: number | null;
  rate_limit_burst: number | null;
  password_ref: string;
  session_version: number;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface ApiTokensTable {
  id: string;
  user_id: string;
  name: string;
  token_hash: string;
  prefix: string;
  scopes: Json | null;
  project: string | null;
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  created_at: Timestamp;
  last_used_at: Timestamp | null;
}

export interface ProjectsTable {
  slug: string;
  display_name: string;
  billing_account: Json | null;
  deleted: Generated<boolean>;
  created_by: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface ProjectMembersTable {
  project: string;
  user_id: string;
  role: string;
  updated_at: Timestamp;
}

/** Secrets encrypted by infra/vault.ts; never read except through it. */
export interface VaultSecretsTable {
  id: string;
  /** Whose secret it is (e.g. `system:<id>`): deleting the owner deletes the row. */
  owner: string;
  kind: string;
  // Buffer from node-pg, Uint8Array from PGlite: infra/vault.ts accepts either.
  ciphertext: Uint8Array;
  iv: Uint8Array;
  auth_tag: Uint8Array;
  key_version: ColumnType<number, number | undefined, number>;
  created_at: ColumnType<Date | null, Date | string | undefined, Date | string>;
}

/** Idempotency-Key: the first response to a POST command per (principal, key), kept 24 h. */
export interface IdempotencyKeysTable {
  key: string;
  principal: string;
  method: string;
  path: string;
  /** sha256 (hex) of the canonical JSON of the request body. */
  request_hash: string;
  /** null while the first request is still in progress. */
  status: number | null;
  /** The replayed response headers (lower-case name → value). */
  headers: ColumnType<Record<string, string> | null, string | null, string | null>;
  body: string | null;
  created_at: Timestamp;
}

// ---- monitoring (projections/monitoring.ts) ----

export interface NodesTable {
  id: string;
  project: string;
  name: string;
  address: string;
  pubkey: string | null;
  labels: Json;
  check_type: string;
  /** `{url, port, expectStatus, timeoutMs, intervalS, retries}` (domain/monitoring.ts Check, without type). */
  check_config: Json;
  active: boolean;
  decommissioned: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface NodeStatusTable {
  node_id: string;
  status: string;
  failures: Generated<number>;
  snapshot_revision: ColumnType<string, string | number | bigint | undefined, string | number | bigint>;
  last_observed_at: Timestamp | null;
  last_snapshot_status: string | null;
  latency_ms: number | null;
  version: string | null;
  last_error: string | null;
  last_source: string | null;
  status_since: Timestamp | null;
  snapshots: ColumnType<string, string | number | bigint | undefined, string | number | bigint>;
}

export interface NodeSnapshotsTable {
  node_id: string;
  revision: Int8;
  observed_at: Timestamp;
  status: string;
  latency_ms: number | null;
  version: string | null;
  metrics: Json | null;
  source: string;
  error: string | null;
}

export interface NodeUptimeRollupsTable {
  node_id: string;
  unit: string;
  bucket: Timestamp;
  up_ms: Int8;
  down_ms: Int8;
  pending_ms: Int8;
}

export interface NodeMetricRollupsTable {
  metric: string;
  unit: string;
  bucket: Timestamp;
  node_id: string;
  count: Int8;
  sum: number;
  min: number;
  max: number;
}

export interface NodeStatusChangesTable {
  id: string;
  node_id: string;
  project: string;
  at: Timestamp;
  from_status: string;
  to_status: string;
}

export interface NodeGroupsTable {
  id: string;
  project: string;
  name: string;
  min_online: number;
  /** `{labels: {…}}` or `{nodeIds: […]}`. */
  selector: Json;
  status: Generated<string>;
  online: Generated<number>;
  total: Generated<number>;
  status_since: Timestamp | null;
  deleted: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface GroupStatusChangesTable {
  id: string;
  group_id: string;
  at: Timestamp;
  from_status: string;
  to_status: string;
  online: number;
  total: number;
}

export interface AlertChannelsTable {
  id: string;
  project: string;
  name: string;
  url: string;
  events: Json;
  secret_ref: string;
  deleted: Generated<boolean>;
  created_at: Timestamp;
  revision: Int8;
}

/** The alert outbox: `pending` until delivered, or `failed` after the last retry. */
export interface AlertDeliveriesTable {
  id: string;
  channel_id: string;
  event: string;
  payload: Json;
  state: Generated<string>;
  attempts: Generated<number>;
  next_attempt_at: Timestamp;
  last_error: string | null;
  last_status: number | null;
  created_at: Timestamp;
  delivered_at: Timestamp | null;
}

// ---- jobs (projections/jobs.ts; output and leases: workers/jobRunner.ts) ----

export interface SystemsTable {
  id: string;
  project: string;
  name: string;
  hostname: string;
  port: number;
  system_type: string;
  username: string;
  auth_kind: string;
  credential_ref: string;
  description: string | null;
  labels: Json;
  is_active: boolean;
  health_status: Generated<string>;
  last_health_check: Timestamp | null;
  response_time_ms: number | null;
  last_error: string | null;
  host_key_fingerprint: string | null;
  deleted: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface JobsTable {
  id: string;
  project: string;
  name: string;
  command: string;
  status: string;
  schedule_at: Timestamp | null;
  timeout_seconds: number;
  max_parallel: number | null;
  created_by: string | null;
  template_id: string | null;
  params: Json | null;
  queued_behind: string | null;
  cancelled: Generated<boolean>;
  total: number;
  created_at: Timestamp;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  revision: Int8;
}

export interface JobExecutionsTable {
  id: string;
  job_id: string;
  project: string;
  system_id: string;
  system_name: string;
  status: string;
  started_at: Timestamp | null;
  completed_at: Timestamp | null;
  exit_code: number | null;
  error_message: string | null;
  duration_seconds: number | null;
  stdout_bytes: ColumnType<string, string | number | undefined, string | number>;
  stderr_bytes: ColumnType<string, string | number | undefined, string | number>;
  stdout_truncated: Generated<boolean>;
  stderr_truncated: Generated<boolean>;
  ord: number;
}

export interface JobTemplatesTable {
  id: string;
  project: string;
  name: string;
  command: string;
  parameters: Json;
  targets: Json;
  cron: string | null;
  timezone: string;
  overlap: string;
  timeout_seconds: number;
  max_parallel: number | null;
  deleted: Generated<boolean>;
  last_run_at: Timestamp | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface ExecutionOutputTable {
  execution_id: string;
  stream: string;
  seq: number;
  data: string;
}

export interface ExecutionLeasesTable {
  execution_id: string;
  job_id: string;
  owner: string;
  heartbeat_at: Timestamp;
}

export interface ProxiesTable {
  name: string;
  project: string;
  domain: string;
  upstream_host: string;
  upstream_port: number;
  upstream_scheme: string;
  require_healthy: boolean;
  enable_ssl: boolean;
  websockets: boolean;
  status: string;
  last_error: Json | null;
  config_revision: Int8;
  handled_revision: Int8 | null;
  handled_tls_serial: string | null;
  applied_definition: Json | null;
  applied_tls_serial: string | null;
  applied_at: Timestamp | null;
  deleted: Generated<boolean>;
  site_removed: Generated<boolean>;
  created_at: Timestamp;
  updated_at: Timestamp;
  revision: Int8;
}

export interface ProxyCertificatesTable {
  name: string;
  project: string;
  domain: string;
  status: string;
  not_before: Timestamp | null;
  expiry: Timestamp | null;
  issuer: string | null;
  serial: string | null;
  chain_pem: string | null;
  key_ref: string | null;
  issued_at: Timestamp | null;
  request_reason: string | null;
  email: string | null;
  requested_at: Timestamp | null;
  last_error: Json | null;
  renewal_failures: Generated<number>;
  revision: Int8;
}

export interface ProxyEngineTable {
  id: number;
  config_test_ok: boolean | null;
  last_test_at: Timestamp | null;
  last_reload_at: Timestamp | null;
  acme_last_operation: string | null;
  acme_last_operation_at: Timestamp | null;
  acme_last_error: Json | null;
}

export interface Tables {
  events: EventsTable;
  projection_checkpoints: ProjectionCheckpointsTable;
  stream_catalog: StreamCatalogTable;
  idempotency_keys: IdempotencyKeysTable;
  vault_secrets: VaultSecretsTable;
  users: UsersTable;
  api_tokens: ApiTokensTable;
  projects: ProjectsTable;
  project_members: ProjectMembersTable;
  nodes: NodesTable;
  node_status: NodeStatusTable;
  node_snapshots: NodeSnapshotsTable;
  node_uptime_rollups: NodeUptimeRollupsTable;
  node_metric_rollups: NodeMetricRollupsTable;
  node_status_changes: NodeStatusChangesTable;
  node_groups: NodeGroupsTable;
  group_status_changes: GroupStatusChangesTable;
  alert_channels: AlertChannelsTable;
  alert_deliveries: AlertDeliveriesTable;
  systems: SystemsTable;
  jobs: JobsTable;
  job_executions: JobExecutionsTable;
  job_templates: JobTemplatesTable;
  execution_output: ExecutionOutputTable;
  execution_leases: ExecutionLeasesTable;
  proxies: ProxiesTable;
  proxy_certificates: ProxyCertificatesTable;
  proxy_engine: ProxyEngineTable;
}
