// The service's workers (DESIGN §5: poller, job runner, nginx applier, ACME…) as one
// registry: started once the API listens, stopped after it has drained, and shown in
// GET /health/detailed. A worker that fails to start is shown as failed; it does not take
// the API down with it (the other workers and every read still work).

export type WorkerState = 'registered' | 'starting' | 'running' | 'failed' | 'stopping' | 'stopped';

/** What a worker says about itself (shown as is, next to its state, in /health/detailed). */
export type WorkerDetails = Record<string, unknown>;

export interface Worker {
  /** Unique, shown in /health/detailed. */
  readonly name: string;
  start(): void | Promise<void>;
  /** Ends its work cleanly: in-flight effects finish or are handed back (leases). */
  stop(): void | Promise<void>;
  /** Its own progress (checkpoint, queue, last run, last error…). */
  details?(): WorkerDetails;
}

export type WorkerStatus = { name: string; state: WorkerState; since: string; error: string | null } & WorkerDetails;

type Entry = { worker: Worker; state: WorkerState; since: Date; error: string | null };

export type WorkerLogger = { error(o: object, msg?: string): void; info(o: object, msg?: string): void };

export const createWorkerRegistry = (opts: { logger?: WorkerLogger; now?: () => Date } = {}) => {
  const now = opts.now ?? (() => new Date());
  const entries = new Map<string, Entry>();
  let started = false;
  const set = (e: Entry, state: WorkerState, error: string | null = null) => {
    e.state = state;
    e.since = now();
    e.error = error;
  };

  const startOne = async (e: Entry) => {
    set(e, 'starting');
    try {
      await e.worker.start();
      set(e, 'running');
    } catch (err) {
      set(e, 'failed', (err as Error).message);
      opts.logger?.error({ worker: e.worker.name, err }, 'a worker failed to start');
    }
  };

  return {
    /** Adds a worker; registered after start() it is started at once. */
    async register(worker: Worker): Promise<void> {
      if (entries.has(worker.name)) throw new Error(`a worker named ${worker.name} is already registered`);
      const e: Entry = { worker, state: 'registered', since: now(), error: null };
      entries.set(worker.name, e);
      if (started) await startOne(e);
    },
    /** Starts every registered worker (each on its own: one failing does not stop the others). */
    async start(): Promise<void> {
      started = true;
      await Promise.all([...entries.values()].filter((e) => e.state === 'registered').map(startOne));
    },
    /** Stops them all, the last registered first; errors are logged, never thrown (shutdown goes on). */
    async stop(): Promise<void> {
      started = false;
      for (const e of [...entries.values()].reverse()) {
        if (e.state !== 'running' && e.state !== 'starting' && e.state !== 'failed') continue;
        set(e, 'stopping');
        try {
          await e.worker.stop();
          set(e, 'stopped');
        } catch (err) {
          set(e, 'failed', (err as Error).message);
          opts.logger?.error({ worker: e.worker.name, err }, 'a worker failed to stop cleanly');
        }
      }
    },
    status(): WorkerStatus[] {
      return [...entries.values()].map((e) => {
        let details: WorkerDetails = {};
        try {
          details = e.worker.details?.() ?? {};
        } catch (err) {
          details = { details_error: (err as Error).message };
        }
        return { ...details, name: e.worker.name, state: e.state, since: e.since.toISOString(), error: e.error };
      });
    },
  };
};

export type WorkerRegistry = ReturnType<typeof createWorkerRegistry>;
