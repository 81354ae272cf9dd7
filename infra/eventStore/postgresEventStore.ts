// The PostgreSQL adapter of the event store port, for a server (pg) and PGlite alike.
import { sql, type RawBuilder } from 'kysely';
import { BehaviorSubject, filter, firstValueFrom, map, race, timer, type Observable } from 'rxjs';
import type { Database } from '../db/database.ts';
import { ConcurrencyError, InvalidEventError } from '../errors.ts';
import type {
  AllFilter, AppendResult, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, ReadAllResult,
  RecordedEvent, SubscribeAllOptions, Subscription,
} from './eventStore.ts';
import { maxPosition, START, type Position } from './position.ts';
import { createUpcast, type Upcaster } from './upcaster.ts';
import { serializeEvents, validateStreamName } from './validateEvents.ts';

const CHANNEL = 'opl_events';
const MAX_INT8 = 9223372036854775807n;
const SAFETY_POLL_MS = 1000; // only matters if a NOTIFY is lost (listener reconnecting)
const BLOCKED_BACKOFF_MS = [1, 2, 5, 10, 20, 50, 100];

type Row = {
  horizon?: string;
  global_position: string;
  transaction_id: string;
  stream_id: string;
  stream_revision: string;
  event_id: string;
  type: string;
  data: Record<string, unknown>;
  metadata: NewEvent['metadata'];
  created_at: Date | string;
};

const expectedCode = (e: ExpectedRevision): bigint => {
  switch (e) {
    case 'no_stream': return -1n;
    case 'any': return -2n;
    case 'stream_exists': return -3n;
    default:
      if (typeof e !== 'bigint' || e < 0n) throw new InvalidEventError(`invalid expected revision ${String(e)}`);
      return e;
  }
};

const describeExpected = (e: ExpectedRevision): string => (typeof e === 'bigint' ? `revision ${e}` : e);

const pgCode = (err: unknown): { code?: string; constraint?: string } =>
  (typeof err === 'object' && err !== null ? err : {}) as { code?: string; constraint?: string };

const columns = sql.raw(`global_position::text as global_position, transaction_id::text as transaction_id, stream_id,
  stream_revision::text as stream_revision, event_id::text as event_id, type, data, metadata, created_at`);

const filterSql = (f: AllFilter | undefined): RawBuilder<unknown> => {
  const parts: RawBuilder<unknown>[] = [];
  if (f?.eventTypes) parts.push(sql`and type = any(${[...f.eventTypes]}::text[])`);
  if (f?.streamPrefixes) {
    // LIKE with the prefix's own wildcards escaped.
    const likes = f.streamPrefixes.map((p) => `${p.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
    parts.push(sql`and stream_id like any(${likes}::text[])`);
  }
  return sql.join(parts, sql` `);
};

export type PostgresEventStoreOptions = { upcasters?: readonly Upcaster[] };

export const createPostgresEventStore = async (
  database: Database,
  options: PostgresEventStoreOptions = {},
): Promise<EventStore> => {
  const { db } = database;
  const upcast = createUpcast(options.upcasters ?? []);
  // Wake-ups: a counter bumped by every NOTIFY, and the highest writer xid seen in one.
  const wakes = new BehaviorSubject<number>(0);
  let maxNotifiedTx = 0n;
  const unlisten = await database.listen(CHANNEL, (payload) => {
    if (/^\d+$/.test(payload)) {
      const tx = BigInt(payload);
      if (tx > maxNotifiedTx) maxNotifiedTx = tx;
    }
    wakes.next(wakes.value + 1);
  });

  const toEvent = (r: Row): RecordedEvent =>
    upcast({
      id: r.event_id,
      type: r.type,
      data: r.data,
      metadata: r.metadata,
      streamId: r.stream_id,
      revision: BigInt(r.stream_revision),
      position: { commit: BigInt(r.transaction_id), prepare: BigInt(r.global_position) },
      createdAt: r.created_at instanceof Date ? r.created_at : new Date(r.created_at),
    });

  const appendOnce = async (stream: string, payload: string, expected: ExpectedRevision): Promise<AppendResult> => {
    const { rows } = await sql<{
      ok: boolean; revision: string | number | null; transaction_id: string | null;
      last_position: string | number | null; duplicate: boolean;
    }>`select ok, revision::text as revision, transaction_id, last_position::text as last_position, duplicate
       from opl_append(${stream}::text, ${expectedCode(expected).toString()}::bigint, ${payload}::jsonb)`.execute(db);
    const r = rows[0]!;
    if (!r.ok) throw new ConcurrencyError(stream, describeExpected(expected), r.revision === null ? null : BigInt(r.revision));
    return {
      nextExpectedRevision: BigInt(r.revision!),
      position: { commit: BigInt(r.transaction_id!), prepare: BigInt(r.last_position!) },
      duplicate: r.duplicate,
    };
  };

  /** The waiting behind waitForMore; `aborted` rejects when the caller gives up. */
  const waitOn = async (previous: ReadAllResult, aborted: Promise<never>): Promise<void> => {
    let blocked = previous.blocked;
    for (let attempt = 0; blocked; attempt++) {
      // Newer commits are hidden behind an unfinished older transaction: it ends
      // (commit or abort) within milliseconds, and an abort sends no NOTIFY.
      const delay = BLOCKED_BACKOFF_MS[Math.min(attempt, BLOCKED_BACKOFF_MS.length - 1)]!;
      await Promise.race([firstValueFrom(timer(delay)), aborted]);
      const { rows } = await sql<{ xmin: string }>`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin`.execute(db);
      blocked = maxNotifiedTx >= BigInt(rows[0]!.xmin);
    }
    if (previous.blocked) return;
    const woken = firstValueFrom(race(wakes.pipe(filter((n) => n > previous.wakeSeq)), timer(SAFETY_POLL_MS)));
    await Promise.race([woken, aborted]);
  };

  const store: EventStore = {
    async append(stream, events, opts = {}) {
      validateStreamName(stream);
      const expected = opts.expectedRevision ?? 'any';
      const payload = serializeEvents(events);
      for (let attempt = 0; ; attempt++) {
        try {
          return await appendOnce(stream, payload, expected);
        } catch (err) {
          const { code, constraint } = pgCode(err);
          // P0002: an event id of another stream; 22P02/22P05: JSON that jsonb cannot store
          // (a lone surrogate, a NUL character).
          if (code === 'P0002' || code === '22P02' || code === '22P05') throw new InvalidEventError((err as Error).message);
          if (code !== '23505') throw err;
          // A concurrent writer took the revision (or inserted the same event id first).
          // `any` and idempotent retries try again and see the winner's result; an exact
          // expectation has lost the race.
          const retry = constraint === 'events_event_id_key' || expected === 'any';
          if (!retry || attempt >= 20) {
            throw new ConcurrencyError(stream, describeExpected(expected), await store.streamRevision(stream));
          }
        }
      }
    },

    async readStream(stream, opts = {}) {
      validateStreamName(stream);
      const backwards = opts.direction === 'backwards';
      const limit = Math.max(0, Math.min(opts.maxCount ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
      const from = opts.from ?? (backwards ? 'end' : 'start');
      const bound =
        typeof from === 'bigint' ? (backwards ? sql`and stream_revision <= ${from.toString()}::bigint` : sql`and stream_revision >= ${from.toString()}::bigint`) : sql``;
      // Order by the table's column: a bare name here would mean the text output column.
      const { rows } = await sql<Row>`select ${columns} from events where stream_id = ${stream} ${bound}
        order by events.stream_revision ${sql.raw(backwards ? 'desc' : 'asc')} limit ${limit}`.execute(db);
      return rows.map(toEvent);
    },

    async streamRevision(stream) {
      const { rows } = await sql<{ r: string | null }>`select max(stream_revision)::text as r from events where stream_id = ${stream}`.execute(db);
      return rows[0]?.r == null ? null : BigInt(rows[0].r);
    },

    async readAll(opts: ReadAllOptions = {}): Promise<ReadAllResult> {
      const from = opts.from ?? START;
      const limit = Math.max(1, Math.min(opts.maxCount ?? 1000, 10_000));
      const wakeSeq = wakes.value;
      // One statement, one snapshot: the horizon and the rows agree. Only transactions
      // older than every running one are read, so a late commit is never skipped.
      const { rows } = await sql<Row>`
        with h as (select pg_snapshot_xmin(pg_current_snapshot()) as xmin)
        select h.xmin::text as horizon, e.* from h left join lateral (
          select ${columns} from events
           where (transaction_id, global_position) > (${from.commit.toString()}::xid8, ${from.prepare.toString()}::bigint)
             and transaction_id < h.xmin ${filterSql(opts.filter)}
           order by events.transaction_id, events.global_position
           limit ${limit}
        ) e on true`.execute(db);
      const horizon = BigInt(rows[0]!.horizon!);
      const events = rows[0]!.global_position == null ? [] : rows.map(toEvent);
      const full = events.length === limit;
      const last = events.at(-1)?.position;
      const scannedTo: Position = full ? last! : maxPosition(from, { commit: horizon - 1n, prepare: MAX_INT8 });
      return {
        events,
        scannedTo,
        caughtUp: !full,
        blocked: !full && maxNotifiedTx >= horizon,
        wakeSeq,
      };
    },

    subscribeAll(opts: SubscribeAllOptions = {}): Subscription {
      const abort = new AbortController();
      let from = opts.from ?? START;
      const iterate = async function* (): AsyncGenerator<RecordedEvent> {
        while (!abort.signal.aborted) {
          const page = await store.readAll({ from, filter: opts.filter, maxCount: opts.batchSize ?? 500 });
          for (const e of page.events) {
            if (abort.signal.aborted) return;
            yield e;
          }
          from = page.scannedTo;
          try {
            await store.waitForMore(page, abort.signal);
          } catch {
            return;
          }
        }
      };
      const it = iterate();
      return {
        [Symbol.asyncIterator]: () => it,
        async close() {
          abort.abort();
          await it.return(undefined);
        },
      };
    },

    appended$: wakes.pipe(filter((n) => n > 0), map(() => undefined)) as Observable<void>,

    async waitForMore(previous, signal) {
      if (!previous.caughtUp) return;
      let onAbort: () => void = () => undefined;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(signal!.reason);
        if (signal?.aborted) onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      aborted.catch(() => undefined);
      try {
        await waitOn(previous, aborted);
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    },
    async headPosition() {
      const { rows } = await sql<{ tx: string | null; gp: string | null }>`
        select transaction_id::text as tx, global_position::text as gp from events
         where transaction_id < pg_snapshot_xmin(pg_current_snapshot())
         order by transaction_id desc, global_position desc limit 1`.execute(db);
      return rows[0]?.tx ? { commit: BigInt(rows[0].tx), prepare: BigInt(rows[0].gp!) } : START;
    },

    async close() {
      await unlisten();
      wakes.complete();
    },
  };
  return store;
};
