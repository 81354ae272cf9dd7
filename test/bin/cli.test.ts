// End-to-end: the real CLI as a child process, judged only by what an operator sees —
// exit codes, stdout/stderr, HTTP answers and files in DATA_DIR.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { LOCK_FILE } from '../../infra/dataDirLock.ts';
import { openServerDatabase } from '../../infra/db/database.ts';
import { migrateToLatest } from '../../infra/db/migrate.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { freshDatabaseUrl } from '../support/databases.ts';
import { newEvents } from '../support/eventFactory.ts';
import { freePort } from '../support/postgresServer.ts';
import { waitFor } from '../support/waitFor.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VERSION: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
// Embedded PGlite initialises a fresh data directory in ~5 s; leave room for a slow machine.
const START_TIMEOUT_MS = 45_000;

// Every variable the configuration reads, so that nothing in the developer's shell leaks in.
const CONFIG_VARS = [
  'PORT', 'HOST', 'DATA_DIR', 'DATABASE_URL', 'EVENT_STORE', 'EVENTSTORE_URL', 'REDIS_URL', 'SECRET_KEY', 'SECRETS_KEY',
  'ADMIN_PASSWORD', 'ALLOW_REGISTRATION', 'JWT_EXPIRES_IN', 'POLL_INTERVAL_SECONDS', 'MIN_ONLINE_DEFAULT',
  'DEFAULT_RATE_LIMIT_PER_SECOND', 'DEFAULT_RATE_LIMIT_BURST', 'ADMIN_RATE_LIMIT_PER_SECOND', 'ADMIN_RATE_LIMIT_BURST',
  'JOB_MAX_CONCURRENCY', 'MAX_SESSIONS_PER_HOST', 'MAX_OUTPUT_BYTES', 'NGINX_BIN', 'NGINX_CONF', 'NGINX_SITES_DIR',
  'PROXY_LISTEN_ADDRESS', 'PROXY_HTTP_PORT', 'PROXY_HTTPS_PORT', 'HEALTH_CHECK_PATH', 'HEALTH_CHECK_TIMEOUT_MS',
  'ACME_DIRECTORY_URL', 'ACME_EMAIL', 'ACME_WEBROOT', 'ACME_CA_FILE', 'CERTS_DIR', 'RENEW_BEFORE_DAYS', 'REGISTRY_URL', 'LOG_LEVEL',
  'LOG_STREAM_MAX_S',
];

type Cli = {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Exit code (or signal name) once the process has exited and its streams are drained. */
  closed: Promise<number | string>;
  done: boolean;
};

type LogLine = { msg?: string; url?: string; [k: string]: unknown };

const logLines = (cli: Cli): LogLine[] =>
  cli.stdout().split('\n').filter((l) => l.startsWith('{')).flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return []; // a line still being written
    }
  });

const linesOf = (text: string): string[] => text.split('\n').filter((l) => l !== '');

describe('bin/cli.ts (end to end)', function () {
  this.timeout(60_000);

  let temps: string[] = [];
  let clis: Cli[] = [];

  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'opsledger-cli-'));
    temps.push(dir);
    return dir;
  };

  const envFor = async (overrides: Record<string, string> = {}): Promise<NodeJS.ProcessEnv> => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of CONFIG_VARS) delete env[name];
    return {
      ...env,
      DATA_DIR: join(tempDir(), 'data'),
      PORT: String(await freePort()),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      ...overrides,
    };
  };

  const run = (args: string[], env: NodeJS.ProcessEnv, input?: string): Cli => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bin/cli.ts', ...args], {
      cwd: ROOT,
      env,
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (input !== undefined) child.stdin!.end(input);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    const cli: Cli = {
      child,
      stdout: () => out,
      stderr: () => err,
      done: false,
      // 'close', not 'exit': only then is everything the child wrote in `out`/`err`.
      closed: new Promise((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (code, signal) => {
          cli.done = true;
          resolve(code ?? signal ?? 'unknown');
        });
      }),
    };
    clis.push(cli);
    return cli;
  };

  /** Runs a command to completion. */
  const runToEnd = async (args: string[], env: NodeJS.ProcessEnv, input?: string) => {
    const cli = run(args, env, input);
    const code = await cli.closed;
    return { code, stdout: cli.stdout(), stderr: cli.stderr() };
  };

  /** Waits for a log line with this message; fails at once (with the output) if the process exits first. */
  const waitForLog = async (cli: Cli, msg: string, timeoutMs = START_TIMEOUT_MS): Promise<LogLine> =>
    waitFor(() => {
      const line = logLines(cli).find((l) => l.msg === msg);
      if (line) return line;
      if (cli.done) throw new Error(`the CLI exited before logging "${msg}"\nstdout: ${cli.stdout()}\nstderr: ${cli.stderr()}`);
      return null;
    }, `log line "${msg}"`, timeoutMs);

  /** Starts `serve` and resolves with its base URL once it logs that it is listening. */
  const serve = async (env: NodeJS.ProcessEnv) => {
    const cli = run(['serve'], env);
    const listening = await waitForLog(cli, 'opsledger listening');
    expect(listening.url).to.equal(`http://127.0.0.1:${env.PORT}`);
    return { cli, url: listening.url! };
  };

  const getJson = async (url: string) => {
    const res = await fetch(url);
    return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as Record<string, any> };
  };

  const expectReady = async (url: string) => {
    const ready = await getJson(`${url}/health/ready`);
    expect(ready.status).to.equal(200);
    expect(ready.body.status).to.equal('ready');
    expect(ready.body.checks.database.status).to.equal('ok');
    expect(ready.body.checks.event_store.status).to.equal('ok');
  };

  type ProjectionDetail = { name: string; state: string; lag_events: number; last_error: string | null };

  /**
   * Waits until /health/detailed shows every projection running (it says 'starting' for a
   * moment after 'opsledger listening'), and returns them.
   */
  const projectionsRunning = async (url: string): Promise<ProjectionDetail[]> =>
    waitFor(async () => {
      const { status, body } = await getJson(`${url}/health/detailed`);
      const projections = body.projections as ProjectionDetail[];
      return status === 200 && projections.length > 0 && projections.every((p) => p.state === 'running') ? projections : null;
    }, 'all projections running', 15_000);

  /** SIGTERM, then the exit code once the process is gone. */
  const stop = async (cli: Cli) => {
    cli.child.kill('SIGTERM');
    return cli.closed;
  };

  const expectNoStack = (text: string) => expect(text).not.to.include('    at ');

  afterEach(async () => {
    const running = clis.filter((c) => !c.done);
    for (const c of running) c.child.kill('SIGKILL');
    await Promise.all(running.map((c) => c.closed));
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
    clis = [];
    temps = [];
  });

  describe('serve on embedded PostgreSQL (DATA_DIR)', () => {
    it('answers /health, /health/ready, /health/detailed and a problem+json 404, holding the DATA_DIR lock', async () => {
      const env = await envFor();
      const { cli, url } = await serve(env);

      const health = await getJson(`${url}/health`);
      expect(health.status).to.equal(200);
      expect(health.body).to.deep.equal({ status: 'ok', service: 'opsledger', version: VERSION });

      await expectReady(url);

      const projections = await projectionsRunning(url);
      expect(projections.find((p) => p.name === 'stream_catalog')).to.include({ state: 'running', lag_events: 0, last_error: null });
      const detailed = await getJson(`${url}/health/detailed`);
      expect(detailed.status).to.equal(200);
      expect(detailed.body).to.include({ status: 'ready', service: 'opsledger', version: VERSION });
      expect(detailed.body.checks).to.have.keys('database', 'event_store');

      const missing = await getJson(`${url}/no/such/thing`);
      expect(missing.status).to.equal(404);
      expect(missing.type).to.match(/^application\/problem\+json\b/);
      expect(missing.body).to.include({ status: 404, code: 'NOT_FOUND' });

      const lockPath = join(env.DATA_DIR!, LOCK_FILE);
      expect(readFileSync(lockPath, 'utf8').trim()).to.equal(String(cli.child.pid));
      expect(cli.done).to.equal(false);
    });

    it('refuses a second serve on the same DATA_DIR with one line, leaving the first running', async () => {
      const env = await envFor();
      const first = await serve(env);

      const second = await runToEnd(['serve'], { ...env, PORT: String(await freePort()) });
      expect(second.code).to.equal(1);
      expect(linesOf(second.stderr)).to.deep.equal([
        `opsledger: DATA_DIR ${env.DATA_DIR} is in use by another Opsledger process (pid ${first.cli.child.pid}); stop it or choose another DATA_DIR`,
      ]);
      expect(second.stderr).to.include('is in use by another Opsledger process');
      expectNoStack(second.stderr);
      expect(second.stdout).not.to.include('opsledger listening');

      // The loser must not have touched the winner's lock, and the winner keeps serving.
      expect(readFileSync(join(env.DATA_DIR!, LOCK_FILE), 'utf8').trim()).to.equal(String(first.cli.child.pid));
      expect((await getJson(`${first.url}/health`)).status).to.equal(200);
    });

    it('stops on SIGTERM with exit 0, logs "stopped", removes the lock, and the next serve reopens the data', async () => {
      const env = await envFor();
      const first = await serve(env);
      await projectionsRunning(first.url); // see the pending test at the end of this file
      expect(logLines(first.cli).some((l) => l.msg === 'database migrated'), 'a fresh DATA_DIR is migrated').to.equal(true);
      // The first start printed the generated admin password once, as plain text (not a log line), and it works.
      const printed = /created the first user "admin" \(global admin\) with the password\n\n {4}(\S+)\n/.exec(first.cli.stdout());
      expect(printed, first.cli.stdout()).to.not.equal(null);
      const password = printed![1]!;
      expect(logLines(first.cli).filter((l) => JSON.stringify(l).includes(password))).to.deep.equal([]);
      const login = await fetch(`${first.url}/api/v1/auth/login`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'admin', password }),
      });
      expect(login.status).to.equal(200);
      const lockPath = join(env.DATA_DIR!, LOCK_FILE);
      expect(existsSync(lockPath)).to.equal(true);

      expect(await stop(first.cli)).to.equal(0);
      const messages = logLines(first.cli).map((l) => l.msg);
      expect(messages).to.include('stopped');
      expect(messages.indexOf('stopped')).to.be.greaterThan(messages.indexOf('opsledger listening'));
      expect(existsSync(lockPath), 'lock file left behind').to.equal(false);
      expectNoStack(first.cli.stderr());

      const again = await serve(env);
      await expectReady(again.url);
      await projectionsRunning(again.url);
      // Same data, already migrated: nothing to migrate the second time, and no second admin.
      expect(logLines(again.cli).map((l) => l.msg)).not.to.include('database migrated');
      expect(again.cli.stdout()).not.to.include('created the first user');
      expect(readFileSync(lockPath, 'utf8').trim()).to.equal(String(again.cli.child.pid));
      expect(await stop(again.cli)).to.equal(0);
      expect(existsSync(lockPath)).to.equal(false);
    });
  });

  describe('configuration errors', () => {
    it('names every bad variable in one line on stderr and exits 1 without a stack', async () => {
      const env = await envFor({ PORT: 'abc', EVENT_STORE: 'mysql' });
      const { code, stdout, stderr } = await runToEnd(['serve'], env);
      expect(code).to.equal(1);
      expect(stdout).to.equal('');
      const lines = linesOf(stderr);
      expect(lines, stderr).to.have.length(1);
      expect(stderr.endsWith('\n')).to.equal(true);
      expect(lines[0]).to.match(/^opsledger: invalid configuration: /);
      expect(lines[0]).to.include('PORT').and.to.include('"abc"');
      expect(lines[0]).to.include('EVENT_STORE').and.to.include('"mysql"');
      expectNoStack(stderr);
      // Stopped before touching the data directory.
      expect(existsSync(env.DATA_DIR!)).to.equal(false);
    });
  });

  describe('serve and replay on a PostgreSQL server (DATABASE_URL)', () => {
    it('serves /health/ready without taking a DATA_DIR lock', async () => {
      const env = await envFor({ DATABASE_URL: await freshDatabaseUrl() });
      const { cli, url } = await serve(env);
      await expectReady(url);
      expect((await projectionsRunning(url)).map((p) => p.name)).to.include('stream_catalog');
      expect(logLines(cli).find((l) => l.msg === 'opsledger listening')).to.include({ data: 'server' });
      expect(existsSync(join(env.DATA_DIR!, LOCK_FILE))).to.equal(false);
      expect(await stop(cli)).to.equal(0);
      expect(logLines(cli).map((l) => l.msg)).to.include('stopped');
    });

    it('replay --projection stream_catalog rebuilds the read model with plain progress lines', async () => {
      const databaseUrl = await freshDatabaseUrl();
      const env = await envFor({ DATABASE_URL: databaseUrl });

      // A serve run first, stopped before the replay (replay refuses a projection that is being run).
      const { cli, url } = await serve(env);
      await projectionsRunning(url);
      expect(await stop(cli)).to.equal(0);

      const database = openServerDatabase({ url: databaseUrl, poolSize: 2 });
      try {
        await migrateToLatest(database); // already done by serve; must be a no-op
        const store = await createPostgresEventStore(database);
        // The first start wrote the default project and the admin (and its username reservation).
        const bootstrapStreams = await database.db.selectFrom('events').select('stream_id').distinct().orderBy('stream_id').execute();
        expect(bootstrapStreams.map((r) => r.stream_id.replace(/-[0-9a-f-]{36}$/, '-<id>'))).to.deep.equal(['project-default', 'user-<id>', 'username-admin']);
        const streams = { [`order-${randomUUID()}`]: 700, [`host-${randomUUID()}`]: 450, [`job-${randomUUID()}`]: 50 };
        for (const [stream, n] of Object.entries(streams)) await store.append(stream, newEvents(n, `${stream.split('-')[0]}Happened`));
        await store.close();
        const total = Object.values(streams).reduce((a, b) => a + b, 0) + bootstrapStreams.length;
        // Something a replay must repair: a row that the log does not justify.
        await database.db.insertInto('stream_catalog').values({
          stream_id: 'bogus-1', category: 'bogus', revision: '9', event_count: '10', last_type: 'Nope', first_at: new Date(), last_at: new Date(),
        }).execute();

        const replay = await runToEnd(['replay', '--projection', 'stream_catalog'], env);
        expect(replay.code, replay.stderr).to.equal(0);
        expect(replay.stdout).to.equal('');
        expect(replay.stderr).not.to.include('\x1b['); // not a TTY: no bar, no escape codes
        const lines = linesOf(replay.stderr);
        const progress = lines.slice(0, -1).map((l) => {
          const m = /^replay stream_catalog: (\d+)\/(\d+) events \((\d+)%\)$/.exec(l);
          expect(m, `unexpected stderr line: ${l}`).to.not.equal(null);
          return { done: Number(m![1]), total: Number(m![2]), pct: Number(m![3]) };
        });
        expect(progress.length).to.be.at.least(2);
        expect(progress[0]).to.deep.equal({ done: 0, total, pct: 0 });
        expect(progress.at(-1)).to.deep.equal({ done: total, total, pct: 100 });
        for (const [i, p] of progress.entries()) {
          expect(p.total).to.equal(total);
          expect(p.pct).to.equal(Math.floor((p.done / total) * 100));
          if (i > 0) expect(p.done).to.be.greaterThan(progress[i - 1]!.done);
        }
        expect(lines.at(-1)).to.match(new RegExp(`^replay stream_catalog: ${total} events in \\d+\\.\\d s$`));

        const rows = await database.db.selectFrom('stream_catalog')
          .select(['stream_id', 'category', 'revision', 'event_count', 'last_type'])
          .where('category', 'in', ['order', 'host', 'job', 'bogus']).orderBy('stream_id').execute();
        const expected = Object.entries(streams).map(([stream, n]) => ({
          stream_id: stream, category: stream.split('-')[0], revision: String(n - 1), event_count: String(n), last_type: `${stream.split('-')[0]}Happened`,
        })).sort((a, b) => a.stream_id.localeCompare(b.stream_id));
        expect(rows.map((r) => ({ ...r, revision: String(r.revision), event_count: String(r.event_count) }))).to.deep.equal(expected);
      } finally {
        await database.close();
      }
    });

    it('replay --projection nope exits 1 naming the known projections', async () => {
      const env = await envFor({ DATABASE_URL: await freshDatabaseUrl() });
      const { code, stdout, stderr } = await runToEnd(['replay', '--projection', 'nope'], env);
      expect(code).to.equal(1);
      expect(stdout).to.equal('');
      expect(linesOf(stderr)).to.deep.equal(['opsledger: unknown projection "nope"; known: stream_catalog, identity, projects, monitoring, jobs, proxies']);
    });
  });

  // A stop() that lands while a projector loop is still acquiring its advisory lock must
  // still end that loop (it once followed the log forever and shutdown hung for 20 s).
  it('stops with exit 0 on a SIGTERM sent the moment it logs "opsledger listening" (DATABASE_URL)', async () => {
    for (let i = 0; i < 3; i++) {
      const env = await envFor({ DATABASE_URL: await freshDatabaseUrl() });
      const { cli } = await serve(env);
      expect(await stop(cli)).to.equal(0);
    }
  });

  describe('create-admin (DATABASE_URL)', () => {
    it('creates a global admin from a password on stdin; serve then creates no other admin; a taken name exits 1', async () => {
      const env = await envFor({ DATABASE_URL: await freshDatabaseUrl() });
      const created = await runToEnd(['create-admin', '--username', 'ops', '--password-stdin'], env, 'a password from stdin\n');
      expect(created.code, created.stderr).to.equal(0);
      expect(created.stdout).to.match(/^created global admin "ops" \(id [0-9a-f-]{36}\)\n$/);
      expect(created.stdout + created.stderr).not.to.include('a password from stdin');

      const taken = await runToEnd(['create-admin', '--username', 'OPS', '--password-stdin'], env, 'another password\n');
      expect(taken.code).to.equal(1);
      // (Besides a warning log line: the keys come from DATA_DIR while DATABASE_URL is set.)
      expect(linesOf(taken.stderr).filter((l) => !l.startsWith('{'))).to.deep.equal(['opsledger: the username "OPS" is taken']);

      const generated = await runToEnd(['create-admin', '--username', 'ops2'], env);
      expect(generated.code, generated.stderr).to.equal(0);
      const password = /^password: (\S+)$/m.exec(generated.stdout)?.[1];
      expect(password, generated.stdout).to.match(/^[A-Za-z0-9_-]{24}$/);

      const { cli, url } = await serve(env);
      expect(cli.stdout()).not.to.include('created the first user');
      for (const [username, pw] of [['ops', 'a password from stdin'], ['ops2', password!]]) {
        const login = await fetch(`${url}/api/v1/auth/login`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: pw }),
        });
        expect(login.status, username).to.equal(200);
        const token = ((await login.json()) as { access_token: string }).access_token;
        const me = (await (await fetch(`${url}/api/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } })).json()) as { role: string };
        expect(me.role).to.equal('admin');
      }
      expect(await stop(cli)).to.equal(0);
    });

    it('refuses a missing or bad username and a short password, with one line each', async () => {
      const env = await envFor({ DATABASE_URL: await freshDatabaseUrl() });
      const [missing, bad, short] = await Promise.all([
        runToEnd(['create-admin'], env),
        runToEnd(['create-admin', '--username', 'bad name'], env),
        runToEnd(['create-admin', '--username', 'shorty', '--password-stdin'], env, 'short\n'),
      ]);
      expect(missing.code).to.equal(1);
      expect(missing.stderr).to.include('create-admin needs --username NAME');
      expect(bad.code).to.equal(1);
      expect(bad.stderr).to.match(/^opsledger: invalid username "bad name"/);
      expect(short.code).to.equal(1);
      expect(linesOf(short.stderr)).to.deep.equal(['opsledger: invalid password: password must be at least 8 characters']);
      for (const r of [missing, bad, short]) expectNoStack(r.stderr);
    });
  });

  describe('seed-nodes (DATABASE_URL)', () => {
    it('imports nodes.json from a file and from NODES_JSON (upsert by name), and refuses bad entries naming each, importing nothing', async () => {
      const env = await envFor({ DATABASE_URL: await freshDatabaseUrl(), ADMIN_PASSWORD: 'seed-admin-password' });
      const file = join(tempDir(), 'nodes.json');
      writeFileSync(file, JSON.stringify([{ name: 'orch-1', ip: '10.1.0.1', pubkey: 'ssh-ed25519 AAAA' }, { name: 'orch-2', ip: '10.1.0.2', pubkey: null }]));
      const first = await runToEnd(['seed-nodes', '--json', file], env);
      expect(first.code, first.stderr).to.equal(0);
      expect(first.stdout).to.equal('seed-nodes: 2 created, 0 updated, 0 unchanged (project default)\n');
      const again = await runToEnd(['seed-nodes', '--from-env'], { ...env, NODES_JSON: JSON.stringify([
        { name: 'ORCH-1', ip: '10.1.0.1', pubkey: 'ssh-ed25519 AAAA' }, { name: 'orch-2', ip: '10.1.0.22' }, { name: 'orch-3', ip: '10.1.0.3' },
      ]) });
      expect(again.stdout, again.stderr).to.equal('seed-nodes: 1 created, 1 updated, 1 unchanged (project default)\n');

      writeFileSync(file, JSON.stringify([{ name: 'orch-9', ip: '10.1.0.9' }, { name: 'orch-9', ip: '10.1.0.10' }, { name: 'orch-10', ip: 'not-an-ip' }]));
      const bad = await runToEnd(['seed-nodes', '--json', file], env);
      expect(bad.code).to.equal(1);
      expect(bad.stderr).to.include('2 of 3 entries are not valid; nothing was imported')
        .and.include('entry [1].name: duplicate name orch-9 (also at body[0])').and.include('entry [2].ip: must be an IPv4 or IPv6 address');
      expectNoStack(bad.stderr);
      const neither = await runToEnd(['seed-nodes'], env);
      expect(neither.code).to.equal(1);
      expect(neither.stderr).to.include('seed-nodes needs exactly one of --json FILE or --from-env');

      const { cli, url } = await serve(env);
      const login = await fetch(`${url}/api/v1/auth/login`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'admin', password: 'seed-admin-password' }),
      });
      const token = ((await login.json()) as { access_token: string }).access_token;
      const nodes = (await (await fetch(`${url}/api/v1/nodes`, { headers: { authorization: `Bearer ${token}` } })).json()) as { items: { name: string; address: string }[] };
      expect(nodes.items.map((n) => `${n.name}=${n.address}`).sort()).to.deep.equal(['orch-1=10.1.0.1', 'orch-2=10.1.0.22', 'orch-3=10.1.0.3']);
      expect(await stop(cli)).to.equal(0);
    });
  });

  describe('usage', () => {
    it('--help lists the commands and exits 0; --version prints the version; an unknown command points to --help', async () => {
      const env = await envFor();
      const [help, helpWord, version, unknown, badOption] = await Promise.all([
        runToEnd(['--help'], env),
        runToEnd(['help'], env),
        runToEnd(['--version'], env),
        runToEnd(['frobnicate'], env),
        runToEnd(['serve', '--frobnicate'], env),
      ]);

      expect(help.code).to.equal(0);
      expect(help.stderr).to.equal('');
      expect(help.stdout).to.include(`opsledger ${VERSION}`);
      expect(help.stdout).to.match(/^Usage: opsledger <command>/m);
      expect(help.stdout).to.match(/^\s+serve\s/m);
      expect(help.stdout).to.match(/^\s+replay\s/m);
      expect(help.stdout).to.match(/^\s+create-admin --username NAME \[--password-stdin\]/m);
      expect(help.stdout).to.include('stream_catalog');
      expect(helpWord).to.deep.equal(help);

      expect(version).to.deep.equal({ code: 0, stdout: `${VERSION}\n`, stderr: '' });

      expect(unknown.code).to.equal(1);
      expect(unknown.stdout).to.equal('');
      expect(unknown.stderr).to.equal('opsledger: unknown command "frobnicate"\nRun "opsledger --help" for usage.\n');

      expect(badOption.code).to.equal(1);
      expect(badOption.stderr).to.include('--frobnicate').and.to.include('Run "opsledger --help" for usage.');
      expectNoStack(badOption.stderr);
      // None of these touched the data directory.
      expect(existsSync(env.DATA_DIR!)).to.equal(false);
    });
  });
});
