// Runs projectors: each reads batches after its checkpoint, applies them and moves the
// checkpoint in ONE transaction (a crash never double-applies), then publishes the
// changes. One instance runs each projector (advisory lock); the others stand by and
// follow its progress through NOTIFY so that read-your-writes works on every instance.
import { sql } from 'kysely';
import { BehaviorSubject, Subject, filter, firstValueFrom, timeout, type Observable } from 'rxjs';
import type { Database } from '../infra/db/database.ts';
import { AppError, TimeoutError } from '../infra/errors.ts';
import type { EventStore, ReadAllResult, RecordedEvent } from '../infra/eventStore/eventStore.ts';
import { comparePositions, formatPosition, parsePosition, START, type Position } from '../infra/eventStore/position.ts';
import type { Change, Projector } from './projector.ts';

const CHECKPOINT_CHANNEL = 'opl_checkpoints';
const STANDBY_RETRY_MS = 2000;
const FAILURE_BACKOFF_MS = [100, 500, 2000, 5000];
// A projector of rare event types re-reads from its checkpoint on every wake-up; moving
// the checkpoint over others' events now and then keeps that read short.
const IDLE_CHECKPOINT_MS = 1000;

const handlesFilter = (p: Projector) => (p.handles === 'all' ? undefined : { eventTypes: p.handles });
const handlesAny = (p: Projector, types: readonly string[]) => p.handles === 'all' || p.handles.some((t) => types.includes(t));

export type ProjectionState = 'starting' | 'running' | 'standby' | 'rebuilding' | 'failed' | 'stopped';

export type ProjectionStatus = {
  name: string;
  version: number;
  state: ProjectionState;
  /** Everything the projector handles up to here is in its read model. */
  position: Position;
  lastError: string | null;
};

export type ReplayProgress = { name: string; done: number; total: number };

export type Logger = { info(o: object, msg?: string): void; warn(o: object, msg?: string): void; error(o: object, msg?: string): void };
const silent: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined };

class LostLeadership extends Error {}

type Slot = {
  projector: Projector;
  progress: BehaviorSubject<Position>;
  state: ProjectionState;
  lastError: string | null;
  /** Moves whenever the read model may have changed (a batch of events committed here, a reset, or the leader's NOTIFY). */
  generation: number;
  /** The part of `generation` not owed to a batch of known event types (resets, the leader's NOTIFY). */
  unknownMoves: number;
  /** Per event type: how many committed batches held it. */
  byType: Map<string, number>;
};

export type ProjectionRuntimeOptions = {
  database: Database;
  store: EventStore;
  projectors: readonly Projector[];
  logger?: Logger;
  batchSize?: number;
};

export const createProjectionRuntime = (opts: ProjectionRuntimeOptions) => {
  const { database, store } = opts;
  const { db } = database;
  const log = opts.logger ?? silent;
  const batchSize = opts.batchSize ?? 500;
  // Rebuilds take bigger bites: fewer transactions and checkpoints per event.
  const replayBatchSize = Math.max(batchSize, 5000);
  const changes = new Subject<Change>();
  const slots = new Map<string, Slot>(
    opts.projectors.map((p) => [p.name, { projector: p, progress: new BehaviorSubject(START), state: 'stopped', lastError: null, generation: 0, unknownMoves: 0, byType: new Map() }]),
  );
  if (slots.size !== opts.projectors.length) throw new Error('projector names must be unique');
  let stopping: AbortController | null = null;
  let loops: Promise<void>[] = [];
  let unlisten: (() => Promise<void>) | null = null;

  const advance = (slot: Slot, to: Position) => {
    if (comparePositions(to, slot.progress.value) > 0) slot.progress.next(to);
  };

  const readCheckpoint = async (p: Projector): Promise<{ version: number; position: Position }> => {
    await db.insertInto('projection_checkpoints')
      .values({ name: p.name, version: p.version, transaction_id: '0', global_position: 0 })
      .onConflict((oc) => oc.column('name').doNothing()).execute();
    const row = await db.selectFrom('projection_checkpoints')
      .select(['version', sql<string>`transaction_id::text`.as('tx'), sql<string>`global_position::text`.as('gp')])
      .where('name', '=', p.name).executeTakeFirstOrThrow();
    return { version: row.version, position: { commit: BigInt(row.tx), prepare: BigInt(row.gp) } };
  };

  /** Empties the read model and sets the checkpoint back to the start, in one transaction. */
  const reset = async (p: Projector): Promise<void> => {
    await db.transaction().execute(async (trx) => {
      for (const table of p.tables) await sql`truncate table ${sql.table(table)}`.execute(trx);
      await trx.updateTable('projection_checkpoints')
        .set({ version: p.version, transaction_id: '0', global_position: 0, updated_at: new Date() })
        .where('name', '=', p.name).execute();
    });
    const slot = slots.get(p.name)!;
    slot.generation += 1;
    slot.unknownMoves += 1;
  };

  /** Applies one batch with its checkpoint; the compare-and-set on the old checkpoint fences off a deposed leader. */
  const applyBatch = async (p: Projector, events: readonly RecordedEvent[], from: Position, to: Position): Promise<Change[]> => {
    const produced: Change[] = [];
    const at = new Date().toISOString();
    await db.transaction().execute(async (trx) => {
      if (events.length > 0) await p.apply(trx, events, (c) => produced.push({ ...c, projection: p.name, at }));
      const moved = await trx.updateTable('projection_checkpoints')
        .set({ transaction_id: to.commit.toString(), global_position: to.prepare.toString(), updated_at: new Date() })
        .where('name', '=', p.name).where('version', '=', p.version)
        .where(sql<boolean>`(transaction_id, global_position) = (${from.commit.toString()}::xid8, ${from.prepare.toString()}::bigint)`)
        .executeTakeFirst();
      if (moved.numUpdatedRows !== 1n) throw new LostLeadership(`checkpoint of ${p.name} moved under us`);
    });
    return produced;
  };

  /**
   * Reads and applies until stopped (or, with `follow` false, until caught up); returns the
   * checkpoint reached. While a full page is applied the next one is already being read.
   */
  const catchUp = async (slot: Slot, from: Position, signal: AbortSignal, onBatch?: (n: number) => void, follow = true) => {
    const p = slot.projector;
    const read = (after: Position) => store.readAll({ from: after, maxCount: follow ? batchSize : replayBatchSize, filter: handlesFilter(p) });
    let checkpoint = from;
    let savedAt = Date.now();
    let next: Promise<ReadAllResult> | null = null;
    while (!signal.aborted) {
      const page: ReadAllResult = await (next ?? read(checkpoint));
      next = page.caughtUp ? null : read(page.scannedTo);
      next?.catch(() => undefined); // its error, if any, surfaces when awaited
      const idle = page.events.length === 0;
      if (!idle || (Date.now() - savedAt > IDLE_CHECKPOINT_MS && comparePositions(page.scannedTo, checkpoint) > 0)) {
        const produced = await applyBatch(p, page.events, checkpoint, page.scannedTo);
        if (!idle) {
          slot.generation += 1;
          for (const type of new Set(page.events.map((e) => e.type))) slot.byType.set(type, (slot.byType.get(type) ?? 0) + 1);
        }
        checkpoint = page.scannedTo;
        savedAt = Date.now();
        if (!idle) onBatch?.(page.events.length);
        for (const c of produced) changes.next(c);
        // Standby instances follow the leader's progress (after commit: see database.notify).
        if (follow) void database.notify(CHECKPOINT_CHANNEL, `${p.name} ${formatPosition(checkpoint)}`).catch(() => undefined);
      }
      advance(slot, page.scannedTo);
      if (!follow && page.caughtUp && !page.blocked) return checkpoint;
      if (page.caughtUp) {
        await store.waitForMore(page, signal).catch(() => undefined);
      }
    }
    return checkpoint;
  };

  const sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });

  const run = async (slot: Slot, signal: AbortSignal): Promise<void> => {
    const p = slot.projector;
    let failures = 0;
    while (!signal.aborted) {
      const lock = await database.tryAdvisoryLock(`opl:projection:${p.name}`).catch((err) => {
        slot.lastError = (err as Error).message;
        return null;
      });
      if (!lock) {
        slot.state = 'standby';
        await sleep(STANDBY_RETRY_MS, signal);
        continue;
      }
      const leading = new AbortController();
      const onAbort = () => leading.abort();
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) leading.abort(); // stop() came while we waited for the lock
      void lock.lost.then(() => leading.abort());
      try {
        let { version, position } = await readCheckpoint(p);
        if (version !== p.version) {
          log.info({ projection: p.name, from: version, to: p.version }, 'projection version changed: rebuilding from the log');
          slot.state = 'rebuilding';
          await reset(p);
          position = START;
        }
        advance(slot, position);
        slot.state = 'running';
        slot.lastError = null;
        failures = 0;
        await catchUp(slot, position, leading.signal);
      } catch (err) {
        if (signal.aborted) break;
        slot.state = 'failed';
        slot.lastError = (err as Error).message;
        log.error({ projection: p.name, err }, 'projection failed; retrying');
        await sleep(FAILURE_BACKOFF_MS[Math.min(failures++, FAILURE_BACKOFF_MS.length - 1)]!, signal);
      } finally {
        signal.removeEventListener('abort', onAbort);
        await lock.release();
      }
    }
    slot.state = 'stopped';
  };

  const slotOf = (name: string): Slot => {
    const slot = slots.get(name);
    if (!slot) throw new Error(`unknown projection ${name}; known: ${[...slots.keys()].join(', ')}`);
    return slot;
  };

  return {
    changes$: changes.asObservable() as Observable<Change>,

    async start(): Promise<void> {
      if (stopping) return;
      stopping = new AbortController();
      // Standby instances learn the leader's progress from its NOTIFY.
      unlisten = await database.listen(CHECKPOINT_CHANNEL, (payload) => {
        const [name, pos] = payload.split(' ');
        const slot = name ? slots.get(name) : undefined;
        const position = pos ? parsePosition(pos) : null;
        if (slot && position) {
          // Another instance's batch may have written the read model, and which events it
          // held is unknown here. (While this instance leads, the NOTIFY is its own: its
          // batches have counted already.)
          if (slot.state !== 'running') {
            slot.generation += 1;
            slot.unknownMoves += 1;
          }
          advance(slot, position);
        }
      });
      for (const slot of slots.values()) {
        slot.state = 'starting';
        slot.progress.next(START);
      }
      const signal = stopping.signal;
      loops = [...slots.values()].map((slot) => run(slot, signal));
    },

    async stop(): Promise<void> {
      if (!stopping) return;
      stopping.abort();
      await Promise.allSettled(loops);
      await unlisten?.();
      stopping = null;
      loops = [];
    },

    /**
     * Resolves once every selected projection has everything up to `position` in its read
     * model. Select by name, or by event types (the projections that handle any of them).
     */
    async whenCaughtUp(position: Position, o: { projections?: readonly string[]; eventTypes?: readonly string[]; timeoutMs?: number } = {}) {
      const selected = [...slots.values()].filter((s) =>
        (!o.projections || o.projections.includes(s.projector.name)) &&
        (!o.eventTypes || handlesAny(s.projector, o.eventTypes)));
      const ms = o.timeoutMs ?? 5000;
      await Promise.all(selected.map((s) =>
        firstValueFrom(s.progress.pipe(filter((p) => comparePositions(p, position) >= 0), timeout({ first: ms })))
          .catch(() => { throw new TimeoutError(`projection ${s.projector.name} did not reach ${formatPosition(position)} within ${ms} ms`); }),
      ));
    },

    status(): ProjectionStatus[] {
      return [...slots.values()].map((s) => ({
        name: s.projector.name, version: s.projector.version, state: s.state, position: s.progress.value, lastError: s.lastError,
      }));
    },

    /**
     * Rebuilds one projection from position zero (the runtime must not be running it here;
     * on a server another instance must not either: the advisory lock is checked).
     */
    async replay(name: string, onProgress?: (p: ReplayProgress) => void): Promise<{ events: number; position: Position }> {
      const slot = slotOf(name);
      const p = slot.projector;
      const lock = await database.tryAdvisoryLock(`opl:projection:${p.name}`);
      if (!lock) throw new AppError('PROJECTION_BUSY', `projection ${name} is being run by another Opsledger instance; stop it before replaying`);
      try {
        await readCheckpoint(p);
        const typeFilter = p.handles === 'all' ? sql`` : sql`where type = any(${[...p.handles]}::text[])`;
        const { rows } = await sql<{ n: string }>`select count(*)::text as n from events ${typeFilter}`.execute(db);
        let total = Number(rows[0]!.n);
        let done = 0;
        onProgress?.({ name, done, total });
        await reset(p);
        slot.progress.next(START);
        const position = await catchUp(slot, START, new AbortController().signal, (n) => {
          done += n;
          total = Math.max(total, done); // events appended while replaying
          onProgress?.({ name, done, total });
        }, false);
        return { events: done, position };
      } finally {
        await lock.release();
      }
    },

    /**
     * A number that changes whenever the read models of the named projections may have
     * changed, here or on the leader instance; memory caches of those read models are valid
     * while it stays the same (see infra/epochCache.ts). Cheap enough for every request.
     * With `eventTypes`, only batches holding one of those types count (plus resets and
     * moves on the leader, whose contents are unknown here).
     */
    generation(names: readonly string[], eventTypes?: readonly string[]): number {
      let sum = 0;
      for (const name of names) {
        const slot = slotOf(name);
        if (!eventTypes) {
          sum += slot.generation;
          continue;
        }
        sum += slot.unknownMoves;
        for (const type of eventTypes) sum += slot.byType.get(type) ?? 0;
      }
      return sum;
    },

    names: (): string[] => [...slots.keys()],
  };
};

export type ProjectionRuntime = ReturnType<typeof createProjectionRuntime>;
