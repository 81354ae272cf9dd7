// The poller (SPEC §5, DESIGN §5): checks `http` and `tcp` nodes every interval and
// records each outcome as a snapshot; for `push` nodes, which report on their own, it
// records the monitor's `down` once one has been silent for longer than its last report
// may speak for (snapshotValidityMs).
//
// What it remembers (when it last checked a node, when it last judged one silent) is
// memory only: after a restart a node's last snapshot (lastObservedAt) says whether it is
// due, so a restart neither checks everything at once nor calls push nodes silent because
// the monitor itself was away.
//
// Checks run in one bounded pool shared by all ticks: a tick only lists the nodes and
// queues the due ones, so a slow node holds one slot until its timeout, never the others'
// schedule; a node queued or in flight is not queued again.
import { setMaxListeners } from 'node:events';
import { snapshotValidityMs, type Check, type SnapshotSource, type SnapshotStatus } from '../domain/monitoring.ts';
import { runCheck, type CheckOutcome, type CheckSpec } from '../infra/healthCheck.ts';
import type { Worker, WorkerDetails } from '../infra/workers.ts';

export type PollTarget = { nodeId: string; name: string; address: string; check: Check; lastObservedAt: Date | null };

export type PolledSnapshot = {
  status: SnapshotStatus; latencyMs: number | null; version: string | null; metrics: Record<string, number> | null;
  observedAt: string; source: Extract<SnapshotSource, 'poll' | 'monitor'>; error: string | null;
};

export type PollerLogger = { warn(o: object, msg?: string): void; debug?(o: object, msg?: string): void };

export type PollerDeps = {
  /** Active, not decommissioned nodes of every check type. */
  listTargets(): Promise<PollTarget[]>;
  /** Appends a snapshot; may reject (the node was decommissioned meanwhile): logged, and the poller goes on. */
  record(nodeId: string, snapshot: PolledSnapshot): Promise<void>;
  /** POLL_INTERVAL_SECONDS, for checks whose intervalS is null. */
  defaultIntervalS: number;
  /** At most this many checks in flight. */
  concurrency: number;
  /** How often it looks for due work (default 1000 ms). */
  tickMs?: number;
  /** ms clock, for tests. */
  now?: () => number;
  check?: (spec: CheckSpec, opts?: { signal?: AbortSignal }) => Promise<CheckOutcome>;
  logger?: PollerLogger;
};

export type Poller = Worker & { runOnce(): Promise<{ checked: number; silent: number }> };

type NodeMemory = {
  type: Check['type'];
  /** Queued or running: not queued again. */
  busy: boolean;
  /** http/tcp: when its last check started. */
  lastCheckAt: number | null;
  /** push: when the monitor last recorded it as silent, and its last report then (or the poller's start). */
  silentAt: number | null;
  lastHeardAt: number;
};

type TickResult = { checked: number; silent: number; work: Promise<void>[] };

/** A fixed number of slots; tasks wait in order for one. Tasks must not reject. */
const createPool = (size: number) => {
  let running = 0;
  const queue: Array<() => Promise<void>> = [];
  const pump = () => {
    while (running < size && queue.length > 0) {
      running += 1;
      void queue.shift()!();
    }
  };
  return {
    run: (task: () => Promise<void>): Promise<void> =>
      new Promise((resolve) => {
        queue.push(async () => {
          try {
            await task();
          } finally {
            // The slot is free before the caller hears of it, so what it sees is current.
            running -= 1;
            resolve();
            pump();
          }
        });
        pump();
      }),
    running: () => running,
    queued: () => queue.length,
  };
};

const specOf = (t: PollTarget): CheckSpec | string => {
  const { check } = t;
  switch (check.type) {
    case 'http':
      return check.url ? { type: 'http', url: check.url, expectStatus: check.expectStatus, timeoutMs: check.timeoutMs } : 'the check has no URL';
    case 'tcp':
      return check.port !== null ? { type: 'tcp', host: t.address, port: check.port, timeoutMs: check.timeoutMs } : 'the check has no port';
    case 'push':
      return 'push nodes are not polled';
    default: { const _never: never = check.type; return _never; }
  }
};

const errorCode = (err: unknown): string | null =>
  typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : null;
const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export const createPoller = (deps: PollerDeps): Poller => {
  const now = deps.now ?? Date.now;
  const check = deps.check ?? runCheck;
  const tickMs = deps.tickMs ?? 1000;
  const pool = createPool(Math.max(1, Math.floor(deps.concurrency)));
  const memory = new Map<string, NodeMemory>();
  const inFlight = new Set<Promise<void>>();
  // One stop signal that every check in flight listens to: up to `concurrency` listeners.
  const stopSignal = () => {
    const c = new AbortController();
    setMaxListeners(Math.max(10, deps.concurrency + 10), c.signal);
    return c;
  };
  let abort = stopSignal();
  let startedAt = now();
  let timer: NodeJS.Timeout | null = null;
  let ticking: Promise<TickResult> | null = null;
  let stopping = false;
  let checksTotal = 0;
  let lastTickAt: number | null = null;
  let lastError: string | null = null;

  const intervalMs = (c: Check) => (c.intervalS ?? deps.defaultIntervalS) * 1000;

  const track = (p: Promise<void>): Promise<void> => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
    return p;
  };

  const record = async (t: PollTarget, snapshot: PolledSnapshot) => {
    try {
      await deps.record(t.nodeId, snapshot);
    } catch (err) {
      const code = errorCode(err);
      // A node decommissioned between listing and recording is expected, not a fault.
      if (code === 'NODE_DECOMMISSIONED' || code === 'NODE_NOT_FOUND') {
        deps.logger?.debug?.({ nodeId: t.nodeId, code }, 'snapshot not recorded: the node is gone');
        return;
      }
      lastError = `recording a snapshot of ${t.name}: ${messageOf(err)}`;
      deps.logger?.warn({ nodeId: t.nodeId, node: t.name, err }, 'could not record a snapshot');
    }
  };

  const memoryOf = (t: PollTarget): NodeMemory => {
    const known = memory.get(t.nodeId);
    if (!known) {
      const fresh: NodeMemory = { type: t.check.type, busy: false, lastCheckAt: null, silentAt: null, lastHeardAt: 0 };
      memory.set(t.nodeId, fresh);
      return fresh;
    }
    if (known.type !== t.check.type) {
      // Its check type changed: what was remembered of the old check no longer applies.
      // Reset in place, since work in flight clears `busy` on this very object.
      Object.assign(known, { type: t.check.type, lastCheckAt: null, silentAt: null, lastHeardAt: 0 });
    }
    return known;
  };

  const pollDue = (t: PollTarget, m: NodeMemory, at: number): boolean => {
    if (m.busy) return false;
    const every = intervalMs(t.check);
    if (m.lastCheckAt === null) return t.lastObservedAt === null || at - t.lastObservedAt.getTime() >= every;
    return at - m.lastCheckAt >= every;
  };

  /** Queues one check; the signal is the one of this run, so stop() reaches it even while it waits for a slot. */
  const enqueue = (t: PollTarget, m: NodeMemory, signal: AbortSignal): Promise<void> => {
    m.busy = true;
    return track(pool.run(async () => {
      try {
        if (signal.aborted) return;
        const startedCheck = now();
        m.lastCheckAt = startedCheck;
        const spec = specOf(t);
        const outcome: CheckOutcome = typeof spec === 'string'
          ? { status: 'down', latencyMs: null, version: null, metrics: null, error: spec }
          : await check(spec, { signal }).catch((err: unknown) => ({ status: 'down' as const, latencyMs: null, version: null, metrics: null, error: messageOf(err) }));
        checksTotal += 1;
        // Stopped mid-check: the monitor went away, which says nothing about the node.
        if (signal.aborted) return;
        await record(t, { ...outcome, observedAt: new Date(startedCheck).toISOString(), source: 'poll' });
      } catch (err) {
        // Only a bug gets here (check and record do not throw); the pool must go on regardless.
        lastError = `checking ${t.name}: ${messageOf(err)}`;
        deps.logger?.warn({ nodeId: t.nodeId, err }, 'a check failed unexpectedly');
      } finally {
        m.busy = false;
      }
    }));
  };

  /**
   * A push node is silent once nothing was heard for longer than its last report speaks
   * for, counting at the earliest from this poller's start. Once judged silent it is
   * judged again every interval (not every tick), so its down stays current without gaps.
   * Returns when it was last heard of (for the message), or null while it is not silent.
   */
  const silenceOf = (t: PollTarget, m: NodeMemory, at: number): number | null => {
    if (m.busy) return null;
    const every = intervalMs(t.check);
    const observed = t.lastObservedAt?.getTime() ?? null;
    // Our own monitor snapshot may come back as lastObservedAt; only a later one is a report.
    const stillSilent = m.silentAt !== null && (observed === null || observed <= m.silentAt);
    if (stillSilent) return at - m.silentAt! >= every ? m.lastHeardAt : null;
    const quietSince = Math.max(observed ?? -Infinity, startedAt);
    return at - quietSince > snapshotValidityMs(t.check.intervalS ?? deps.defaultIntervalS) ? observed ?? startedAt : null;
  };

  const judgeSilent = (t: PollTarget, m: NodeMemory, lastHeardAt: number, at: number): Promise<void> => {
    m.busy = true;
    m.silentAt = at;
    m.lastHeardAt = lastHeardAt;
    const error = `no report for ${Math.round((at - lastHeardAt) / 1000)} s`;
    return track(record(t, { status: 'down', latencyMs: null, version: null, metrics: null, observedAt: new Date(at).toISOString(), source: 'monitor', error })
      .finally(() => { m.busy = false; }));
  };

  const tick = async (): Promise<TickResult> => {
    lastTickAt = now();
    const signal = abort.signal;
    let targets: PollTarget[];
    try {
      targets = await deps.listTargets();
    } catch (err) {
      lastError = `listing the nodes: ${messageOf(err)}`;
      throw err;
    }
    if (stopping || signal.aborted) return { checked: 0, silent: 0, work: [] };
    // Judged as of the listing's answer, which may have taken a while.
    const at = now();
    const listed = new Set(targets.map((t) => t.nodeId));
    for (const [id, m] of memory) if (!listed.has(id) && !m.busy) memory.delete(id);
    const result: TickResult = { checked: 0, silent: 0, work: [] };
    for (const t of targets) {
      const m = memoryOf(t);
      switch (t.check.type) {
        case 'http':
        case 'tcp':
          if (pollDue(t, m, at)) {
            result.checked += 1;
            result.work.push(enqueue(t, m, signal));
          }
          break;
        case 'push': {
          const lastHeardAt = silenceOf(t, m, at);
          if (lastHeardAt !== null) {
            result.silent += 1;
            result.work.push(judgeSilent(t, m, lastHeardAt, at));
          }
          break;
        }
        default: { const _never: never = t.check.type; throw new Error(`unhandled check type ${String(_never)}`); }
      }
    }
    return result;
  };

  /** The tick under way, or a new one: ticks never overlap. */
  const tickOnce = (): Promise<TickResult> => {
    ticking ??= tick().finally(() => { ticking = null; });
    return ticking;
  };

  const onTimer = () => {
    if (ticking || stopping) return;
    tickOnce().catch((err: unknown) => deps.logger?.warn({ err }, 'poller tick failed'));
  };

  return {
    name: 'poller',

    async runOnce() {
      const { checked, silent, work } = await tickOnce();
      await Promise.all(work);
      return { checked, silent };
    },

    start() {
      if (timer) return;
      startedAt = now();
      timer = setInterval(onTimer, tickMs);
      // A timer alone must not keep the process alive: shutdown goes through stop().
      timer.unref();
      onTimer();
    },

    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      stopping = true;
      try {
        abort.abort();
        await ticking?.catch(() => undefined);
        // Aborted checks end promptly and are not recorded; records already under way finish.
        while (inFlight.size > 0) await Promise.all([...inFlight]);
      } finally {
        abort = stopSignal();
        stopping = false;
      }
    },

    details(): WorkerDetails {
      return {
        checks_in_flight: pool.running(),
        checks_queued: pool.queued(),
        checks_total: checksTotal,
        last_tick_at: lastTickAt === null ? null : new Date(lastTickAt).toISOString(),
        last_error: lastError,
      };
    },
  };
};
