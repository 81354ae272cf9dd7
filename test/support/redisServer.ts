// A throwaway Redis on 127.0.0.1 and a random free port, in a temp directory, nothing
// persisted (SERVICES.md). Stopped with SHUTDOWN NOSAVE, or by its pid if that fails.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './postgresServer.ts';
import { isRunning, sleepSync } from './processes.ts';

export type RedisServer = { url: string; port: number; dir: string; stop(): void };

const INSTALL_HINT = 'install it with: apt-get install -y --no-install-recommends redis-server (which brings redis-cli, from redis-tools)';

const requireProgram = (name: string): void => {
  const res = spawnSync(name, ['--version'], { encoding: 'utf8' });
  if (res.error) throw new Error(`${name} not found on PATH (${(res.error as NodeJS.ErrnoException).code}): ${INSTALL_HINT}`);
};

/** True when a RESP PING on the port answers +PONG. */
const ping = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let data = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
      if (data.includes('\r\n')) done(data.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
  });



/** `port` lets a test start a server where a client is already trying to connect. */
export const startRedisServer = async (opts: { port?: number } = {}): Promise<RedisServer> => {
  requireProgram('redis-server');
  requireProgram('redis-cli');
  const dir = mkdtempSync(join(tmpdir(), 'opl-redis-'));
  const port = opts.port ?? (await freePort());
  const pidFile = join(dir, 'redis.pid');
  const logFile = join(dir, 'redis.log');
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'yes', '--dir', dir,
    '--pidfile', pidFile, '--logfile', logFile, '--save', '', '--appendonly', 'no',
  ];

  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    process.off('exit', stop);
    try {
      spawnSync('redis-cli', ['-p', String(port), 'shutdown', 'nosave'], { encoding: 'utf8', timeout: 5000 });
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : NaN;
      if (Number.isInteger(pid) && pid > 0) {
        const deadline = Date.now() + 3000;
        while (isRunning(pid) && Date.now() < deadline) sleepSync(10);
        if (isRunning(pid)) process.kill(pid, 'SIGKILL');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  process.on('exit', stop);

  const started = spawnSync('redis-server', args, { encoding: 'utf8' });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-10).join('\n') : '(no log)');
  if (started.status !== 0) {
    const why = `${started.stderr || started.stdout}\n${log()}`;
    stop();
    throw new Error(`redis-server failed to start on port ${port}: ${why}`);
  }
  const deadline = Date.now() + 10_000;
  while (!(await ping(port))) {
    if (Date.now() > deadline) {
      const why = log();
      stop();
      throw new Error(`redis-server on port ${port} did not answer PING within 10 s: ${why}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { url: `redis://127.0.0.1:${port}`, port, dir, stop };
};
