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
}
