// The event store port, shaped after EventStoreDB's client so that both adapters fit.
import type { Observable } from 'rxjs';
import type { Position } from './position.ts';

export type ExpectedRevision = 'no_stream' | 'any' | 'stream_exists' | bigint;

export type EventMetadata = {
  actor?: { user_id: string | null; username: string | null; token_id?: string | null } | null;
  request_id?: string | null;
  ip?: string | null;
  project?: string | null;
  correlation_id?: string | null;
  causation_id?: string | null;
  occurred_at: string;
  schema_version: number;
  [extra: string]: unknown;
};

/** An event about to be appended. `id` makes the append idempotent. */
export type NewEvent<T extends string = string, D = Record<string, unknown>> = {
  id: string;
  type: T;
  data: D;
  metadata: EventMetadata;
};

export type RecordedEvent<T extends string = string, D = Record<string, unknown>> = NewEvent<T, D> & {
  streamId: string;
  revision: bigint;
  position: Position;
  createdAt: Date;
};

export type AppendResult = {
  /** The stream's revision after the append (pass it as the next expectedRevision). */
  nextExpectedRevision: bigint;
  /** Position of the last event written; wait on it for read-your-writes. */
  position: Position;
  /** True when the same events were appended before and nothing was written now. */
  duplicate: boolean;
};

export type ReadStreamOptions = { from?: bigint | 'start' | 'end'; direction?: 'forwards' | 'backwards'; maxCount?: number };

export type AllFilter = { eventTypes?: readonly string[]; streamPrefixes?: readonly string[] };

export type ReadAllOptions = { from?: Position; maxCount?: number; filter?: AllFilter };

export type ReadAllResult = {
  events: RecordedEvent[];
  /**
   * Everything at or before this position that matches the filter has been returned.
   * It can be past the last event returned (filtered reads skip over others' events),
   * so a consumer may checkpoint or report progress up to it.
   */
  scannedTo: Position;
  /** False when more matching events may be readable right now. */
  caughtUp: boolean;
  /** True when newer events are committed but still hidden behind an older, unfinished transaction. */
  blocked: boolean;
  /** Wake-up counter seen before this read; `waitForMore` compares against it so no wake-up is lost. */
  wakeSeq: number;
};

export type SubscribeAllOptions = { from?: Position; filter?: AllFilter; batchSize?: number };

export interface Subscription extends AsyncIterable<RecordedEvent> {
  close(): Promise<void>;
}

export interface EventStore {
  append(stream: string, events: readonly NewEvent[], options?: { expectedRevision?: ExpectedRevision }): Promise<AppendResult>;
  /**
   * Appends to several streams, each with expected revision `any`, in as few round trips
   * as the store allows (PostgreSQL: one transaction, all or nothing). Results in input
   * order. For many small independent writes: one commit instead of one per stream.
   */
  appendMany(items: readonly { stream: string; events: readonly NewEvent[] }[]): Promise<AppendResult[]>;
  /** Events of one stream; empty when the stream does not exist. */
  readStream(stream: string, options?: ReadStreamOptions): Promise<RecordedEvent[]>;
  /** The stream's current revision, or null when it does not exist. */
  streamRevision(stream: string): Promise<bigint | null>;
  readAll(options?: ReadAllOptions): Promise<ReadAllResult>;
  /** Catch-up from `from`, then live; delivers each matching event once, in log order. */
  subscribeAll(options?: SubscribeAllOptions): Subscription;
  /** Emits whenever new events may be readable (one emission per appending transaction). */
  readonly appended$: Observable<void>;
  /**
   * Resolves when a read after `previous` may return more: at once if it was not caught
   * up, on the next append otherwise, or after a short back-off while an older
   * transaction hides newer events. Rejects with the signal's reason when aborted.
   */
  waitForMore(previous: ReadAllResult, signal?: AbortSignal): Promise<void>;
  /** Position of the newest event any reader can see now. */
  headPosition(): Promise<Position>;
  close(): Promise<void>;
}
