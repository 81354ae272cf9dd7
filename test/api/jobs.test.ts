// Jobs over SSH through the real app against real sshd servers on loopback: systems with
// key and password auth, connection tests, jobs with output, megabytes of it, timeouts and
// cancels that kill the remote process, host key pinning, sshd's default limits with 50
// targets, templates, the dashboard, live output, and bad input.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { sql } from 'kysely';
import { io as connectClient, type Socket } from 'socket.io-client';
import { expectProblem, startApi, unique, type TestApi } from '../support/apiClient.ts';
import { startSshServer, type SshServer } from '../support/sshServer.ts';
import { waitFor } from '../support/waitFor.ts';

const FINAL = ['completed', 'failed', 'timeout', 'cancelled', 'interrupted'];

describe('jobs API', function () {
  this.timeout(120_000);
  let api: TestApi;
  let ssh: SshServer;
  const sockets: Socket[] = [];

  const eventCount = async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from events`.execute(api.running.kernel.database.db);
    return rows[0]!.n;
  };
  const addSystem = async (body: Record<string, unknown> = {}, server = ssh) => {
    const r = await api.admin.post('/systems', {
      name: unique('host'), hostname: '127.0.0.1', port: server.port, username: server.username, auth: { private_key: server.privateKey }, ...body,
    });
    expect(r.status, r.text).to.equal(201);
    return r.body as { id: string; name: string; host_key_fingerprint: string | null };
  };
  const runJob = async (body: Record<string, unknown>) => {
    const r = await api.admin.post('/jobs', body);
    expect(r.status, r.text).to.equal(201);
    return r.body as { id: string };
  };
  const job = async (id: string) => (await api.admin.get(`/jobs/${id}`)).body;
  const finished = (id: string, timeoutMs = 30_000) =>
    waitFor(async () => { const j = await job(id); return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : null; }, `job ${id} to end`, timeoutMs);
  const marker = () => `opl-${randomBytes(6).toString('hex')}`;
  // `[o]` keeps pgrep from matching the shell that runs it (its command line holds the pattern).
  const remoteAlive = async (m: string) => (await ssh.run(`pgrep -f '[${m[0]}]${m.slice(1)}'`)).code === 0;

  before(async () => {
    ssh = await startSshServer();
    api = await startApi({ env: { MAX_OUTPUT_BYTES: '1048576' } });
  });
  after(async () => {
    for (const s of sockets) s.close();
    await api?.close();
    await ssh?.stop();
  });

  it('keeps credentials out of every answer and event, tests a connection and pins the host key on first contact', async () => {
    const keyed = await addSystem({ labels: { role: 'web' } });
    const passworded = await addSystem({ auth: { password: ssh.password } });
    const encrypted = await addSystem({ auth: { private_key: ssh.encryptedKey.privateKey, passphrase: ssh.encryptedKey.passphrase } });
    expect(keyed).to.include({ auth_type: 'private_key', health_status: 'unknown', host_key_fingerprint: null });
    for (const s of [keyed, passworded, encrypted]) {
      const text = JSON.stringify([(await api.admin.get(`/systems/${s.id}`)).body, (await api.admin.get(`/streams/system-${s.id}`)).body]);
      for (const secret of [ssh.password, ssh.privateKey.slice(40, 80), ssh.encryptedKey.passphrase]) expect(text).not.to.include(secret);
    }
    const tested = await api.admin.post(`/systems/${passworded.id}/test`);
    expect(tested.status, tested.text).to.equal(200);
    expect(tested.body).to.include({ success: true, host_key_fingerprint: ssh.hostKeyFingerprint });
    expect(tested.body.system_info.whoami_output).to.equal(ssh.username);
    expect(tested.body.system_info.os_info).to.be.a('string').and.not.equal('');
    const after = (await api.admin.get(`/systems/${passworded.id}`)).body;
    expect(after).to.include({ health_status: 'healthy', host_key_fingerprint: ssh.hostKeyFingerprint });
    expect((await api.admin.post(`/systems/${encrypted.id}/test`)).body.success).to.equal(true);

    const wrong = await addSystem({ auth: { password: 'not-the-password' } });
    const refused = await api.admin.post(`/systems/${wrong.id}/test`);
    expect(refused.body).to.include({ success: false, code: 'SSH_AUTH_FAILED' });
    expect(refused.text).not.to.include('not-the-password');
    expect((await api.admin.get(`/systems/${wrong.id}`)).body.health_status).to.equal('unhealthy');
    const closed = await addSystem({ port: 1 });
    expect((await api.admin.post(`/systems/${closed.id}/test`)).body).to.include({ success: false, code: 'SSH_UNREACHABLE' });

    expectProblem(await api.admin.post('/systems', { name: 'x', hostname: '127.0.0.1', username: 'u', auth: { private_key: 'not a key' } }), 400, 'VALIDATION_FAILED');
    expectProblem(await api.admin.post('/systems', { name: 'x', hostname: '127.0.0.1', username: 'u',
      auth: { private_key: ssh.encryptedKey.privateKey, passphrase: 'wrong' } }), 400, 'VALIDATION_FAILED');
  });

  it('runs a job on several systems with exit codes, stdout and stderr, and live output on job:{id}', async () => {
    const [a, b] = [await addSystem(), await addSystem({ auth: { password: ssh.password } })];
    const socket = connectClient(`${api.url}/live`, { auth: { token: api.adminToken }, transports: ['websocket'], reconnection: false, forceNew: true });
    sockets.push(socket);
    const live: { kind: string; data: { text?: string; stream?: string } }[] = [];
    socket.on('change', (c) => live.push(c));
    await new Promise<void>((resolve, reject) => { socket.once('connect', () => resolve()); socket.once('connect_error', reject); });
    const created = await runJob({ command: 'echo "hello from $(whoami)"; echo oops >&2; exit 3', system_ids: [a.id, b.id] });
    expect(await socket.timeout(5000).emitWithAck('subscribe', `job:${created.id}`)).to.deep.equal({ ok: true });
    const done = await finished(created.id);
    expect(done.status).to.equal('failed');
    expect(done.executions).to.have.length(2);
    for (const e of done.executions) {
      expect(e).to.include({ status: 'failed', exit_code: 3, stdout: `hello from ${ssh.username}\n`, stderr: 'oops\n' });
      expect(e.duration_seconds).to.be.a('number');
    }
    expect(done.counts).to.include({ total: 2, failed: 2 });
    const ok = await finished((await runJob({ command: 'whoami', system_ids: [a.id] })).id);
    expect(ok.status).to.equal('completed');
    expect(ok.executions[0]).to.include({ status: 'completed', exit_code: 0, stdout: `${ssh.username}\n` });
    // Output went out live as well (when the subscription was in place before it ran).
    const streamed = await runJob({ command: 'sleep 0.3; echo streamed-line', system_ids: [a.id] });
    expect(await socket.timeout(5000).emitWithAck('subscribe', `job:${streamed.id}`)).to.deep.equal({ ok: true });
    await waitFor(() => live.some((c) => c.kind === 'ExecutionOutput' && c.data.text?.includes('streamed-line')), 'live output');
    await finished(streamed.id);
  });

  it('stores megabytes of output up to MAX_OUTPUT_BYTES with a truncation marker, readable page by page', async () => {
    const s = await addSystem();
    const done = await finished((await runJob({ command: "head -c 3000000 /dev/zero | tr '\\0' a", system_ids: [s.id] })).id);
    const e = done.executions[0];
    expect(e).to.include({ status: 'completed', stdout_bytes: 3_000_000, stdout_truncated: true });
    expect(e.stdout).to.have.length(65_536);
    let text = '';
    let cursor: string | null = null;
    do {
      const page: { body: { items: { data: string }[]; next_cursor: string | null } } =
        await api.admin.get(`/jobs/${done.id}/executions/${e.id}/output?stream=stdout&limit=500${cursor ? `&cursor=${cursor}` : ''}`);
      text += page.body.items.map((i) => i.data).join('');
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(text.slice(0, 1_048_576)).to.equal('a'.repeat(1_048_576));
    expect(text.slice(1_048_576)).to.match(/output truncated: 1048576 of 3000000 bytes stored/);
  });

  it('kills the remote process on timeout and on cancel', async () => {
    const s = await addSystem();
    const m1 = marker();
    const timedOut = await runJob({ command: `sh -c 'sleep 60; echo ${m1}'`, system_ids: [s.id], timeout_seconds: 1 });
    await waitFor(() => remoteAlive(m1), 'the remote process to run');
    const t = await finished(timedOut.id);
    expect(t.executions[0]).to.include({ status: 'timeout' });
    await waitFor(async () => !(await remoteAlive(m1)), 'the timed-out remote process to be gone');

    const m2 = marker();
    const others = await addSystem();
    const long = await runJob({ command: `sh -c 'sleep 60; echo ${m2}'`, system_ids: [s.id, others.id], max_parallel: 1 });
    await waitFor(() => remoteAlive(m2), 'the remote process to run');
    const cancelled = await api.admin.post(`/jobs/${long.id}/cancel`);
    expect(cancelled.status, cancelled.text).to.equal(200);
    const c = await finished(long.id);
    expect(c.status).to.equal('cancelled');
    expect(c.executions.map((x: { status: string }) => x.status).sort()).to.deep.equal(['cancelled', 'cancelled']);
    await waitFor(async () => !(await remoteAlive(m2)), 'the cancelled remote process to be gone');
    expectProblem(await api.admin.post(`/jobs/${long.id}/cancel`), 409, 'JOB_FINISHED');
  });

  it('fails with HOST_KEY_MISMATCH once the host key changes, until an admin clears the pin', async () => {
    const own = await startSshServer();
    try {
      const s = await addSystem({}, own);
      expect((await finished((await runJob({ command: 'true', system_ids: [s.id] })).id)).status).to.equal('completed');
      expect((await api.admin.get(`/systems/${s.id}`)).body.host_key_fingerprint).to.equal(own.hostKeyFingerprint);
      const rotated = await own.rotateHostKey();
      const refused = await finished((await runJob({ command: 'true', system_ids: [s.id] })).id);
      expect(refused.executions[0].status).to.equal('failed');
      expect(refused.executions[0].error_message).to.match(/^HOST_KEY_MISMATCH/);
      expect((await api.admin.post(`/systems/${s.id}/test`)).body).to.include({ success: false, code: 'HOST_KEY_MISMATCH' });
      const cleared = await api.admin.delete(`/systems/${s.id}/host-key`);
      expect(cleared.status, cleared.text).to.equal(200);
      expect(cleared.body.host_key_fingerprint).to.equal(null);
      expect((await finished((await runJob({ command: 'true', system_ids: [s.id] })).id)).status).to.equal('completed');
      expect((await api.admin.get(`/systems/${s.id}`)).body.host_key_fingerprint).to.equal(rotated);
    } finally {
      await own.stop();
    }
  });

  it('runs on 50 systems behind sshd’s default MaxStartups and MaxSessions without failing any', async () => {
    const strict = await startSshServer({ defaults: true });
    try {
      const ids = [];
      for (let i = 0; i < 50; i++) ids.push((await addSystem({ labels: { fleet: 'fifty' } }, strict)).id);
      const done = await finished((await runJob({ command: 'whoami', selector: { labels: { fleet: 'fifty' } } })).id, 60_000);
      expect(done.counts).to.include({ total: 50, completed: 50 });
      expect(done.executions.every((e: { stdout: string }) => e.stdout === `${strict.username}\n`)).to.equal(true);
    } finally {
      await strict.stop();
    }
  });

  it('runs templates with typed, quoted parameters', async () => {
    const s = await addSystem({ labels: { tier: 'tpl' } });
    const t = await api.admin.post('/job-templates', {
      name: 'greet', command: 'echo {{greeting}} {{count}} {{loud}} {{level}}', selector: { labels: { tier: 'tpl' } },
      parameters: [
        { name: 'greeting', type: 'string' }, { name: 'count', type: 'integer', default: 2 },
        { name: 'loud', type: 'boolean', default: false }, { name: 'level', type: 'enum', values: ['low', 'high'], default: 'low' },
      ],
    });
    expect(t.status, t.text).to.equal(201);
    const run = await api.admin.post(`/job-templates/${t.body.id}/run`, { params: { greeting: 'hello world', level: 'high' } });
    expect(run.status, run.text).to.equal(201);
    expect(run.body).to.include({ command: "echo 'hello world' 2 false high", template_id: t.body.id });
    const done = await finished(run.body.id);
    expect(done.executions[0]).to.include({ system_id: s.id, stdout: 'hello world 2 false high\n' });
  });

  it('refuses bad input with problems and appends nothing', async () => {
    const s = await addSystem();
    const t = (await api.admin.post('/job-templates', { name: 'safe', command: 'echo {{x}}', system_ids: [s.id], parameters: [{ name: 'x', type: 'string' }] })).body;
    const before = await eventCount();
    const missing = '00000000-0000-4000-8000-000000000000';
    const bad = [
      [await api.admin.post('/jobs', { command: 'true', system_ids: [s.id, missing] }), 'body.system_ids[1]'],
      [await api.admin.post('/jobs', { command: '   ', system_ids: [s.id] }), 'body.command'],
      [await api.admin.post('/jobs', { command: 'true', system_ids: [s.id], schedule_at: '2020-01-01T00:00:00Z' }), 'body.schedule_at'],
      [await api.admin.post('/jobs', { command: 'true' }), 'body.system_ids'],
      [await api.admin.post('/job-templates', { name: 'c', command: 'true', system_ids: [s.id], cron: '61 * * * *' }), 'body.cron'],
      [await api.admin.post('/job-templates', { name: 'c', command: 'true', system_ids: [s.id], cron: '* * * * *', timezone: 'Mars/Olympus' }), 'body.timezone'],
      [await api.admin.post('/job-templates', { name: 'c', command: 'echo {{nope}}', system_ids: [s.id] }), 'body.command'],
      [await api.admin.post(`/job-templates/${t.id}/run`, { params: { x: '$(touch /tmp/pwned)' } }), 'body.params.x'],
      [await api.admin.post(`/job-templates/${t.id}/run`, { params: { x: 'a; rm -rf /' } }), 'body.params.x'],
      [await api.admin.post(`/job-templates/${t.id}/run`, { params: {} }), 'body.params.x'],
    ] as const;
    for (const [r, path] of bad) {
      expectProblem(r, 400);
      expect((r.body.errors ?? []).map((e: { path: string }) => e.path), `${path}: ${r.text}`).to.include(path);
    }
    expectProblem(await api.admin.post('/jobs', { command: 'true', selector: { labels: { none: 'such' } } }), 400, 'NO_TARGETS');
    expectProblem(await api.admin.get(`/jobs/${missing}`), 404, 'JOB_NOT_FOUND');
    expect(await eventCount()).to.equal(before);
  });

  it('answers the dashboard in the shape of SPEC §6', async () => {
    const d = await api.admin.get('/dashboard');
    expect(d.status, d.text).to.equal(200);
    expect(d.body.user).to.include({ username: 'admin', role: 'admin' });
    expect(d.body.systems.total).to.be.at.least(1);
    expect(d.body.jobs.total).to.be.at.least(d.body.jobs.completed + d.body.jobs.failed);
    expect(d.body.executions.average_duration).to.be.a('number');
    expect(d.body.engine).to.include({ status: 'running' });
    expect(d.body.engine.available_slots).to.be.at.most(10);
    for (const j of (await api.admin.get('/jobs?limit=500')).body.items) expect(FINAL.concat(['pending', 'running'])).to.include(j.status);
  });
});
