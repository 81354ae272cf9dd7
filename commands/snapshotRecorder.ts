// Group commit for snapshots: each is one small event on its node's own hot stream, and
// a commit (a disk flush) per snapshot would cap the service at the disk's flush rate.
// While one batch is being written, newly arriving snapshots wait and go together in the
// next (one `appendMany`, one transaction). The first write waits only for the current
// turn of the event loop (setImmediate): requests already read from their sockets join
// it. That matters most on embedded PGlite, whose queries run on the event loop's own
// thread: without the pause every request would get a commit (and a projection batch) of
// its own. An idle snapshot waits well under a millisecond.
import type { AppendResult, EventStore, NewEvent } from '../infra/eventStore/eventStore.ts';

type Pending = { stream: string; events: NewEvent[]; resolve(r: AppendResult): void; reject(err: unknown): void };

export type SnapshotRecorder = {
  append(stream: string, event: NewEvent): Promise<AppendResult>;
  /** Resolves once everything handed in so far is written (or failed). */
  flush(): Promise<void>;
  stats(): { appended: number; batches: number };
};

export const createSnapshotRecorder = (store: Pick<EventStore, 'appendMany'>, opts: { maxBatch?: number } = {}): SnapshotRecorder => {
  const maxBatch = opts.maxBatch ?? 500;
  let queue: Pending[] = [];
  let writing: Promise<void> | null = null;
  let appended = 0;
  let batches = 0;

  const writeAll = async () => {
    while (queue.length > 0) {
      const batch = queue.slice(0, maxBatch);
      queue = queue.slice(batch.length);
      try {
        const results = await store.appendMany(batch.map(({ stream, events }) => ({ stream, events })));
        batch.forEach((p, i) => p.resolve(results[i]!));
        appended += batch.length;
        batches += 1;
      } catch (err) {
        // One bad snapshot must not fail its neighbours: each is tried on its own.
        if (batch.length === 1) batch[0]!.reject(err);
        else {
          await Promise.all(batch.map(async (p) => {
            try {
              const [r] = await store.appendMany([{ stream: p.stream, events: p.events }]);
              p.resolve(r!);
              appended += 1;
            } catch (e) {
              p.reject(e);
            }
          }));
        }
      }
    }
  };

  let scheduled = false;
  const kick = () => {
    if (writing || scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      writing = writeAll().finally(() => {
        writing = null;
        if (queue.length > 0) kick();
      });
    });
  };

  return {
    append(stream, event) {
      return new Promise<AppendResult>((resolve, reject) => {
        queue.push({ stream, events: [event], resolve, reject });
        kick();
      });
    },
    async flush() {
      while (writing || scheduled) await (writing ?? new Promise((resolve) => setImmediate(resolve)));
    },
    stats: () => ({ appended, batches }),
  };
};
