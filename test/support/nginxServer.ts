// A throwaway nginx on 127.0.0.1 and two free ports, everything (pid, logs, temp paths,
// sites) in a temp directory (SERVICES.md). The master runs in the foreground as our
// child (`daemon off`), so its pid is known and its exit is seen; stop() asks it to quit
// gracefully, and a test process that exits early kills it synchronously.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './postgresServer.ts';
import { isRunning, sleepSync } from './processes.ts';

export type NginxServer = {
  /** The main configuration (give it to `nginx -c`). */
  confPath: string;
  /** The `-p` prefix: the temp directory everything lives in. */
  prefix: string;
  /** Included by the main configuration as SITES_DIR/*.conf; starts empty. */
  sitesDir: string;
  /** A directory under the prefix that nginx's workers can read (for ACME challenges). */
  acmeWebroot: string;
  errorLog: string;
  nginxBin: string;
  /** Free loopback ports for the sites under test to listen on. A catch-all default server answers 404 on httpPort; nothing listens on httpsPort until a TLS site does. */
  httpPort: number;
  httpsPort: number;
  /** `nginx -s reload` against this instance; throws with nginx's stderr on failure. */
  reload(): void;
  /**
   * Runs `change` (something that reloads nginx) and resolves once every worker that was
   * running before it has exited: `nginx -s reload` only signals the master, and until
   * the old workers process their QUIT they still accept connections with the old
   * configuration. Only for changes that do reload (it times out otherwise). After
   * several reloads in a row a worker of an intermediate one may still be about: wait on
   * the final state instead.
   */
  afterReload<T>(change: () => Promise<T>): Promise<T>;
  /** The master's current worker pids. */
  workerPids(): number[];
  /** Runs nginx with these arguments plus this instance's -c/-p (e.g. ['-t']). */
  run(args: string[]): { status: number; stderr: string };
  stop(): Promise<void>;
};

export const NGINX_BIN = '/usr/sbin/nginx';

/** Every descendant of `pid` (nginx's workers), read from /proc. */
const descendants = (pid: number): number[] => {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return out;
};


const killQuietly = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
};


/** True once something accepts TCP connections on the port. */
const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('connect', () => done(true));
    socket.on('error', () => done(false));
  });

export const startNginxServer = async (): Promise<NginxServer> => {
  if (!existsSync(NGINX_BIN)) throw new Error(`${NGINX_BIN} not found: apt-get install -y --no-install-recommends nginx`);
  const prefix = mkdtempSync(join(tmpdir(), 'opl-nginx-'));
  // Run as root, nginx's workers drop to `nobody`: they must be able to traverse the
  // prefix to read the ACME webroot (mkdtemp makes it 0700).
  chmodSync(prefix, 0o755);
  const sitesDir = join(prefix, 'sites');
  const acmeWebroot = join(prefix, 'acme');
  const logs = join(prefix, 'logs');
  const temp = join(prefix, 'temp');
  for (const dir of [sitesDir, acmeWebroot, logs, temp]) mkdirSync(dir, { recursive: true, mode: 0o755 });
  const [httpPort, httpsPort] = [await freePort(), await freePort()];
  const errorLog = join(logs, 'error.log');
  const pidFile = join(prefix, 'nginx.pid');
  const confPath = join(prefix, 'nginx.conf');
  const mimeTypes = '/etc/nginx/mime.types';
  writeFileSync(confPath, [
    '# Written by test/support/nginxServer.ts for one test run.',
    'worker_processes 1;',
    'daemon off;',
    `pid ${pidFile};`,
    `error_log ${errorLog} warn;`,
    'events { worker_connections 256; }',
    'http {',
    ...(existsSync(mimeTypes) ? [`  include ${mimeTypes};`] : []),
    '  default_type application/octet-stream;',
    `  access_log ${join(logs, 'access.log')};`,
    `  client_body_temp_path ${join(temp, 'body')};`,
    `  proxy_temp_path ${join(temp, 'proxy')};`,
    `  fastcgi_temp_path ${join(temp, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(temp, 'uwsgi')};`,
    `  scgi_temp_path ${join(temp, 'scgi')};`,
    // The default (64) is too small for long host names: nginx -t would refuse a valid one.
    '  server_names_hash_bucket_size 128;',
    '  server_names_hash_max_size 4096;',
    // A catch-all, as production needs too: a Host no site serves must not fall through
    // to whichever site nginx happened to read first (its implicit default server).
    `  server { listen 127.0.0.1:${httpPort} default_server; server_name _; access_log off; return 404; }`,
    `  include ${sitesDir}/*.conf;`,
    '}',
    '',
  ].join('\n'));

  // -e: where nginx logs before it has read error_log (and for -t/-s of this instance).
  const baseArgs = ['-p', prefix, '-c', confPath, '-e', errorLog];
  const run = (args: string[]) => {
    const res = spawnSync(NGINX_BIN, [...baseArgs, ...args], { encoding: 'utf8', timeout: 10_000 });
    if (res.error) return { status: -1, stderr: res.error.message };
    return { status: res.status ?? -1, stderr: res.stderr.trim() };
  };
  const logTail = () => {
    try {
      return readFileSync(errorLog, 'utf8').trim().split('\n').slice(-10).join('\n');
    } catch {
      return '(no log)';
    }
  };

  const tested = run(['-t']);
  if (tested.status !== 0) {
    rmSync(prefix, { recursive: true, force: true });
    throw new Error(`nginx -t on the test configuration failed: ${tested.stderr}\n${logTail()}`);
  }

  const master: ChildProcess = spawn(NGINX_BIN, baseArgs, { stdio: 'ignore' });
  let exited: string | null = null;
  master.on('exit', (code, signal) => (exited = `exit ${code ?? signal}`));
  master.on('error', (err) => (exited = err.message));

  let stopped = false;
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    process.off('exit', stopSync);
    const pid = master.pid;
    if (pid && isRunning(pid)) {
      const workers = descendants(pid);
      killQuietly(pid, 'SIGTERM'); // fast shutdown
      const deadline = Date.now() + 3000;
      while (isRunning(pid) && Date.now() < deadline) sleepSync(10);
      killQuietly(pid, 'SIGKILL');
      for (const w of workers) killQuietly(w, 'SIGKILL');
    }
    rmSync(prefix, { recursive: true, force: true });
  };
  process.on('exit', stopSync);

  // Started when the pid file names our child, it has a worker, and the catch-all answers.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
    if (pid === master.pid && descendants(pid).length > 0 && (await accepts(httpPort))) break;
    if (exited !== null || Date.now() > deadline) {
      const why = `${exited ?? 'no worker within 10 s'}: ${logTail()}`;
      stopSync();
      throw new Error(`nginx did not start (${why})`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  return {
    confPath,
    prefix,
    sitesDir,
    acmeWebroot,
    errorLog,
    nginxBin: NGINX_BIN,
    httpPort,
    httpsPort,
    run,
    workerPids: () => (master.pid ? descendants(master.pid) : []),
    async afterReload<T>(change: () => Promise<T>): Promise<T> {
      const old = master.pid ? descendants(master.pid) : [];
      const result = await change();
      const until = Date.now() + 10_000;
      while (old.some(isRunning)) {
        if (Date.now() > until) throw new Error(`old nginx workers ${old.filter(isRunning).join(', ')} still running 10 s after the reload`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return result;
    },
    reload() {
      const res = run(['-s', 'reload']);
      if (res.status !== 0) throw new Error(`nginx -s reload failed: ${res.stderr}`);
    },
    async stop() {
      if (stopped) return;
      if (exited === null) {
        run(['-s', 'quit']);
        const exitDeadline = Date.now() + 5000;
        while (exited === null && Date.now() < exitDeadline) await new Promise((r) => setTimeout(r, 20));
      }
      stopSync();
    },
  };
};
