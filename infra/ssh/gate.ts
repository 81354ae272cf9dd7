// A FIFO counting semaphore: at most `limit` holders, the rest wait in arrival order.
// Used for sessions per host and for concurrent handshakes per host.
export type Gate = {
  /** Resolves true once admitted, false if `signal` aborts first (the place in line is given up). */
  acquire(signal?: AbortSignal): Promise<boolean>;
  release(): void;
  /** Fails everyone waiting (the pool is closing). */
  rejectWaiting(err: Error): void;
  readonly inUse: number;
  readonly waiting: number;
};

type Waiter = { admit(): void; reject(err: Error): void };

export const createGate = (limit: number): Gate => {
  let inUse = 0;
  const queue: Waiter[] = [];
  return {
    acquire(signal) {
      if (signal?.aborted) return Promise.resolve(false);
      if (inUse < limit && queue.length === 0) {
        inUse++;
        return Promise.resolve(true);
      }
      return new Promise<boolean>((resolve, reject) => {
        const onAbort = () => {
          const i = queue.indexOf(waiter);
          if (i >= 0) queue.splice(i, 1);
          resolve(false);
        };
        const waiter: Waiter = {
          admit: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve(true);
          },
          reject: (err) => {
            signal?.removeEventListener('abort', onAbort);
            reject(err);
          },
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        queue.push(waiter);
      });
    },
    release() {
      const next = queue.shift();
      // The slot passes straight to the next in line, so a newcomer cannot jump the queue.
      if (next) next.admit();
      else inUse--;
    },
    rejectWaiting(err) {
      for (const w of queue.splice(0)) w.reject(err);
    },
    get inUse() {
      return inUse;
    },
    get waiting() {
      return queue.length;
    },
  };
};
