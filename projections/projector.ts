import type { Transaction } from 'kysely';
import type { Tables } from '../infra/db/tables.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import type { Position } from '../infra/eventStore/position.ts';

/** A read-model change, published after the transaction that made it has committed. */
export type Change = {
  projection: string;
  topic: string;
  kind: string;
  id: string;
  data?: unknown;
  /** The project the changed resource belongs to: live delivery checks read permission there. */
  project?: string | null;
  position: Position;
  at: string;
};

export type Emit = (change: { topic: string; kind: string; id: string; data?: unknown; project?: string | null; position: Position }) => void;

/**
 * Events → read-model rows. `apply` runs inside the runtime's transaction together with
 * the checkpoint, and must be idempotent (guard updates by stream revision) so that a
 * rebuild or a redelivered batch converges to the same rows.
 */
export interface Projector {
  readonly name: string;
  /** Bump to rebuild the read model from the log on the next start. */
  readonly version: number;
  /** Event types it reads, or 'all' for every event in the log. */
  readonly handles: readonly string[] | 'all';
  /** Tables it owns; emptied before a rebuild. */
  readonly tables: readonly (keyof Tables & string)[];
  /**
   * Up to the runtime's batch size (500 live, 5,000 while replaying) events at once: a
   * multi-row INSERT must stay under PostgreSQL's 65,535 parameters (chunk it).
   */
  apply(trx: Transaction<Tables>, events: readonly RecordedEvent[], emit: Emit): Promise<void>;
}
