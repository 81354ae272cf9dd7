// Runs job templates on their cron schedule (SPEC §6), in their time zone, with their
// overlap policy: `allow` another run, `skip` it while the last one is pending or running,
// or `queue` it behind that one. Only the latest missed run is made (a scheduler that was
// down for a day does not fire a day's worth of runs). The job id of a scheduled run is
// derived from the template and the due time, so a run is created once however often
// (and on however many instances) it is attempted.
import type { Kysely } from 'kysely';
import type { Tables } from '../infra/db/tables.ts';
import { latestCronRun } from '../infra/cron.ts';
import type { Worker, WorkerDetails } from '../infra/workers.ts';

export type ScheduledTemplate = { id: string; project: string; name: string; cron: string; timezone: string; overlap: string };

export type JobSchedulerDeps = {
  db: Kysely<Tables>;
  /** Creates the template's job for `dueAt` (a no-op when it exists). */
  run(templateId: string, dueAt: string, queuedBehind: string | null): Promise<void>;
  /** Records a due run that did not start, and why. */
  skip(templateId: string, dueAt: string, reason: string): Promise<void>;
  tickMs?: number;
  now?: () => Date;
  logger?: { warn(o: object, msg?: string): void };
};

/** Errors that will not go away by trying again: the run is recorded as skipped. */
const FOR_GOOD = new Set(['NO_TARGETS', 'VALIDATION_FAILED', 'TEMPLATE_NOT_FOUND']);

export const createJobScheduler = (deps: JobSchedulerDeps): Worker & { runOnce(): Promise<number> } => {
  const now = deps.now ?? (() => new Date());
  const handled = new Map<string, string>();
  let timer: NodeJS.Timeout | null = null;
  let ticking: Promise<number> | null = null;
  let runs = 0;
  let lastError: string | null = null;

  const tick = async (): Promise<number> => {
    const templates = await deps.db.selectFrom('job_templates')
      .select(['id', 'project', 'name', 'cron', 'timezone', 'overlap', 'last_run_at', 'created_at'])
      .where('deleted', '=', false).where('cron', 'is not', null).execute();
    let made = 0;
    const at = now();
    for (const t of templates) {
      const after = new Date(Math.max(new Date(t.created_at).getTime(), t.last_run_at ? new Date(t.last_run_at).getTime() : 0));
      let due: Date | null;
      try {
        due = latestCronRun(t.cron!, t.timezone, after, at);
      } catch {
        continue; // checked on the way in; a zone database change is not worth a crash
      }
      if (!due) continue;
      const dueAt = due.toISOString();
      if (handled.get(t.id) === dueAt) continue;
      try {
        const open = await deps.db.selectFrom('jobs').select(['id', 'status']).where('template_id', '=', t.id)
          .where('status', 'in', ['pending', 'running']).orderBy('created_at', 'desc').limit(1).executeTakeFirst();
        if (t.overlap === 'skip' && open) {
          await deps.skip(t.id, dueAt, `the previous run (job ${open.id}) is still ${open.status}`);
        } else {
          await deps.run(t.id, dueAt, t.overlap === 'queue' ? open?.id ?? null : null);
          made += 1;
          runs += 1;
        }
        handled.set(t.id, dueAt);
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        if (FOR_GOOD.has(code)) {
          await deps.skip(t.id, dueAt, (err as Error).message).catch(() => undefined);
          handled.set(t.id, dueAt);
        }
        lastError = `${t.name}: ${(err as Error).message}`;
        deps.logger?.warn({ template_id: t.id, due_at: dueAt, err: (err as Error).message }, 'a scheduled job template run failed');
      }
    }
    return made;
  };

  const runOnce = (): Promise<number> => (ticking ??= tick().finally(() => { ticking = null; }));

  return {
    name: 'job-scheduler',
    start() {
      timer = setInterval(() => void runOnce().catch((err: unknown) => { lastError = (err as Error).message; }), deps.tickMs ?? 15_000);
      timer.unref();
      void runOnce().catch((err: unknown) => { lastError = (err as Error).message; });
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = null;
      await ticking;
    },
    runOnce,
    details: (): WorkerDetails => ({ scheduled_runs: runs, last_error: lastError }),
  };
};
