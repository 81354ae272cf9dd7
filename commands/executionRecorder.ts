// The runner's record of executions starting and ending, as events on their job's stream.
// Every execution of a job writes to that one stream, so fifty executions finishing
// together would race for it (and, retrying, could run out of retries and leave an
// execution `running`). Here a job's records go one append at a time, and whatever
// arrives while one is being written goes together in the next (a group commit per job).
import type { ExecutionFinished, ExecutionStarted } from '../domain/jobs.ts';
import { jobDecider, jobStream } from '../domain/jobs.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { createCommandHandler, type CommandContext } from './handleCommand.ts';
import { jobEventSchemas } from './jobSchemas.ts';

type Item =
  | { kind: 'start'; data: ExecutionStarted['data']; resolve(ok: boolean): void; reject(err: unknown): void }
  | { kind: 'finish'; data: ExecutionFinished['data']; resolve(ok: boolean): void; reject(err: unknown): void };

export type ExecutionRecorder = {
  /** True when the execution was started; false when the job no longer wants it (cancelled, already started). */
  start(data: ExecutionStarted['data']): Promise<boolean>;
  finish(data: ExecutionFinished['data']): Promise<void>;
};

export const createExecutionRecorder = (store: EventStore, ctx: CommandContext): ExecutionRecorder => {
  // A busy job stream now and then loses a race to a cancel from the API: retry freely.
  const handle = createCommandHandler(store, jobEventSchemas);
  const queues = new Map<string, Item[]>();
  const busy = new Set<string>();

  const drain = async (jobId: string) => {
    busy.add(jobId);
    try {
      // Let what arrives in this turn of the event loop join the first append too.
      await new Promise((resolve) => setImmediate(resolve));
      for (let batch = queues.get(jobId); batch && batch.length > 0; batch = queues.get(jobId)) {
        queues.set(jobId, []);
        try {
          const result = await handle(jobDecider, jobStream(jobId), { type: 'RecordExecutions', data: {
            jobId,
            starts: batch.flatMap((i) => (i.kind === 'start' ? [i.data] : [])),
            finishes: batch.flatMap((i) => (i.kind === 'finish' ? [i.data] : [])),
          } }, ctx, { retries: 50 });
          const started = new Set(result.events.flatMap((e) => (e.type === 'ExecutionStarted' ? [e.data.executionId] : [])));
          for (const i of batch) i.resolve(i.kind === 'start' ? started.has(i.data.executionId) : true);
        } catch (err) {
          for (const i of batch) i.reject(err);
        }
      }
    } finally {
      busy.delete(jobId);
      queues.delete(jobId);
    }
  };

  const enqueue = (item: Item) => {
    const jobId = item.data.jobId;
    const queue = queues.get(jobId) ?? [];
    queue.push(item);
    queues.set(jobId, queue);
    if (!busy.has(jobId)) void drain(jobId);
  };

  return {
    start: (data) => new Promise<boolean>((resolve, reject) => enqueue({ kind: 'start', data, resolve, reject })),
    finish: (data) => new Promise<void>((resolve, reject) => enqueue({ kind: 'finish', data, resolve: () => resolve(), reject })),
  };
};
