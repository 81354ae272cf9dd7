// Drains the alert outbox (alert_deliveries, written by the monitoring projection in its
// own transaction) into signed webhook POSTs, with retries and backoff.
//
// Delivery guarantee: a row marked `delivered` is never sent again (the state is in the
// database, so this holds across restarts and between instances). A row is sent again,
// though, when the process dies after the receiver's 2xx and before the row is updated, or
// when an instance stalls past its lease: at-least-once. Receivers dedupe on the
// x-opsledger-delivery header, which is the same on every attempt of one delivery.
//
// Several instances may run on one database: due rows are claimed with FOR UPDATE SKIP
// LOCKED in one statement that also pushes their next_attempt_at forward by a lease, so the
// others neither wait for them nor take them while they are in flight; the POST itself runs
// outside any transaction.
import type { Kysely, Updateable } from 'kysely';
import type { Observable, Subscription } from 'rxjs';
import type { AlertDeliveriesTable, Tables } from '../infra/db/tables.ts';
import type { Vault } from '../infra/vault.ts';
import { postWebhook, safeUrlForLogs, webhookHeaders } from '../infra/webhook.ts';
import type { Worker } from '../infra/workers.ts';

export type AlertNotifierDeps = {
  db: Kysely<Tables>;
  vault: Pick<Vault, 'getText'>;
  /** Anything emitted (e.g. projection changes) makes it look for due deliveries at once. */
  wakeups?: Observable<unknown>;
  /** How often it looks anyway (ms); default 1000. */
  pollMs?: number;
  /** Per request, everything included (ms); default 5000. */
  timeoutMs?: number;
  /** Attempts before a delivery is `failed`; default 10. */
  maxAttempts?: number;
  /** Delay before the next attempt, given the attempts made so far (≥ 1); default defaultBackoffMs. */
  backoffMs?: (attempt: number) => number;
  /** Deliveries in flight at once; default 8. */
  concurrency?: number;
  now?: () => Date;
  logger?: { warn(o: object, msg?: string): void; info?(o: object, msg?: string): void };
};

export type AlertNotifierCounts = { delivered: number; failed: number; retried: number; cancelled: number };

/** Shown in /health/detailed; `pending` is the count last seen (refreshed on each poll and pass). */
export type AlertNotifierDetails = { pending: number; in_flight: number; delivered_total: number; failed_total: number; last_error: string | null };

export interface AlertNotifier extends Worker {
  details(): AlertNotifierDetails;
  /** One pass over what is due now (each row at most once), waiting for every delivery it starts. */
  runOnce(): Promise<AlertNotifierCounts>;
}

const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 5 * 60_000;
// The lease covers the request's timeout plus the reads and the write around it; a row
// whose lease lapses (its instance died or stalled) becomes due again for anyone.
const LEASE_MARGIN_MS = 30_000;
// runOnce() excludes the rows it already tried by id; past this many, the rest waits for the next pass.
const MAX_ROWS_PER_PASS = 1000;

/** 1 s × 2^(attempt−1), ±20 % jitter (so that many failing rows do not retry in step), at most 5 min. */
export const defaultBackoffMs = (attempt: number, random: () => number = Math.random): number => {
  const base = BACKOFF_BASE_MS * 2 ** Math.min(Math.max(attempt, 1) - 1, 30);
  return Math.round(Math.min(BACKOFF_CAP_MS, Math.min(base, BACKOFF_CAP_MS) * (0.8 + 0.4 * random())));
};

type Claimed = { id: string; channel_id: string; event: string; payload: unknown; attempts: number; due_at: Date; created_at: Date };
type Outcome = keyof AlertNotifierCounts;

const positiveInt = (name: string, value: number): number => {
  if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`alert notifier: ${name} must be a positive integer`);
  return value;
};

export const createAlertNotifier = (deps: AlertNotifierDeps): AlertNotifier => {
  const { db, vault, logger } = deps;
  const pollMs = positiveInt('pollMs', deps.pollMs ?? 1000);
  const timeoutMs = positiveInt('timeoutMs', deps.timeoutMs ?? 5000);
  const maxAttempts = positiveInt('maxAttempts', deps.maxAttempts ?? 10);
  const concurrency = positiveInt('concurrency', deps.concurrency ?? 8);
  const backoffMs = deps.backoffMs ?? defaultBackoffMs;
  const now = deps.now ?? (() => new Date());

  let pending = 0;
  let inFlight = 0;
  let deliveredTotal = 0;
  let failedTotal = 0;
  let lastError: string | null = null;

  // Everything started and not yet settled, so that stop() can wait for it.
  const active = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    active.add(p);
    const done = () => void active.delete(p);
    p.then(done, done);
    return p;
  };

  /** Takes up to `limit` due rows and leases them; oldest due first. */
  const claim = async (limit: number, exclude: readonly string[]): Promise<Claimed[]> => {
    const at = now();
    const leaseUntil = new Date(at.getTime() + timeoutMs + LEASE_MARGIN_MS);
    const rows = await db.updateTable('alert_deliveries as d')
      .from((eb) => {
        let due = eb.selectFrom('alert_deliveries')
          .select(['id', 'next_attempt_at', 'created_at'])
          .where('state', '=', 'pending')
          .where('next_attempt_at', '<=', at);
        if (exclude.length > 0) due = due.where('id', 'not in', exclude);
        return due.orderBy('next_attempt_at').orderBy('created_at').limit(limit).forUpdate().skipLocked().as('due');
      })
      .set({ next_attempt_at: leaseUntil })
      .whereRef('d.id', '=', 'due.id')
      .returning(['d.id', 'd.channel_id', 'd.event', 'd.payload', 'd.attempts', 'd.created_at', 'due.next_attempt_at as due_at'])
      .execute();
    // UPDATE … RETURNING keeps no order: restore the one the rows were chosen in.
    return rows.sort((a, b) => a.due_at.getTime() - b.due_at.getTime() || a.created_at.getTime() - b.created_at.getTime());
  };

  // Only while still pending: a row is never taken back out of a final state.
  const record = async (id: string, set: Updateable<AlertDeliveriesTable>): Promise<void> => {
    await db.updateTable('alert_deliveries').set(set).where('id', '=', id).where('state', '=', 'pending').execute();
  };

  const fail = async (row: Claimed, attempts: number, error: string, status: number | null, url: string | null): Promise<Outcome> => {
    await record(row.id, { state: 'failed', attempts, last_error: error, last_status: status });
    failedTotal += 1;
    lastError = error;
    // The origin only: user info, query and path may all hold credentials.
    logger?.warn({ delivery: row.id, channel: row.channel_id, event: row.event, attempts, url: url === null ? null : safeUrlForLogs(url), error },
      'an alert delivery failed for good');
    return 'failed';
  };

  const readSecret = async (ref: string): Promise<{ secret: string } | { error: string }> => {
    try {
      const secret = await vault.getText(ref);
      return secret === null ? { error: 'the channel secret is missing from the vault' } : { secret };
    } catch (err) {
      // Undecryptable stays undecryptable; anything else (the database) is left to the lease.
      if (codeOf(err) === 'VAULT_DECRYPT_FAILED') return { error: 'the channel secret could not be decrypted' };
      throw err;
    }
  };

  const deliver = async (row: Claimed): Promise<Outcome> => {
    const channel = await db.selectFrom('alert_channels').select(['url', 'secret_ref', 'deleted'])
      .where('id', '=', row.channel_id).executeTakeFirst();
    if (!channel || channel.deleted) {
      await record(row.id, { state: 'cancelled', last_error: channel ? 'the channel was deleted' : 'the channel does not exist' });
      logger?.info?.({ delivery: row.id, channel: row.channel_id, event: row.event }, 'an alert delivery was cancelled: its channel is gone');
      return 'cancelled';
    }
    const read = await readSecret(channel.secret_ref);
    if ('error' in read) return fail(row, row.attempts, read.error, null, channel.url);
    if (!isObject(row.payload)) return fail(row, row.attempts, 'the payload is not a JSON object', null, channel.url);

    // The delivery id first, and always ours; the body is sent exactly as it was signed.
    const { id: _ignored, ...rest } = row.payload;
    const body = JSON.stringify({ id: row.id, ...rest });
    const timestamp = Math.floor(now().getTime() / 1000);
    const headers = webhookHeaders({ secret: read.secret, event: row.event, deliveryId: row.id, timestamp, body });
    const result = await postWebhook({ url: channel.url, body, headers, timeoutMs });

    const attempts = row.attempts + 1;
    if (result.ok) {
      await record(row.id, { state: 'delivered', delivered_at: now(), attempts, last_status: result.status, last_error: null });
      deliveredTotal += 1;
      return 'delivered';
    }
    const error = result.error ?? 'delivery failed';
    if (attempts >= maxAttempts) return fail(row, attempts, error, result.status, channel.url);
    lastError = error;
    const wanted = backoffMs(attempts);
    const delay = Number.isFinite(wanted) ? Math.max(0, wanted) : BACKOFF_CAP_MS; // a broken backoff must not stall the row
    await record(row.id, { attempts, last_error: error, last_status: result.status, next_attempt_at: new Date(now().getTime() + delay) });
    return 'retried';
  };

  /** deliver(), counted in in_flight; an unexpected error leaves the row to its lease (it is retried when that lapses). */
  const attempt = async (row: Claimed): Promise<Outcome | null> => {
    inFlight += 1;
    try {
      return await deliver(row);
    } catch (err) {
      noteError('an alert delivery could not be completed; it is retried when its lease lapses', err, row.id);
      return null;
    } finally {
      inFlight -= 1;
    }
  };

  const noteError = (msg: string, err: unknown, delivery?: string) => {
    lastError = err instanceof Error ? err.message : String(err);
    logger?.warn({ ...(delivery ? { delivery } : {}), error: lastError }, msg);
  };

  const refreshPending = async () => {
    try {
      const row = await db.selectFrom('alert_deliveries').select((eb) => eb.fn.countAll().as('n'))
        .where('state', '=', 'pending').executeTakeFirst();
      pending = Number(row?.n ?? 0);
    } catch (err) {
      noteError('could not count pending alert deliveries', err);
    }
  };

  // ---- the background loop: keeps up to `concurrency` deliveries in flight ----
  let running = false;
  let timer: NodeJS.Timeout | null = null;
  let subscription: Subscription | null = null;
  let filling = false;
  let again = false;

  /** Claims as many due rows as there are free slots; calls made meanwhile coalesce into one more round. */
  const fill = (): void => {
    if (!running) return;
    if (filling) {
      again = true;
      return;
    }
    filling = true;
    void track((async () => {
      try {
        do {
          again = false;
          const free = concurrency - inFlight;
          if (free <= 0) break; // a finishing delivery calls fill() again
          const rows = await claim(free, []);
          for (const row of rows) void track(attempt(row).then(fill));
          if (rows.length === free) again = true; // there may be more
        } while (again && running);
      } catch (err) {
        noteError('could not claim due alert deliveries', err);
      } finally {
        filling = false;
      }
    })());
  };

  return {
    name: 'alert-notifier',

    start() {
      if (running) return;
      running = true;
      subscription = deps.wakeups?.subscribe({
        next: () => fill(),
        error: (err: unknown) => noteError('the alert notifier wake-ups ended with an error; polling goes on', err),
      }) ?? null;
      timer = setInterval(() => {
        fill();
        void track(refreshPending());
      }, pollMs);
      timer.unref();
      fill();
      void track(refreshPending());
    },

    async stop() {
      running = false;
      if (timer) clearInterval(timer);
      timer = null;
      subscription?.unsubscribe();
      subscription = null;
      // In-flight deliveries finish and are recorded: nothing is left leased by a clean stop.
      while (active.size > 0) await Promise.allSettled([...active]);
    },

    details() {
      return { pending, in_flight: inFlight, delivered_total: deliveredTotal, failed_total: failedTotal, last_error: lastError };
    },

    runOnce() {
      return track((async () => {
        const counts: AlertNotifierCounts = { delivered: 0, failed: 0, retried: 0, cancelled: 0 };
        // Rows retried during this pass may be due again at once (a zero backoff); they wait for the next pass.
        const attempted: string[] = [];
        const started = new Set<Promise<void>>();
        let exhausted = false;
        try {
          for (;;) {
            const free = Math.min(concurrency - started.size, MAX_ROWS_PER_PASS - attempted.length);
            if (!exhausted && free > 0) {
              const rows = await claim(free, attempted);
              if (rows.length < free) exhausted = true;
              for (const row of rows) {
                attempted.push(row.id);
                const p: Promise<void> = attempt(row).then((outcome) => {
                  if (outcome !== null) counts[outcome] += 1;
                  started.delete(p);
                });
                started.add(p);
              }
            }
            if (started.size === 0) break;
            await Promise.race(started);
          }
        } finally {
          await Promise.allSettled([...started]);
        }
        await refreshPending();
        return counts;
      })());
    },
  };
};

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const codeOf = (err: unknown): unknown => (typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined);
