// kysely table interfaces for everything the kernel keeps in PostgreSQL. Read-model
// tables of the modules are added here as the modules arrive, so that read-api/ can
// query them without importing projections/.
import type { ColumnType } from 'kysely';

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

export interface Tables {
  events: EventsTable;
  projection_checkpoints: ProjectionCheckpointsTable;
  stream_catalog: StreamCatalogTable;
}
