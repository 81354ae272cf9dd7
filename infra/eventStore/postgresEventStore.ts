// The PostgreSQL adapter of the event store port, for a server (pg) and PGlite alike.
import { sql, type RawBuilder } from 'kysely';
import { BehaviorSubject, filter, firstValueFrom, map, race, timer, type Observable } from 'rxjs';
import type { Database } from '../db/database.ts';
import { ConcurrencyError, InvalidEventError } from '../errors.ts';
import type {
  AllFilter, AppendResult, EventMetadata, EventStore, ExpectedRevision, ReadAllOptions, ReadAllResult,
  RecordedEvent, SubscribeAllOptions, Subscription,
} from './eventStore.ts';
import { maxPosition, START, type Position } from './position.ts';
import { createUpcast, type Upcaster } from './upcaster.ts';
import { serializeEvents, validateStreamName } from './validateEvents.ts';

const CHANNEL = 'opl_events';
const MAX_INT8 = 9223372036854775807n;
const SAFETY_POLL_MS = 1000; // only matters if a NOTIFY is lost (listener reconnecting)
const BLOCKED_BACKOFF_MS = [1, 2, 5, 10, 20, 50, 100];
const NOTIFY_INTERVAL_MS = 5;

type Row = {
  horizon?: string;
  global_position: string;
  transaction_id: string;
  stream_id: string;
  stream_revision: string;
  event_id: string;
  type: string;
  data: Record<string, unknown>;
  /** As text: parsed only when a reader looks at it (most projectors never do). */
  metadata: string;
  /** timestamptz as ISO-style text (DateStyle ISO), parsed on first use. */
  created_at: string;
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
  stream_revision::text as stream_revision, event_id::text as event_id, type, data, metadata::text as metadata,
  created_at::text as created_at`);

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
  const noteAppended = (tx: bigint) => {
    if (tx > maxNotifiedTx) maxNotifiedTx = tx;
    wakes.next(wakes.value + 1);
  };
  const unlisten = await database.listen(CHANNEL, (payload) => {
    if (/^\d+$/.test(payload)) noteAppended(BigInt(payload));
  });

  // Other processes learn of appends from a NOTIFY sent after commit, outside the append's
  // transaction (see opl_append). One is in flight at a time, carrying the newest xid;
  // appends that land meanwhile ride on the next one. Local subscribers wake at once.
  let notifyWanted = 0n;
  let notifying: Promise<void> | null = null;
  const announce = (tx: bigint) => {
    noteAppended(tx);
    if (tx > notifyWanted) notifyWanted = tx;
    notifying ??= (async () => {
      try {
        for (let sent = 0n; sent < notifyWanted; ) {
          sent = notifyWanted;
          await database.notify(CHANNEL, sent.toString());
          // Under a stream of appends, one NOTIFY per few milliseconds is plenty: each is a
          // transaction of its own. A lone append is announced at once.
          if (sent < notifyWanted) await new Promise((resolve) => setTimeout(resolve, NOTIFY_INTERVAL_MS));
        }
      } catch {
        // Subscribers elsewhere fall back on their safety poll.
      } finally {
        notifying = null;
      }
    })();
  };

  // Replays read hundreds of thousands of events: metadata and time are parsed on first use only.
  const toEvent = (r: Row): RecordedEvent => {
    let metadata: EventMetadata | undefined;
    let createdAt: Date | undefined;
    return upcast({
      id: r.event_id,
      type: r.type,
      data: r.data,
      get metadata() {
        return (metadata ??= JSON.parse(r.metadata) as EventMetadata);
      },
      streamId: r.stream_id,
      revision: BigInt(r.stream_revision),
      position: { commit: BigInt(r.transaction_id), prepare: BigInt(r.global_position) },
      get createdAt() {
        return (createdAt ??= new Date(r.created_at));
      },
    });
  };

  const callAppend = async (stream: string, payload: string, expected: ExpectedRevision) => {
    const rows = await database.hotQuery<{ ok: boolean; revision: string | null; transaction_id: string | null; last_position: string | null }>(
      'opl_append',
      `select ok, revision::text as revision, transaction_id, last_position::text as last_position
         from opl_append($1::text, $2::bigint, $3::jsonb)`,
      [stream, expectedCode(expected).toString(), payload],
    );
    return rows[0]!;
  };

  /**
   * The slow path of a refused append: were these very events stored before (a client
   * retrying)? Then answer the original result. Ids stored elsewhere, or only some of
   * them, are an error of the caller's.
   */
  const findStored = async (stream: string, payload: string, count: number): Promise<AppendResult | null> => {
    const { rows } = await sql<{ stream_id: string; n: number; revision: string; tx: string; gp: string }>`
      select stream_id, count(*)::int as n, max(stream_revision)::text as revision,
             max(transaction_id)::text as tx, max(global_position)::text as gp
        from events
       where event_id = any(array(select (x->>'id')::uuid from jsonb_array_elements(${payload}::jsonb) x))
       group by stream_id`.execute(db);
    if (rows.length === 0) return null;
    const [only] = rows;
    if (rows.length > 1 || only!.stream_id !== stream || only!.n !== count) {
      const where = rows.map((r) => `${r.n} in stream ${r.stream_id}`).join(', ');
      throw new InvalidEventError(`event ids of this batch are already stored (${where}); a retry must repeat the whole batch on the same stream`);
    }
    return {
      nextExpectedRevision: BigInt(only!.revision),
      position: { commit: BigInt(only!.tx), prepare: BigInt(only!.gp) },
      duplicate: true,
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
        let actual: bigint | null | undefined;
        try {
          const r = await callAppend(stream, payload, expected);
          if (r.ok) {
            const result = {
              nextExpectedRevision: BigInt(r.revision!),
              position: { commit: BigInt(r.transaction_id!), prepare: BigInt(r.last_position!) },
              duplicate: false,
            };
            announce(result.position.commit);
            return result;
          }
          actual = r.revision === null ? null : BigInt(r.revision);
        } catch (err) {
          const { code } = pgCode(err);
          // JSON that jsonb cannot store (a lone surrogate, a NUL character).
          if (code === '22P02' || code === '22P05') throw new InvalidEventError((err as Error).message);
          // 23505: an event id is already stored (checked below), or a concurrent writer
          // with the same new id has not finished yet (try again).
          if (code !== '23505') throw err;
        }
        const stored = await findStored(stream, payload, events.length);
        if (stored) return stored;
        if (actual !== undefined) throw new ConcurrencyError(stream, describeExpected(expected), actual);
        if (attempt >= 5) throw new ConcurrencyError(stream, describeExpected(expected), await store.streamRevision(stream));
      }
    },

    async appendMany(items) {
      if (items.length === 0) return [];
      if (items.length === 1) return [await store.append(items[0]!.stream, items[0]!.events, { expectedRevision: 'any' })];
      const batch = `[${items.map((i) => `{"stream":${JSON.stringify(validateStreamName(i.stream))},"events":${serializeEvents(i.events)}}`).join(',')}]`;
      let rows: { ord: number; revision: string; transaction_id: string; last_position: string }[];
      try {
        rows = await database.hotQuery('opl_append_many',
          'select ord::int as ord, revision::text as revision, transaction_id, last_position::text as last_position from opl_append_many($1::jsonb)', [batch]);
      } catch (err) {
        const { code } = pgCode(err);
        if (code === '22P02' || code === '22P05') throw new InvalidEventError((err as Error).message);
        // A retried or clashing event id somewhere in the batch: one by one, each finds its own answer.
        if (code === '23505') return Promise.all(items.map((i) => store.append(i.stream, i.events, { expectedRevision: 'any' })));
        throw err;
      }
      const results: AppendResult[] = new Array(items.length);
      let commit = 0n;
      for (const r of rows) {
        commit = BigInt(r.transaction_id);
        results[r.ord - 1] = { nextExpectedRevision: BigInt(r.revision), position: { commit, prepare: BigInt(r.last_position) }, duplicate: false };
      }
      announce(commit);
      return results;
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
      await notifying;
      await unlisten();
      wakes.complete();
    },
  };
  return store;
};
