// The EventStoreDB (KurrentDB) adapter of the event store port, over @eventstore/db-client.
// It follows the PostgreSQL adapter's semantics wherever the server allows; where it
// cannot, the difference is named at the place it arises (and in README.md):
// - idempotency is the server's own: a retry of a batch is recognised when it repeats the
//   original expected revision, or with `any` while the server's cache of recent event
//   ids still holds it. An event id already used in ANOTHER stream is not detected
//   (no global unique key), and a batch that repeats only some earlier ids is a conflict,
//   not INVALID_EVENT.
// - `duplicate` is inferred (see `append`), and positions come from a read-back of the
//   batch's last event, so an append costs two round trips.
// - readAll filters client-side (the client's readAll has no server filter), so a filtered
//   read scans every event after `from`; subscribeAll filters on the server.
// - `blocked` is always false: the log has a single commit order, nothing commits late.
// - Events written by other tools into non-system streams are read with their data and
//   metadata normalised to the port's shapes (a JSON object; occurred_at, schema_version).
// Needs a server that reports $all positions on stream reads (EventStoreDB ≥ 22.6).
import {
  ANY, BACKWARDS, END, ErrorType, EventStoreDBClient, FORWARDS, NO_STREAM, START as ESDB_START, STREAM_EXISTS,
  eventTypeFilter, excludeSystemEvents, jsonEvent, streamNameFilter,
  type AllStreamResolvedEvent, type AllStreamSubscription, type AppendExpectedRevision, type Filter,
  type ReadPosition, type ResolvedEvent, type StreamingRead,
} from '@eventstore/db-client';
import { BehaviorSubject, filter, firstValueFrom, map, race, timer, type Observable } from 'rxjs';
import { ConcurrencyError, InvalidEventError } from '../errors.ts';
import type {
  AllFilter, AppendResult, EventMetadata, EventStore, ExpectedRevision, NewEvent, ReadAllOptions, ReadAllResult,
  RecordedEvent, SubscribeAllOptions, Subscription,
} from './eventStore.ts';
import { comparePositions, maxPosition, START, type Position } from './position.ts';
import { createUpcast, type Upcaster } from './upcaster.ts';
import { serializeEvents, validateStreamName } from './validateEvents.ts';

const SAFETY_POLL_MS = 1000; // only matters if the live subscription missed a wake-up (reconnecting)
const RESUBSCRIBE_MS = 1000;
const CONFIRM_WAIT_MS = 5000;
const MAX_INT8 = 9223372036854775807n;
const HEAD_PAGE = 32;
const FILTERED_PAGE = 4096;

/** What the client hands back for one stored event (JSON or binary). */
type EsdbRecord = {
  streamId: string;
  id: string;
  revision: bigint;
  type: string;
  created: Date;
  data: unknown;
  metadata: unknown;
  isJson: boolean;
  position?: { commit: bigint; prepare: bigint };
};

const noop = (): void => undefined;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

const isSystem = (r: { type: string; streamId: string }): boolean => r.type.startsWith('$') || r.streamId.startsWith('$');

const errorType = (err: unknown): string | undefined =>
  typeof err === 'object' && err !== null ? ((err as { type?: unknown }).type as string | undefined) : undefined;

const toEsdbExpected = (e: ExpectedRevision): AppendExpectedRevision => {
  switch (e) {
    case 'no_stream': return NO_STREAM;
    case 'any': return ANY;
    case 'stream_exists': return STREAM_EXISTS;
    default:
      if (typeof e !== 'bigint' || e < 0n || e > MAX_INT8) throw new InvalidEventError(`invalid expected revision ${String(e)}`);
      return e;
  }
};

const describeExpected = (e: ExpectedRevision): string => (typeof e === 'bigint' ? `revision ${e}` : e);

const isStart = (p: Position): boolean => p.commit === 0n && p.prepare === 0n;
const toReadPosition = (p: Position): ReadPosition => (isStart(p) ? ESDB_START : { commit: p.commit, prepare: p.prepare });

/** Stream reads on servers before 22.6 carry no $all position: zeros or all ones. */
const knownPosition = (p: EsdbRecord['position']): Position | null =>
  p && !(p.commit === 0n && p.prepare === 0n) && p.commit <= MAX_INT8 && p.prepare <= MAX_INT8 ? { commit: p.commit, prepare: p.prepare } : null;

/** Data as the port knows it: a JSON object. Only events written by other tools need this. */
const normaliseData = (data: unknown): Record<string, unknown> => {
  if (isPlainObject(data)) return data;
  if (data instanceof Uint8Array) {
    const text = Buffer.from(data).toString('utf8');
    try {
      const parsed: unknown = JSON.parse(text);
      if (isPlainObject(parsed)) return parsed;
    } catch {
      // not JSON: kept as base64 below
    }
    return { value: Buffer.from(data).toString('base64') };
  }
  return { value: data };
};

const normaliseMetadata = (metadata: unknown, created: Date): EventMetadata => {
  const m = isPlainObject(metadata) ? metadata : {};
  const version = m.schema_version;
  const validVersion = typeof version === 'number' && Number.isInteger(version) && version >= 1;
  if (typeof m.occurred_at === 'string' && validVersion) return m as EventMetadata;
  return {
    ...m,
    occurred_at: typeof m.occurred_at === 'string' ? m.occurred_at : created.toISOString(),
    schema_version: validVersion ? version : 1,
  };
};

/** Exact event types and literal stream prefixes, as on PostgreSQL. */
const matcher = (f: AllFilter | undefined) => {
  const types = f?.eventTypes ? new Set(f.eventTypes) : null;
  const prefixes = f?.streamPrefixes ? [...f.streamPrefixes] : null;
  return (e: { type: string; streamId: string }): boolean =>
    (!types || types.has(e.type)) && (!prefixes || prefixes.some((p) => e.streamId.startsWith(p)));
};

const neverMatches = (f: AllFilter | undefined): boolean => f?.eventTypes?.length === 0 || f?.streamPrefixes?.length === 0;

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The server-side part of a filter. The server filters on one dimension only: stream
 * prefixes when given (usually the narrower), else exact event types; whatever is left
 * (the other dimension, system streams) is checked again on the client.
 */
const serverFilter = (f: AllFilter | undefined): Filter => {
  if (f?.streamPrefixes?.length) return streamNameFilter({ prefixes: [...f.streamPrefixes] });
  if (f?.eventTypes?.length) return eventTypeFilter({ regex: `^(?:${f.eventTypes.map(escapeRegex).join('|')})$` });
  return excludeSystemEvents();
};

/** Iterates a read; an early exit cancels the call on the server. */
async function* records<T>(read: StreamingRead<T>): AsyncGenerator<T> {
  let finished = false;
  try {
    for await (const r of read) yield r;
    finished = true;
  } finally {
    if (!finished) {
      read.on('error', noop);
      read.cancel().catch(noop);
    }
  }
}

export type EsdbEventStoreOptions = { upcasters?: readonly Upcaster[] };

export const createEsdbEventStore = async (connectionString: string, options: EsdbEventStoreOptions = {}): Promise<EventStore> => {
  // KURRENTDB_URL-style schemes name the same protocol; this client only parses esdb://.
  const client = EventStoreDBClient.connectionString(connectionString.trim().replace(/^kurrentdb(\+discover)?:\/\//i, 'esdb$1://'));
  const upcast = createUpcast(options.upcasters ?? []);
  let closed = false;

  // Wake-ups: a counter bumped by the live subscription (at most once per I/O turn, so a
  // batch arriving together counts once).
  const wakes = new BehaviorSubject<number>(0);
  let bumpPending = false;
  const bump = (): void => {
    if (bumpPending || closed) return;
    bumpPending = true;
    setImmediate(() => {
      bumpPending = false;
      if (!closed) wakes.next(wakes.value + 1);
    });
  };

  // The newest log position this store knows to be committed. An append snapshots it
  // before it writes: a batch whose position is not past the snapshot was written before,
  // i.e. the server answered a retry idempotently (see `append`).
  let knownHead: Position = START;
  const noteHead = (p: Position): void => {
    if (comparePositions(p, knownHead) > 0) knownHead = p;
  };

  const toRecorded = (r: EsdbRecord, position: Position): RecordedEvent =>
    upcast({
      id: r.id,
      type: r.type,
      data: normaliseData(r.data),
      metadata: normaliseMetadata(r.metadata, r.created),
      streamId: r.streamId,
      revision: r.revision,
      position,
      createdAt: r.created,
    });

  const fromStreamRead = (resolved: ResolvedEvent): RecordedEvent | null => {
    const r = resolved.event as EsdbRecord | undefined;
    if (!r) return null;
    const position = knownPosition(r.position);
    if (!position) throw new Error(`EventStoreDB reported no $all position for ${r.streamId}@${r.revision}: this adapter needs a server of version 22.6 or later`);
    return toRecorded(r, position);
  };

  /** Reads one stream; a stream that does not exist (or was deleted) reads as empty. */
  const readStreamRaw = async (
    stream: string,
    o: { fromRevision: bigint | typeof ESDB_START | typeof END; direction: typeof FORWARDS | typeof BACKWARDS; maxCount: number },
  ): Promise<RecordedEvent[]> => {
    const out: RecordedEvent[] = [];
    try {
      for await (const resolved of records(client.readStream(stream, o))) {
        const e = fromStreamRead(resolved);
        if (e) out.push(e);
      }
    } catch (err) {
      const type = errorType(err);
      if (type === ErrorType.STREAM_NOT_FOUND || type === ErrorType.STREAM_DELETED) return [];
      throw err;
    }
    return out;
  };

  /** The $all position of one event just written, read raw (no upcasting): null if the server does not say. */
  const writtenPosition = async (stream: string, revision: bigint): Promise<Position | null> => {
    const read = client.readStream(stream, { fromRevision: revision, direction: FORWARDS, maxCount: 1, requiresLeader: true });
    for await (const resolved of records(read)) return knownPosition((resolved.event as EsdbRecord | undefined)?.position);
    return null;
  };

  /** Position of the newest record in $all (optionally the newest non-system one), or null. */
  const lastPosition = async (skipSystem: boolean): Promise<Position | null> => {
    let from: ReadPosition = END;
    let cursor: Position | null = null;
    for (;;) {
      let count = 0;
      for await (const resolved of records(client.readAll({ direction: BACKWARDS, fromPosition: from, maxCount: HEAD_PAGE }))) {
        count++;
        const r = resolved.event;
        if (!r) continue;
        const p: Position = { commit: r.position.commit, prepare: r.position.prepare };
        if (cursor && comparePositions(p, cursor) >= 0) continue; // the page boundary, read again
        cursor = p;
        if (!skipSystem || !isSystem(r)) {
          noteHead(p);
          return p;
        }
      }
      if (count < HEAD_PAGE || !cursor) return null;
      from = cursor;
    }
  };

  // One live subscription from the end of the log, for wake-ups only. If it fails it is
  // re-opened; the 1 s safety timer in waitForMore covers what it missed meanwhile.
  let live: AllStreamSubscription | null = null;
  let resubscribeTimer: NodeJS.Timeout | null = null;
  const listen = (): Promise<void> => {
    const sub = client.subscribeToAll({ fromPosition: END, filter: excludeSystemEvents() });
    live = sub;
    let settle: () => void = noop;
    const confirmed = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const restart = (): void => {
      settle();
      if (closed || live !== sub) return;
      live = null;
      sub.removeAllListeners('data');
      sub.unsubscribe().catch(noop);
      bump(); // something may have been appended while it was down
      resubscribeTimer = setTimeout(() => {
        resubscribeTimer = null;
        if (!closed) void listen();
      }, RESUBSCRIBE_MS);
    };
    sub.on('confirmation', () => settle());
    sub.on('data', (resolved: AllStreamResolvedEvent) => {
      const r = resolved.event;
      if (!r || isSystem(r)) return;
      noteHead({ commit: r.position.commit, prepare: r.position.prepare });
      bump();
    });
    sub.on('error', restart);
    sub.on('end', restart);
    return confirmed;
  };

  // Fails here, at start, when the server cannot be reached (as the PostgreSQL adapter's LISTEN does).
  try {
    await lastPosition(false);
  } catch (err) {
    await client.dispose().catch(noop);
    throw err;
  }
  await new Promise<void>((resolve) => {
    // Waits for the live subscription so that wake-ups work from the first append on; a
    // server slow to confirm only delays them (the safety timer still polls).
    const t = setTimeout(resolve, CONFIRM_WAIT_MS);
    void listen().then(() => {
      clearTimeout(t);
      resolve();
    });
  });

  const openSubscriptions = new Set<() => Promise<void>>();

  const store: EventStore = {
    // EventStoreDB appends one stream per call: the batch goes out concurrently on one
    // connection (each append is its own write; `any` needs no ordering between them).
    appendMany: (items) => Promise.all(items.map((i) => store.append(i.stream, i.events, { expectedRevision: 'any' }))),

    async append(stream, events, opts = {}) {
      validateStreamName(stream);
      const expected = opts.expectedRevision ?? 'any';
      // The same checks and the same JSON as PostgreSQL stores: what is read back is
      // exactly what JSON.stringify made of the input.
      const batch = JSON.parse(serializeEvents(events)) as NewEvent[];
      const expectedRevision = toEsdbExpected(expected);
      const seenBefore = knownHead;
      let nextExpectedRevision: bigint;
      let reported: Position | undefined;
      try {
        const result = await client.appendToStream(
          stream,
          batch.map((e) => jsonEvent({ id: e.id.toLowerCase(), type: e.type, data: e.data, metadata: e.metadata })),
          { expectedRevision },
        );
        nextExpectedRevision = result.nextExpectedRevision;
        reported = result.position;
      } catch (err) {
        const type = errorType(err);
        if (type === ErrorType.WRONG_EXPECTED_VERSION) {
          // Also what the server answers when a batch repeats only some ids of an earlier
          // one ("corrupted idempotency"); PostgreSQL calls that INVALID_EVENT.
          const actual = (err as { actualVersion?: unknown }).actualVersion;
          throw new ConcurrencyError(
            stream,
            describeExpected(expected),
            typeof actual === 'bigint' ? actual : actual === NO_STREAM ? null : await store.streamRevision(stream),
          );
        }
        if (type === ErrorType.MAXIMUM_APPEND_SIZE_EXCEEDED) throw new InvalidEventError((err as Error).message);
        throw err;
      }
      // The position of the batch's last event as $all reports it: the append's own answer
      // is the write's commit/prepare pair (not the last event's for a batch) and carries
      // no position at all for an idempotent retry, so read it back (from the leader,
      // which has just written it).
      const readBack = await writtenPosition(stream, nextExpectedRevision).catch(() => null); // written either way
      const position = readBack ?? (reported ? { commit: reported.commit, prepare: reported.prepare } : null);
      if (!position) throw new Error(`EventStoreDB reported no position for the append to ${stream} (revision ${nextExpectedRevision} is written)`);
      // A fresh write lands after everything committed before it was sent, so a batch at or
      // before `seenBefore` was written earlier: the server recognised a retry. Best effort:
      // a retry of a batch another process wrote moments ago (not yet seen by the live
      // subscription), or of a batch still in flight, is reported as not a duplicate.
      const duplicate = comparePositions(position, seenBefore) <= 0;
      noteHead(position);
      return { nextExpectedRevision, position, duplicate } satisfies AppendResult;
    },

    async readStream(stream, opts = {}) {
      validateStreamName(stream);
      const backwards = opts.direction === 'backwards';
      const limit = Math.floor(Math.max(0, Math.min(opts.maxCount ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)));
      if (limit === 0) return [];
      // As on PostgreSQL, 'start' and 'end' mean "no bound": forwards from the start,
      // backwards from the end. A revision is inclusive both ways.
      const from = typeof opts.from === 'bigint' ? opts.from : backwards ? END : ESDB_START;
      return readStreamRaw(stream, { fromRevision: from, direction: backwards ? BACKWARDS : FORWARDS, maxCount: limit });
    },

    async streamRevision(stream) {
      // A name the port rejects cannot have been written through it.
      try {
        validateStreamName(stream);
      } catch {
        return null;
      }
      const [last] = await readStreamRaw(stream, { fromRevision: END, direction: BACKWARDS, maxCount: 1 });
      return last ? last.revision : null;
    },

    async readAll(opts: ReadAllOptions = {}): Promise<ReadAllResult> {
      const from = opts.from ?? START;
      const limit = Math.max(1, Math.min(opts.maxCount ?? 1000, 10_000));
      const wakeSeq = wakes.value;
      if (neverMatches(opts.filter)) {
        // Nothing can match: everything up to the newest record has been "returned".
        const head = await lastPosition(false);
        return { events: [], scannedTo: head ? maxPosition(from, head) : from, caughtUp: true, blocked: false, wakeSeq };
      }
      const accept = matcher(opts.filter);
      // The client's readAll has no server-side filter: read pages of $all and filter here,
      // until `limit` events match or the end of the log.
      const pageSize = opts.filter ? FILTERED_PAGE : limit + 64;
      const events: RecordedEvent[] = [];
      let scanned = from;
      for (let reachedEnd = false; !reachedEnd;) {
        let count = 0;
        for await (const resolved of records(client.readAll({ direction: FORWARDS, fromPosition: toReadPosition(scanned), maxCount: pageSize }))) {
          count++;
          const r = resolved.event as (EsdbRecord & { position: Position }) | undefined;
          if (!r) continue;
          const p: Position = { commit: r.position.commit, prepare: r.position.prepare };
          // A read from a position includes the event at it.
          if (comparePositions(p, scanned) <= 0) continue;
          scanned = p;
          if (isSystem(r) || !accept(r)) continue;
          events.push(toRecorded(r, p));
          if (events.length === limit) break;
        }
        if (events.length === limit) break;
        reachedEnd = count < pageSize;
      }
      noteHead(scanned);
      const full = events.length === limit;
      return {
        events,
        // Full: up to the last event returned (later ones in the page were not looked at
        // for the caller). Otherwise: up to the last record read, matching or not.
        scannedTo: full ? events.at(-1)!.position : scanned,
        caughtUp: !full,
        blocked: false, // a single commit order: nothing newer can hide behind an older writer
        wakeSeq,
      };
    },

    subscribeAll(opts: SubscribeAllOptions = {}): Subscription {
      const from = opts.from ?? START;
      const accept = matcher(opts.filter);
      const high = Math.max(1, opts.batchSize ?? 500) * 2;
      const queue: AllStreamResolvedEvent[] = [];
      let sub: AllStreamSubscription | null = null;
      let stopped = false;
      let ended = false;
      let failure: unknown = null;
      let wake: () => void = noop;
      const notify = (): void => {
        const w = wake;
        wake = noop;
        w();
      };
      const start = (): void => {
        if (neverMatches(opts.filter)) return; // nothing to deliver: wait for close()
        const s = client.subscribeToAll({ fromPosition: toReadPosition(from), filter: serverFilter(opts.filter) });
        sub = s;
        s.on('data', (resolved: AllStreamResolvedEvent) => {
          queue.push(resolved);
          if (queue.length >= high) s.pause();
          notify();
        });
        s.on('error', (err: unknown) => {
          failure ??= err;
          notify();
        });
        s.on('end', () => {
          ended = true;
          notify();
        });
      };
      const stop = async (): Promise<void> => {
        stopped = true;
        notify();
        const s = sub;
        sub = null;
        if (s) {
          s.removeAllListeners('data');
          s.on('error', noop);
          await s.unsubscribe().catch(noop);
        }
      };
      const iterate = async function* (): AsyncGenerator<RecordedEvent> {
        start();
        try {
          while (!stopped) {
            const resolved = queue.shift();
            if (resolved) {
              if (queue.length < high / 2 && sub?.isPaused()) sub.resume();
              const r = resolved.event as (EsdbRecord & { position: Position }) | undefined;
              if (!r || isSystem(r) || !accept(r)) continue;
              const p: Position = { commit: r.position.commit, prepare: r.position.prepare };
              if (comparePositions(p, from) <= 0) continue; // `from` is exclusive
              yield toRecorded(r, p);
              continue;
            }
            if (failure) throw failure;
            if (ended) throw new Error('EventStoreDB ended the subscription');
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
          }
        } finally {
          await stop();
        }
      };
      const it = iterate();
      const close = async (): Promise<void> => {
        openSubscriptions.delete(close);
        await stop();
        await it.return(undefined);
      };
      openSubscriptions.add(close);
      return { [Symbol.asyncIterator]: () => it, close };
    },

    appended$: wakes.pipe(filter((n) => n > 0), map(() => undefined)) as Observable<void>,

    async waitForMore(previous, signal) {
      if (!previous.caughtUp) return;
      let onAbort: () => void = noop;
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(signal!.reason);
        if (signal?.aborted) onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      aborted.catch(noop);
      try {
        const woken = firstValueFrom(race(wakes.pipe(filter((n) => n > previous.wakeSeq)), timer(SAFETY_POLL_MS)));
        await Promise.race([woken, aborted]);
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    },

    async headPosition() {
      return (await lastPosition(true)) ?? START;
    },

    async close() {
      if (closed) return;
      await Promise.all([...openSubscriptions].map((c) => c().catch(noop)));
      closed = true;
      if (resubscribeTimer) clearTimeout(resubscribeTimer);
      const sub = live;
      live = null;
      if (sub) {
        sub.removeAllListeners('data');
        sub.on('error', noop);
        await sub.unsubscribe().catch(noop);
      }
      wakes.complete();
      await client.dispose();
    },
  };
  return store;
};
