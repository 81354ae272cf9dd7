// The scheduler against a real database: the latest due run only, once; overlap `skip`
// and `queue` against a run still going; errors that will not pass are recorded as skips.
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import type { Database } from '../../infra/db/database.ts';
import { createJobScheduler } from '../../workers/jobScheduler.ts';
import { freshDatabase } from '../support/databases.ts';

const T0 = new Date('2026-11-23T10:00:00Z');
const minutes = (m: number) => new Date(T0.getTime() + m * 60_000);

describe('job scheduler', () => {
  let database: Database;
  before(async () => { database = await freshDatabase('pglite'); });
  after(async () => database?.close());

  const template = async (o: { cron: string; overlap: string; timezone?: string }) => {
    const id = randomUUID();
    await database.db.insertInto('job_templates').values({
      id, project: 'default', name: `t-${id.slice(0, 4)}`, command: 'true', parameters: '[]', targets: '{"labels":{}}', cron: o.cron,
      timezone: o.timezone ?? 'UTC', overlap: o.overlap, timeout_seconds: 60, max_parallel: null, created_at: T0, updated_at: T0, revision: '0',
    }).execute();
    return id;
  };
  const openJob = async (templateId: string, status = 'running') => {
    const id = randomUUID();
    await database.db.insertInto('jobs').values({
      id, project: 'default', name: 'j', command: 'true', status, schedule_at: null, timeout_seconds: 60, max_parallel: null, created_by: null,
      template_id: templateId, params: null, queued_behind: null, total: 1, created_at: minutes(1), revision: '0',
    }).execute();
    return id;
  };
  const scheduler = (now: Date, fail?: (id: string) => Error | null) => {
    const runs: { templateId: string; dueAt: string; queuedBehind: string | null }[] = [];
    const skips: { templateId: string; dueAt: string; reason: string }[] = [];
    const s = createJobScheduler({
      db: database.db, now: () => now,
      run: async (templateId, dueAt, queuedBehind) => {
        const err = fail?.(templateId);
        if (err) throw err;
        runs.push({ templateId, dueAt, queuedBehind });
      },
      skip: async (templateId, dueAt, reason) => void skips.push({ templateId, dueAt, reason }),
    });
    return { s, runs, skips };
  };

  it('makes only the latest missed run, once, in the template’s time zone', async () => {
    const every5 = await template({ cron: '*/5 * * * *', overlap: 'allow' });
    const berlin = await template({ cron: '0 11 * * *', overlap: 'allow', timezone: 'Europe/Berlin' }); // 10:00 UTC in winter
    const { s, runs } = scheduler(minutes(12));
    await s.runOnce();
    expect(runs.filter((r) => r.templateId === every5)).to.deep.equal([{ templateId: every5, dueAt: minutes(10).toISOString(), queuedBehind: null }]);
    // 11:00 Berlin is T0 itself, not after the template was made: not due yet.
    expect(runs.filter((r) => r.templateId === berlin)).to.deep.equal([]);
    await s.runOnce();
    expect(runs.filter((r) => r.templateId === every5)).to.have.length(1);
  });

  it('skips a run while the last one still runs (skip), or queues it behind that one (queue)', async () => {
    const skip = await template({ cron: '*/5 * * * *', overlap: 'skip' });
    const queue = await template({ cron: '*/5 * * * *', overlap: 'queue' });
    const skipOpen = await openJob(skip);
    const queueOpen = await openJob(queue, 'pending');
    const { s, runs, skips } = scheduler(minutes(6));
    await s.runOnce();
    expect(skips.filter((x) => x.templateId === skip)).to.deep.equal([{ templateId: skip, dueAt: minutes(5).toISOString(), reason: `the previous run (job ${skipOpen}) is still running` }]);
    expect(runs.filter((r) => r.templateId === skip)).to.deep.equal([]);
    expect(runs.filter((r) => r.templateId === queue)).to.deep.equal([{ templateId: queue, dueAt: minutes(5).toISOString(), queuedBehind: queueOpen }]);
  });

  it('records a run that can never be made (no targets left) as skipped, and retries other failures', async () => {
    const gone = await template({ cron: '*/5 * * * *', overlap: 'allow' });
    const flaky = await template({ cron: '*/5 * * * *', overlap: 'allow' });
    const { s, skips } = scheduler(minutes(6), (id) =>
      id === gone ? Object.assign(new Error('the selector matches no active system'), { code: 'NO_TARGETS' })
        : id === flaky ? new Error('database went away') : null);
    await s.runOnce();
    expect(skips.filter((x) => x.templateId === gone).map((x) => x.reason)).to.deep.equal(['the selector matches no active system']);
    expect(skips.filter((x) => x.templateId === flaky)).to.deep.equal([]);
    expect(s.details?.()).to.have.property('last_error').that.matches(/database went away/);
  });
});
