// Nothing stays `running` when the process running it dies: `opsledger serve` is killed
// (SIGKILL) in the middle of a job, and the next start ends its execution as
// `interrupted` and runs what was still pending. A clean stop kills and records too.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { startApi, type TestApi } from '../support/apiClient.ts';
import { withServeChild } from '../support/serveChild.ts';
import { freshDatabaseUrl } from '../support/databases.ts';
import { openServerDatabase } from '../../infra/db/database.ts';
import { startSshServer, type SshServer } from '../support/sshServer.ts';
import { waitFor } from '../support/waitFor.ts';

describe('jobs across a crash and a restart', function () {
  this.timeout(120_000);
  let ssh: SshServer;
  let api: TestApi | null = null;
  const keys = { SECRET_KEY: randomBytes(32).toString('hex'), SECRETS_KEY: randomBytes(32).toString('hex') };

  before(async () => { ssh = await startSshServer(); });
  after(async () => {
    await api?.close();
    await ssh?.stop();
  });

  it('ends the execution a killed process was running as interrupted, and runs the pending one after the restart', async () => {
    const databaseUrl = await freshDatabaseUrl();
    const job = await withServeChild({ ...keys, DATABASE_URL: databaseUrl }, async ({ admin: first, kill }) => {
      const system = (await first.post('/systems', { name: 'host', hostname: '127.0.0.1', port: ssh.port, username: ssh.username, auth: { password: ssh.password } })).body;
      const other = (await first.post('/systems', { name: 'host-2', hostname: '127.0.0.1', port: ssh.port, username: ssh.username, auth: { password: ssh.password } })).body;
      // One at a time: the first runs when the process dies, the second is still pending.
      const created = (await first.post('/jobs', { command: 'sleep 3', system_ids: [system.id, other.id], max_parallel: 1 })).body;
      expect(created.id).to.be.a('string');
      await waitFor(async () => (await first.get(`/jobs/${created.id}`)).body.executions.some((e: { status: string }) => e.status === 'running'), 'an execution to run');
      await kill();
      return created;
    });

    api = await startApi({ flavour: 'postgres', env: { DATABASE_URL: databaseUrl, ...keys }, server: { jobs: { leaseTtlMs: 1000, heartbeatMs: 200 } } });
    const done = await waitFor(async () => {
      const j = (await api!.admin.get(`/jobs/${job.id}`)).body;
      return ['completed', 'failed'].includes(j.status) ? j : null;
    }, 'the job to end after the restart', 30_000);
    const statuses = done.executions.map((e: { status: string }) => e.status).sort();
    expect(statuses).to.deep.equal(['completed', 'interrupted']);
    const interrupted = done.executions.find((e: { status: string }) => e.status === 'interrupted');
    expect(interrupted.error_message).to.match(/stopped before it finished/);
    expect(done.status).to.equal('failed');
  });

  it('a clean stop kills what runs and records it as interrupted', async () => {
    const url = await freshDatabaseUrl();
    const own = await startApi({ flavour: 'postgres', env: { DATABASE_URL: url } });
    let closed = false;
    try {
      const system = (await own.admin.post('/systems', { name: 'h', hostname: '127.0.0.1', port: ssh.port, username: ssh.username, auth: { private_key: ssh.privateKey } })).body;
      const marker = `opl-stop-${randomBytes(4).toString('hex')}`;
      const job = (await own.admin.post('/jobs', { command: `sh -c 'sleep 60; echo ${marker}'`, system_ids: [system.id] })).body;
      const alive = async () => (await ssh.run(`pgrep -f '[${marker[0]}]${marker.slice(1)}'`)).code === 0;
      await waitFor(alive, 'the remote process');
      await own.close();
      closed = true;
      expect(await alive()).to.equal(false);
      const database = openServerDatabase({ url });
      try {
        const e = await database.db.selectFrom('job_executions').select(['status', 'error_message']).where('job_id', '=', job.id).executeTakeFirstOrThrow();
        expect(e).to.deep.equal({ status: 'interrupted', error_message: 'Opsledger stopped: the remote process was killed' });
      } finally {
        await database.close();
      }
    } finally {
      if (!closed) await own.close();
    }
  });
});
