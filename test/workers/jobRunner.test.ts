// The runner on a real database with real sshd: a queued job waits for the one it is
// queued behind, and a job's max_parallel holds.
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { createCommandHandler } from '../../commands/handleCommand.ts';
import { jobEventSchemas } from '../../commands/jobSchemas.ts';
import { jobDecider, jobStream, systemDecider, systemStream } from '../../domain/jobs.ts';
import type { Database } from '../../infra/db/database.ts';
import type { EventStore } from '../../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { createSshPool } from '../../infra/ssh/sshPool.ts';
import { jobsProjection } from '../../projections/jobs.ts';
import { createProjectionRuntime, type ProjectionRuntime } from '../../projections/projectionRuntime.ts';
import { createJobRunner } from '../../workers/jobRunner.ts';
import { freshDatabase } from '../support/databases.ts';
import { startSshServer, type SshServer } from '../support/sshServer.ts';
import { waitFor } from '../support/waitFor.ts';

const ctx = { actor: null };

describe('job runner', function () {
  this.timeout(60_000);
  let database: Database;
  let store: EventStore;
  let runtime: ProjectionRuntime;
  let ssh: SshServer;
  const pool = createSshPool({ maxSessionsPerHost: 4 });
  const handle = () => createCommandHandler(store, jobEventSchemas);

  before(async () => {
    ssh = await startSshServer();
    database = await freshDatabase('pglite');
    store = await createPostgresEventStore(database);
    runtime = createProjectionRuntime({ database, store, projectors: [jobsProjection] });
    await runtime.start();
  });
  after(async () => {
    await pool.close();
    await runtime?.stop();
    await store?.close();
    await database?.close();
    await ssh?.stop();
  });

  const system = async () => {
    const systemId = randomUUID();
    const r = await handle()(systemDecider, systemStream(systemId), { type: 'RegisterSystem', data: {
      systemId, name: `h-${systemId.slice(0, 4)}`, project: 'default', hostname: '127.0.0.1', port: ssh.port, systemType: 'linux',
      username: ssh.username, authKind: 'password', credentialRef: randomUUID(), description: null, labels: {}, isActive: true,
    } }, ctx);
    await runtime.whenCaughtUp(r.append!.position);
    return systemId;
  };
  const job = async (command: string, systems: string[], o: { maxParallel?: number; queuedBehind?: string } = {}) => {
    const jobId = randomUUID();
    const r = await handle()(jobDecider, jobStream(jobId), { type: 'CreateJob', data: {
      jobId, name: 'j', command, project: 'default', targets: systems.map((s) => ({ executionId: randomUUID(), systemId: s, systemName: 'h' })),
      scheduleAt: null, timeoutSeconds: 60, maxParallel: o.maxParallel ?? null, createdBy: null, templateId: null, params: null, queuedBehind: o.queuedBehind ?? null,
    } }, ctx);
    await runtime.whenCaughtUp(r.append!.position);
    return jobId;
  };
  const statuses = async (jobId: string) =>
    (await database.db.selectFrom('job_executions').select('status').where('job_id', '=', jobId).orderBy('ord').execute()).map((r) => r.status);

  it('runs a queued job only once the job it waits for has ended, and keeps to max_parallel', async () => {
    let peak = 0;
    let now = 0;
    const runner = createJobRunner({
      db: database.db, exclusive: true, maxConcurrency: 10, maxOutputBytes: 1 << 20, tickMs: 50,
      ssh: { exec: async (target, command, opts) => {
        now += 1; peak = Math.max(peak, now);
        try { return await pool.exec(target, command, opts); } finally { now -= 1; }
      } },
      credentials: async () => ({ password: ssh.password }),
      start: async (jobId, executionId, owner) => {
        await handle()(jobDecider, jobStream(jobId), { type: 'StartExecution', data: { jobId, executionId, startedAt: new Date().toISOString(), runner: owner } }, ctx);
        return true;
      },
      finish: async (data) => void (await handle()(jobDecider, jobStream(data.jobId), { type: 'FinishExecution', data }, ctx)),
      pinHostKey: async (systemId, fingerprint) => void (await handle()(systemDecider, systemStream(systemId), { type: 'PinHostKey', data: { systemId, fingerprint } }, ctx)),
    });
    const [a, b, c] = [await system(), await system(), await system()];
    const first = await job('sleep 1', [a, b, c], { maxParallel: 1 });
    const queued = await job('true', [a], { queuedBehind: first });
    await runner.start();
    try {
      await waitFor(async () => (await statuses(first)).includes('running'), 'the first job to run');
      expect(await statuses(queued)).to.deep.equal(['pending']);
      await waitFor(async () => (await statuses(first)).every((s) => s === 'completed'), 'the first job to end', 30_000);
      await waitFor(async () => (await statuses(queued))[0] === 'completed', 'the queued job to run after it');
      expect(peak).to.equal(1);
    } finally {
      await runner.stop();
    }
  });
});
