// Jobs benchmark (SPEC §6): fan-out of one command over SSH, against the usual tools run on
// the same targets in the same run, in alternating rounds (medians).
//   jobFanout  one job running `whoami` on 50 systems: wall time from POST /jobs to the Socket.IO
//              push of its final status (a `jobs` subscriber; polling would load the app it
//              measures), then all 50 executions are checked (completed, stdout = the user
//              name), vs `parallel-ssh -p 50` and `ansible -f 50 -m command`.
//
// The targets: ONE throwaway sshd on loopback (test/support/sshServer.ts), so the 50 systems
// are 50 entries for 127.0.0.1:PORT, same user and key. pssh and ansible treat them as 50
// hosts; Opsledger's SSH pool shares connections per host, user and credentials by design,
// so it runs the 50 executions as channels over a few connections (at most
// MAX_SESSIONS_PER_HOST channels at a time). Against 50 real hosts it would need 50 handshakes.
//
// Two sshd configurations, each a full set of rounds:
//   - sshd's own defaults (MaxStartups 10:30:100, MaxSessions 10), as real hosts have them:
//     tools that open 50 connections at once get some of them dropped before the handshake;
//   - the harness's generous limits (MaxStartups 200:30:400, MaxSessions 200): a clean run
//     for every tool.
// The defaults are the headline (the row with the goal) if every tool completed all 50 in
// every round there; otherwise the generous configuration is, and the notes say why.
//
// Every measurement starts with no TCP connection established to sshd (read from
// /proc/net/tcp; the pool closes idle connections after 5 s): every tool connects cold.
// The app runs as a child process on embedded PGlite (bench/api.ts startApp), twice: with
// JOB_MAX_CONCURRENCY and MAX_SESSIONS_PER_HOST at their defaults, and with 50 and 10 (info).
//
// ansible gets its usual speed-ups: pipelining (the module goes over the ssh session's
// stdin; without it ansible copies a file per host, and the harness's sshd has no sftp
// subsystem, so it would also pay a failed sftp attempt and an scp fallback per host) and a
// fixed interpreter (no discovery round trip). Its default ControlMaster=auto/ControlPersist
// stays; a fresh HOME each round (so a fresh control directory), and the persisted masters
// are closed after the timed run.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startSshServer, type SshServer } from '../test/support/sshServer.ts';
import { startApp, type App } from './api.ts';
import { median, type BenchContext, type BenchRow } from './harness.ts';
import { io as connectClient } from 'socket.io-client';

const TARGETS = 50;
const COMMAND = 'whoami';
const JOB_DEADLINE_MS = 30_000;
const TOOL_DEADLINE_MS = 300_000;
const QUIET_DEADLINE_MS = 90_000;
const API = '/api/v1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- child processes (pssh, ansible) -----------------------------------------------------------
const tools = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of tools) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

type ProcResult = { ms: number; code: number | null; stdout: string; stderr: string };

/** Runs a program to its end; `ms` from spawn to exit (stdout and stderr fully read). */
const runTimed = (file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<ProcResult> =>
  new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    tools.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const killer = setTimeout(() => child.kill('SIGKILL'), TOOL_DEADLINE_MS);
    child.on('error', (err) => {
      clearTimeout(killer);
      tools.delete(child);
      reject(new Error(`${file} could not run: ${err.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(killer);
      tools.delete(child);
      resolve({ ms: performance.now() - t0, code, stdout, stderr });
    });
  });

// ---- sshd's connections ------------------------------------------------------------------------

/** TCP connections in ESTABLISHED state whose server end is sshd's port (IPv4, /proc/net/tcp). */
const establishedTo = (port: number): number => {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let n = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 3 && f[1]!.endsWith(hex) && f[3] === '01') n++;
  }
  return n;
};

/** Waits until no connection to sshd is established, so that the next tool starts cold. */
const quiet = async (port: number): Promise<{ waitedMs: number; left: number }> => {
  const t0 = performance.now();
  let left = establishedTo(port);
  while (left > 0 && performance.now() - t0 < QUIET_DEADLINE_MS) {
    await sleep(100);
    left = establishedTo(port);
  }
  return { waitedMs: performance.now() - t0, left };
};

// ---- one measurement per tool ------------------------------------------------------------------

type Outcome = { ms: number; ok: number; problems: string[]; extra?: string };

const tally = (problems: string[]): string => {
  const counts = new Map<string, number>();
  for (const p of problems) counts.set(p, (counts.get(p) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([p, n]) => `${n}× ${p}`).join('; ');
};

/** A short form of an error message for the tally (the varying parts cut off). */
const gist = (text: string): string => text.replace(/\s+/g, ' ').trim().slice(0, 140);

type JobView = {
  status: string;
  created_at: string;
  counts: Record<string, number>;
  executions: { status: string; stdout: string | null; error_message?: string | null; exit_code?: number | null; completed_at?: string | null }[];
};

const request = async (app: App, method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: unknown }> => {
  const headers: Record<string, string> = { authorization: `Bearer ${app.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${app.url}${API}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* kept as text for the error message */ }
  return { status: res.status, body: parsed };
};

const registerSystems = async (app: App, ssh: SshServer, tag: string): Promise<string[]> => {
  const ids: string[] = [];
  for (let i = 0; i < TARGETS; i++) {
    const r = await request(app, 'POST', '/systems', {
      name: `fanout-${tag}-${String(i + 1).padStart(2, '0')}`, hostname: '127.0.0.1', port: ssh.port, username: ssh.username,
      auth: { private_key: ssh.privateKey },
    });
    if (r.status !== 201) throw new Error(`POST /systems answered ${r.status}: ${JSON.stringify(r.body).slice(0, 500)}`);
    ids.push((r.body as { id: string }).id);
  }
  return ids;
};

const FINAL_JOB = new Set(['completed', 'failed', 'cancelled']);

/** A Socket.IO client subscribed to `jobs`: it hears each job's status as its projection commits it. */
const jobWatcher = async (app: App) => {
  const socket = connectClient(`${app.url}/live`, { auth: { token: app.token }, transports: ['websocket'], reconnection: false, forceNew: true });
  await new Promise<void>((resolve, reject) => { socket.once('connect', () => resolve()); socket.once('connect_error', reject); });
  const ack = await socket.timeout(5000).emitWithAck('subscribe', 'jobs');
  if (!ack?.ok) throw new Error(`subscribe jobs: ${JSON.stringify(ack)}`);
  const ended = new Map<string, () => void>();
  const seen = new Set<string>();
  socket.on('change', (c: { id: string; data?: { status?: string } }) => {
    if (!FINAL_JOB.has(c.data?.status ?? '')) return;
    seen.add(c.id);
    ended.get(c.id)?.();
  });
  return {
    /** Resolves when the job's final status was pushed (or at once if it already was); false after `ms`. */
    until: (jobId: string, ms: number) => new Promise<boolean>((resolve) => {
      if (seen.has(jobId)) return resolve(true);
      const t = setTimeout(() => { ended.delete(jobId); resolve(false); }, ms);
      ended.set(jobId, () => { clearTimeout(t); ended.delete(jobId); resolve(true); });
    }),
    close: () => void socket.close(),
  };
};
type JobWatcher = Awaited<ReturnType<typeof jobWatcher>>;

/**
 * POST /jobs, then the Socket.IO push of its final status (`jobs` topic, sent when the
 * projection committed it: no polling load on the app); then one GET checks every
 * execution (not timed). A job that has not ended after JOB_DEADLINE_MS is cancelled and
 * counted at the deadline (a lower bound), its executions that did not complete as failures.
 */
const opsledgerRun = async (app: App, watcher: JobWatcher, ids: string[], username: string): Promise<Outcome> => {
  const t0 = performance.now();
  const created = await request(app, 'POST', '/jobs', { command: COMMAND, system_ids: ids });
  const postMs = performance.now() - t0;
  if (created.status !== 201) throw new Error(`POST /jobs answered ${created.status}: ${JSON.stringify(created.body).slice(0, 500)}`);
  const jobId = (created.body as { id: string }).id;
  const ended = await watcher.until(jobId, JOB_DEADLINE_MS - (performance.now() - t0));
  const ms = performance.now() - t0;
  const got = await request(app, 'GET', `/jobs/${jobId}`);
  if (got.status !== 200) throw new Error(`GET /jobs/${jobId} answered ${got.status}: ${JSON.stringify(got.body).slice(0, 500)}`);
  const job = got.body as JobView;
  const problems: string[] = [];
  let ok = 0;
  for (const e of job.executions) {
    if (e.status === 'completed' && (e.stdout ?? '').replace(/\n$/, '') === username) ok++;
    else if (e.status === 'running' || e.status === 'pending') problems.push(`still ${e.status} at the deadline (stdout so far ${JSON.stringify(e.stdout)})`);
    else problems.push(gist(`${e.status}${e.exit_code != null ? ` exit ${e.exit_code}` : ''}: ${e.error_message ?? `stdout ${JSON.stringify(e.stdout)}`}`));
  }
  if (job.executions.length !== TARGETS) problems.push(`${job.executions.length} executions instead of ${TARGETS}`);
  if (!ended) {
    problems.push(`job not ended after ${JOB_DEADLINE_MS / 1000} s (counted at the deadline, then cancelled)`);
    const c = await request(app, 'POST', `/jobs/${jobId}/cancel`);
    if (c.status !== 200) problems.push(`cancel answered ${c.status}`);
  }
  // The server's own view: job created → last execution completed.
  const span = Math.max(...job.executions.map((e) => Date.parse(e.completed_at ?? '') || NaN)) - Date.parse(job.created_at);
  return { ms, ok, problems, extra: `POST ${postMs.toFixed(0)} ms, job ${ended ? job.status : `still ${job.status}`}${Number.isFinite(span) ? `, created→last completed_at ${span} ms` : ''}` };
};

type Files = { dir: string; key: string; hosts: string; inventory: string };

const writeFiles = (ssh: SshServer): Files => {
  const dir = mkdtempSync(join(tmpdir(), 'opsledger-bench-fanout-'));
  const key = join(dir, 'id_ed25519');
  writeFileSync(key, ssh.privateKey, { mode: 0o600 });
  // pssh: "host[:port]" lines; it keeps repeated entries (50 connections).
  const hosts = join(dir, 'hosts');
  writeFileSync(hosts, Array.from({ length: TARGETS }, () => `127.0.0.1:${ssh.port}\n`).join(''));
  const inventory = join(dir, 'inventory.ini');
  writeFileSync(inventory, [
    '[fleet]',
    ...Array.from({ length: TARGETS }, (_, i) => `t${String(i + 1).padStart(2, '0')} ansible_host=127.0.0.1`),
    '',
    '[fleet:vars]',
    `ansible_port=${ssh.port}`,
    `ansible_user=${ssh.username}`,
    `ansible_ssh_private_key_file=${key}`,
    "ansible_ssh_common_args='-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'",
    '',
  ].join('\n'));
  return { dir, key, hosts, inventory };
};

const psshRun = async (files: Files, username: string): Promise<Outcome> => {
  const sshArgs = `-F /dev/null -i ${files.key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR`;
  const r = await runTimed('parallel-ssh', ['-p', String(TARGETS), '-t', '120', '-h', files.hosts, '-l', username, '-x', sshArgs, '-i', COMMAND]);
  // -i: "[n] HH:MM:SS [SUCCESS] host:port" then the host's stdout, then "Stderr: …" if any.
  const blocks = r.stdout.split(/^(?=\[\d+\] \S+ \[(?:SUCCESS|FAILURE)\])/m).filter((b) => /^\[\d+\]/.test(b));
  let ok = 0;
  const problems: string[] = [];
  for (const b of blocks) {
    const [head, ...rest] = b.split('\n');
    if (/\[SUCCESS\]/.test(head!) && rest[0] === username) ok++;
    else problems.push(gist(`${head!.replace(/^\[\d+\] \S+ \[\w+\] \S+ ?/, '') || 'no error'}: ${rest.join(' ')}`));
  }
  if (blocks.length !== TARGETS) problems.push(`parallel-ssh printed ${blocks.length} results (exit ${r.code}): ${gist(r.stderr || r.stdout)}`);
  return { ms: r.ms, ok, problems, extra: `exit ${r.code}` };
};

const ansibleRun = async (files: Files, username: string, round: string): Promise<Outcome> => {
  const home = join(files.dir, `ansible-home-${round}`);
  mkdirSync(home, { recursive: true });
  const cfg = join(home, 'ansible.cfg');
  writeFileSync(cfg, ['[defaults]', 'interpreter_python = /usr/bin/python3', '', '[ssh_connection]', 'pipelining = True', ''].join('\n'));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: home, ANSIBLE_CONFIG: cfg,
    ANSIBLE_HOST_KEY_CHECKING: 'False', ANSIBLE_NOCOLOR: '1', ANSIBLE_LOCAL_TEMP: join(home, 'tmp'),
  };
  try {
    const r = await runTimed('ansible', ['all', '-i', files.inventory, '-f', String(TARGETS), '-m', 'command', '-a', COMMAND], { env, cwd: home });
    // minimal callback: "t01 | CHANGED | rc=0 >>" then the output; failures as "t01 | UNREACHABLE! => {…}".
    let ok = 0;
    const problems: string[] = [];
    const lines = r.stdout.split('\n');
    let results = 0;
    for (let i = 0; i < lines.length; i++) {
      const m = /^t\d+ \| (\S+)/.exec(lines[i]!);
      if (!m) continue;
      results++;
      if (/^(CHANGED|SUCCESS) \| rc=0 >>$/.test(lines[i]!.replace(/^t\d+ \| /, '')) && lines[i + 1] === username) ok++;
      else {
        const msg = /"msg": "(.*)",?$/.exec(lines.slice(i + 1, i + 8).find((l) => l.includes('"msg"')) ?? '')?.[1] ?? lines[i + 1] ?? '';
        problems.push(gist(`${m[1]} ${msg.replace(/\\r\\n/g, ' ').replace(/^Data could not be sent to remote host .*? over ssh: /, '')}`));
      }
    }
    if (results !== TARGETS) problems.push(`ansible printed ${results} results (exit ${r.code}): ${gist(r.stderr || r.stdout)}`);
    return { ms: r.ms, ok, problems, extra: `exit ${r.code}` };
  } finally {
    // ControlPersist keeps masters 60 s: close them (outside the timed part).
    const cp = join(home, '.ansible', 'cp');
    let sockets: string[] = [];
    try {
      sockets = readdirSync(cp);
    } catch { /* no master was made */ }
    for (const s of sockets) spawnSync('ssh', ['-F', '/dev/null', '-O', 'exit', '-o', `ControlPath=${join(cp, s)}`, 'ansible-master'], { stdio: 'ignore' });
    rmSync(home, { recursive: true, force: true });
  }
};

// ---- one configuration of sshd -----------------------------------------------------------------

type Tool = 'opsledger' | 'pssh' | 'ansible' | 'opsledger50';
const TOOLS: Tool[] = ['opsledger', 'pssh', 'ansible', 'opsledger50'];
const VARIANT_ENV = { JOB_MAX_CONCURRENCY: '50', MAX_SESSIONS_PER_HOST: '10' };

type Phase = {
  label: string;
  short: string;
  outcomes: Record<Tool, Outcome[]>;
  /** Connections still established to sshd when a measurement had to start anyway. */
  notQuiet: number;
  maxQuietWaitMs: number;
  /** Warm-up runs (not counted) that did not complete all 50. */
  warmupTrouble: string[];
};

const runPhase = async (ctx: BenchContext, defaults: boolean): Promise<Phase> => {
  const label = defaults ? 'sshd defaults (MaxStartups 10:30:100, MaxSessions 10)' : 'generous sshd limits (MaxStartups 200:30:400, MaxSessions 200)';
  const short = defaults ? 'sshd defaults' : 'generous sshd limits';
  ctx.log(`  ${label}`);
  const ssh = await startSshServer({ defaults });
  const files = writeFiles(ssh);
  const apps: App[] = [];
  const watchers: JobWatcher[] = [];
  try {
    const app = await startApp();
    apps.push(app);
    const app50 = await startApp(VARIANT_ENV);
    apps.push(app50);
    const ids = await registerSystems(app, ssh, 'a');
    const ids50 = await registerSystems(app50, ssh, 'b');
    const watch = await jobWatcher(app);
    const watch50 = await jobWatcher(app50);
    watchers.push(watch, watch50);
    const runs: Record<Tool, (round: string) => Promise<Outcome>> = {
      opsledger: () => opsledgerRun(app, watch, ids, ssh.username),
      pssh: () => psshRun(files, ssh.username),
      ansible: (round) => ansibleRun(files, ssh.username, round),
      opsledger50: () => opsledgerRun(app50, watch50, ids50, ssh.username),
    };
    const outcomes: Record<Tool, Outcome[]> = { opsledger: [], pssh: [], ansible: [], opsledger50: [] };
    let notQuiet = 0;
    let maxQuietWaitMs = 0;
    const describe = (o: Outcome) => `${o.ms.toFixed(0)} ms, ${o.ok}/${TARGETS} ok${o.extra ? ` (${o.extra})` : ''}${o.problems.length ? ` — ${tally(o.problems)}` : ''}`;
    // Warm-up (not counted): the apps pin the host key on first contact; python's and node's caches.
    const warmupTrouble: string[] = [];
    for (const t of TOOLS) {
      await quiet(ssh.port);
      const o = await runs[t]('warmup');
      ctx.log(`    warm-up ${t}: ${describe(o)}`);
      if (o.ok !== TARGETS) warmupTrouble.push(`${t} ${o.ok}/${TARGETS} in ${o.ms.toFixed(0)} ms (${tally(o.problems)})`);
    }
    for (let r = 0; r < ctx.rounds; r++) {
      const line: string[] = [];
      for (const t of TOOLS) {
        const q = await quiet(ssh.port);
        maxQuietWaitMs = Math.max(maxQuietWaitMs, q.waitedMs);
        if (q.left > 0) notQuiet++;
        const o = await runs[t](String(r));
        outcomes[t].push(o);
        line.push(`${t} ${describe(o)}`);
      }
      ctx.log(`    round ${r + 1}: ${line.join(' | ')}`);
    }
    return { label, short, outcomes, notQuiet, maxQuietWaitMs, warmupTrouble };
  } finally {
    for (const w of watchers) w.close();
    for (const a of apps) await a.stop();
    await ssh.stop();
    rmSync(files.dir, { recursive: true, force: true });
  }
};

// ---- the benchmark -----------------------------------------------------------------------------

export const jobFanout = async (ctx: BenchContext): Promise<BenchRow[]> => {
  for (const v of ['JOB_MAX_CONCURRENCY', 'MAX_SESSIONS_PER_HOST']) {
    if (process.env[v] !== undefined) ctx.log(`  note: ${v}=${process.env[v]} is set in the environment; the "defaults" app inherits it`);
  }
  const strict = await runPhase(ctx, true);
  const generous = await runPhase(ctx, false);
  const clean = (p: Phase) => (['opsledger', 'pssh', 'ansible'] as Tool[]).every((t) => p.outcomes[t].every((o) => o.ok === TARGETS));
  const headline = clean(strict) ? strict : generous;
  const why = clean(strict)
    ? 'headline: sshd defaults, every tool completed all 50 in every round there'
    : `headline: the generous limits, because under sshd's defaults not every tool completed all 50 (${
      (['opsledger', 'pssh', 'ansible'] as Tool[]).filter((t) => !strict.outcomes[t].every((o) => o.ok === TARGETS)).join(', ')} did not); ` +
      'a tool that loses connections to MaxStartups also finishes sooner, so its time there is not comparable';

  const okList = (p: Phase, t: Tool) => p.outcomes[t].map((o) => o.ok).join(', ');
  const problemsOf = (p: Phase, t: Tool) => {
    const all = p.outcomes[t].flatMap((o) => o.problems);
    return all.length ? ` [${t} failures: ${tally(all)}]` : '';
  };
  const shared = (p: Phase) =>
    `successes of ${TARGETS} in each round: opsledger [${okList(p, 'opsledger')}], parallel-ssh [${okList(p, 'pssh')}], ansible [${okList(p, 'ansible')}], ` +
    `opsledger JOB_MAX_CONCURRENCY=50 [${okList(p, 'opsledger50')}]` +
    (p.warmupTrouble.length ? `; WARM-UP (not counted) fell short: ${p.warmupTrouble.join('; ')}` : '');
  const cold = (p: Phase) =>
    `Every measurement started with no connection established to sshd${p.notQuiet ? ` EXCEPT ${p.notQuiet} (connections still open after ${QUIET_DEADLINE_MS / 1000} s)` : ''}`;

  const rowsOf = (p: Phase): BenchRow[] => {
    const isHeadline = p === headline;
    const pssh = p.outcomes.pssh.map((o) => o.ms);
    const base = { bench: 'jobFanout', unit: 'ms', baselineLabel: `parallel-ssh -p ${TARGETS}, same targets (${p.short})` };
    const row = (t: Tool, metric: string, goal: BenchRow['goal'], note?: string): BenchRow => {
      const ours = p.outcomes[t].map((o) => o.ms);
      return { ...base, metric, baseline: median(pssh), ours: median(ours), goal, rounds: { baseline: pssh, ours }, ...(note ? { note } : {}) };
    };
    return [
      row('opsledger', `one job, \`${COMMAND}\` on ${TARGETS} systems (one loopback sshd, ${p.label}): POST → its final status pushed over Socket.IO`,
        isHeadline ? { kind: 'atMost', ratio: 0.25 } : { kind: 'info' },
        `${p.label}: ${shared(p)}${problemsOf(p, 'opsledger')}${problemsOf(p, 'pssh')}${problemsOf(p, 'ansible')}${problemsOf(p, 'opsledger50')}. ` +
        (isHeadline ? `${why}. ` : '') +
        `All ${TARGETS} systems are 127.0.0.1 on sshd's one port, one user and key: parallel-ssh and ansible treat them as ${TARGETS} hosts, ` +
        `while Opsledger's pool shares connections per host+user+credentials by design (channels over a few connections, ` +
        `at most MAX_SESSIONS_PER_HOST at a time) — against ${TARGETS} real hosts it would do ${TARGETS} handshakes. ` +
        `App: child process, embedded PGlite, JOB_MAX_CONCURRENCY and MAX_SESSIONS_PER_HOST at their defaults (10, 4); ` +
        `the end is the Socket.IO push of the job's final status (no polling); an execution counts when completed with stdout = the user name. ` +
        `${cold(p)} (Opsledger's pool too: its idle connections close after 5 s); warm-up round not counted`),
      row('ansible', `ansible -f ${TARGETS} -m command -a ${COMMAND} (in the Opsledger column), ${p.short}`, { kind: 'info' },
        isHeadline
          ? `ansible: pipelining on and interpreter_python fixed (the harness's sshd has no sftp subsystem, so the default file copy would fail over to scp per host), ` +
            `default ControlMaster=auto/ControlPersist (the ${TARGETS} inventory hosts share one ControlPath, so some ride one master), fresh HOME each round, ` +
            `masters closed after the timed run; its time includes its own start-up (a one-host "ansible -c local -m ping" takes ≈0.6 s here)`
          : undefined),
      row('opsledger50', `the job again with JOB_MAX_CONCURRENCY=50 MAX_SESSIONS_PER_HOST=10, ${p.short}`, { kind: 'info' }),
    ];
  };
  return headline === strict ? [...rowsOf(strict), ...rowsOf(generous)] : [...rowsOf(generous), ...rowsOf(strict)];
};
