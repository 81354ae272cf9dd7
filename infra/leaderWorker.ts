// A worker that must run on one instance at a time (SPEC §2 scale-out): it starts only
// while this instance holds its advisory lock, stands by otherwise and tries again, and
// stops if the lock's connection dies (another instance takes over).
import type { AdvisoryLock } from './db/database.ts';
import type { Worker, WorkerDetails } from './workers.ts';

export type LeaderOptions = {
  tryLock(): Promise<AdvisoryLock | null>;
  /** How often a standby instance tries to take over (default 5 s). */
  retryMs?: number;
  logger?: { info(o: object, msg?: string): void; warn(o: object, msg?: string): void };
};

export const asLeader = (worker: Worker, opts: LeaderOptions): Worker => {
  const retryMs = opts.retryMs ?? 5000;
  let lock: AdvisoryLock | null = null;
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;

  const attempt = async (): Promise<void> => {
    timer = null;
    if (stopped) return;
    try {
      lock = await opts.tryLock();
    } catch (err) {
      opts.logger?.warn({ worker: worker.name, err: (err as Error).message }, 'could not ask for a worker’s lock');
    }
    if (stopped) {
      await lock?.release();
      return;
    }
    if (!lock) {
      timer = setTimeout(() => void attempt(), retryMs);
      timer.unref();
      return;
    }
    const held = lock;
    void held.lost.then(async () => {
      if (stopped || lock !== held) return;
      opts.logger?.warn({ worker: worker.name }, 'lost a worker’s lock: stopping it here and standing by');
      lock = null;
      await worker.stop();
      void attempt();
    });
    await worker.start();
  };

  return {
    name: worker.name,
    async start() {
      stopped = false;
      await attempt();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (lock) {
        await worker.stop();
        await lock.release();
        lock = null;
      }
    },
    details(): WorkerDetails {
      return { leader: lock !== null, ...(lock ? worker.details?.() ?? {} : {}) };
    },
  };
};
