// The SSH adapter against a real sshd from the harness (generous limits here; real-host
// defaults in sshPoolLimits.test.ts). Remote processes are checked on the host with pgrep.
import { randomUUID } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { expect } from 'chai';
import { createSshPool, type SshCredentials, type SshPool, type SshTarget } from '../../../infra/ssh/sshPool.ts';
import { expectCode } from '../../support/expectCode.ts';
import { freePort } from '../../support/postgresServer.ts';
import { startSshServer, type SshServer } from '../../support/sshServer.ts';
import { waitFor } from '../../support/waitFor.ts';

const targetFor = (server: SshServer, credentials?: SshCredentials, pin: string | null = null): SshTarget => ({
  host: server.host, port: server.port, username: server.username,
  credentials: credentials ?? { privateKey: server.privateKey }, hostKeyFingerprint: pin,
});

/** A name no other process has; the remote command runs with it as its process name. */
const uniqueMarker = () => `oplmark-${randomUUID().slice(0, 8)}`;
const sleeper = (marker: string) => `bash -c 'exec -a ${marker} sleep 300'`;
/** The [x] trick keeps pgrep's own shell (whose command line holds the pattern) out of the match. */
const isRunning = async (server: SshServer, marker: string) => (await server.run(`pgrep -f '[${marker[0]}]${marker.slice(1)}'`)).code === 0;

const recordingLogger = () => {
  const lines: object[] = [];
  return { lines, debug: (o: object, m?: string) => void lines.push({ o, m }), warn: (o: object, m?: string) => void lines.push({ o, m }) };
};

const run = async (pool: SshPool, target: SshTarget, command: string, timeoutMs = 10_000) => {
  let stdout = '';
  let stderr = '';
  const result = await pool.exec(target, command, {
    timeoutMs,
    onStdout: (c) => (stdout += c.toString('utf8')),
    onStderr: (c) => (stderr += c.toString('utf8')),
  });
  return { ...result, stdout, stderr };
};

describe('sshPool', () => {
  let server: SshServer;
  let pool: SshPool;
  const logger = recordingLogger();
  const markers: string[] = [];

  before(async () => {
    server = await startSshServer();
    pool = createSshPool({ maxSessionsPerHost: 8, logger });
  });

  after(async () => {
    await pool?.close();
    // Whatever a failed test left behind.
    for (const m of markers) await server?.run(`pkill -KILL -f '[${m[0]}]${m.slice(1)}'`);
    await server?.stop();
  });

  const marker = () => {
    const m = uniqueMarker();
    markers.push(m);
    return m;
  };

  describe('authentication', () => {
    it('logs in with a key and reports the host key fingerprint', async () => {
      const r = await run(pool, targetFor(server), 'whoami');
      expect(r).to.include({ exitCode: 0, exitSignal: null, reason: 'exit', hostKeyFingerprint: server.hostKeyFingerprint });
      expect(r.stdout).to.equal(`${server.username}\n`);
    });

    it('logs in with a passphrase-protected key', async () => {
      const r = await run(pool, targetFor(server, server.encryptedKey), 'whoami');
      expect(r.stdout).to.equal(`${server.username}\n`);
    });

    it('logs in with a password', async () => {
      const r = await run(pool, targetFor(server, { password: server.password }), 'whoami');
      expect(r.stdout).to.equal(`${server.username}\n`);
    });

    it('fails a wrong password with SSH_AUTH_FAILED, never echoing it', async () => {
      const password = `wrong-${randomUUID()}`;
      const err = await expectCode(pool.exec(targetFor(server, { password }), 'whoami', { timeoutMs: 5000 }), 'SSH_AUTH_FAILED');
      expect(err.message).to.contain(server.username).and.contain('password');
      expect(`${err.message} ${JSON.stringify(err.details)} ${JSON.stringify(logger.lines)}`).not.to.contain(password);
    });

    it('fails a passphrase-protected key without its passphrase with SSH_AUTH_FAILED', async () => {
      const err = await expectCode(
        pool.exec(targetFor(server, { privateKey: server.encryptedKey.privateKey, passphrase: 'not-it' }), 'whoami', { timeoutMs: 5000 }),
        'SSH_AUTH_FAILED',
      );
      expect(err.message).to.match(/passphrase/);
      expect(err.message).not.to.contain('not-it').and.not.to.contain('PRIVATE KEY');
    });

    it('fails a refused port with SSH_UNREACHABLE at once', async () => {
      const port = await freePort();
      const started = Date.now();
      const err = await expectCode(pool.exec({ ...targetFor(server), port }, 'whoami', { timeoutMs: 5000 }), 'SSH_UNREACHABLE');
      expect(Date.now() - started).to.be.below(2000);
      expect(err.message).to.contain(String(port));
    });

    describe('a host that accepts TCP but never speaks SSH', () => {
      const sockets: Socket[] = [];
      let silent: Server;
      let port: number;

      before(async () => {
        silent = createServer((s) => void sockets.push(s));
        await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
        ({ port } = silent.address() as { port: number });
      });

      after(async () => {
        for (const s of sockets) s.destroy();
        await new Promise((r) => silent.close(r));
      });

      it('fails with SSH_CONNECT_TIMEOUT', async () => {
        const quick = createSshPool({ maxSessionsPerHost: 2, connectTimeoutMs: 300 });
        try {
          await expectCode(quick.exec({ ...targetFor(server), port }, 'whoami', { timeoutMs: 5000 }), 'SSH_CONNECT_TIMEOUT');
        } finally {
          await quick.close();
        }
      });

      it('does not hold up close() while the handshake hangs', async () => {
        const slow = createSshPool({ maxSessionsPerHost: 2, connectTimeoutMs: 30_000 });
        const failed = expectCode(slow.exec({ ...targetFor(server), port }, 'whoami', { timeoutMs: 5000 }), 'SSH_ERROR');
        await waitFor(() => slow.stats().connections === 1, 'the handshake to start');
        const started = Date.now();
        await slow.close();
        expect((await failed).message).to.contain('closed');
        expect(Date.now() - started).to.be.below(1000);
      });
    });
  });

  describe('host keys', () => {
    it('accepts a pin that matches', async () => {
      const r = await run(pool, targetFor(server, undefined, server.hostKeyFingerprint), 'true');
      expect(r).to.include({ exitCode: 0, hostKeyFingerprint: server.hostKeyFingerprint });
    });

    it('refuses a pin that does not match with HOST_KEY_MISMATCH naming both keys', async () => {
      const wrong = 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
      const err = await expectCode(pool.exec(targetFor(server, undefined, wrong), 'true', { timeoutMs: 5000 }), 'HOST_KEY_MISMATCH');
      expect(err.message).to.contain(wrong).and.contain(server.hostKeyFingerprint);
    });

    it('refuses a target pinned to the old key once the host key changed', async () => {
      const own = await startSshServer();
      const fresh = createSshPool({ maxSessionsPerHost: 2 });
      try {
        const oldKey = own.hostKeyFingerprint;
        await fresh.exec(targetFor(own, undefined, oldKey), 'true', { timeoutMs: 5000 });
        const newKey = await own.rotateHostKey();
        expect(newKey).not.to.equal(oldKey);
        const err = await expectCode(fresh.exec(targetFor(own, undefined, oldKey), 'true', { timeoutMs: 5000 }), 'HOST_KEY_MISMATCH');
        expect(err.message).to.contain(oldKey).and.contain(newKey);
        const repinned = await fresh.exec(targetFor(own, undefined, newKey), 'true', { timeoutMs: 5000 });
        expect(repinned.hostKeyFingerprint).to.equal(newKey);
      } finally {
        await fresh.close();
        await own.stop();
      }
    });
  });

  describe('commands', () => {
    it('separates stdout and stderr and reports the exit code', async () => {
      const r = await run(pool, targetFor(server), 'echo out; echo err >&2; exit 3');
      expect(r).to.include({ stdout: 'out\n', stderr: 'err\n', exitCode: 3, reason: 'exit' });
    });

    it('delivers every byte of a multi-megabyte output as raw Buffers', async () => {
      const chunks: Buffer[] = [];
      const r = await pool.exec(targetFor(server), 'head -c 5000000 /dev/zero | base64', { timeoutMs: 30_000, onStdout: (c) => chunks.push(c) });
      expect(r.exitCode).to.equal(0);
      expect(chunks.length).to.be.above(10);
      expect(chunks.every((c) => Buffer.isBuffer(c))).to.equal(true);
      const expected = `${Buffer.alloc(5_000_000).toString('base64').match(/.{1,76}/g)!.join('\n')}\n`;
      const got = Buffer.concat(chunks).toString('latin1');
      expect(got.length).to.equal(expected.length);
      expect(got === expected).to.equal(true);
    });

    it('kills the remote process when the timeout passes', async () => {
      const m = marker();
      const pending = pool.exec(targetFor(server), sleeper(m), { timeoutMs: 1000 });
      await waitFor(() => isRunning(server, m), 'the remote sleeper to start');
      const r = await pending;
      expect(r).to.include({ reason: 'timeout', exitCode: null });
      expect(r.durationMs).to.be.at.least(950);
      await waitFor(async () => !(await isRunning(server, m)), 'the remote process to be gone', 5000);
    });

    it('kills the remote process when cancelled mid-run', async () => {
      const m = marker();
      const abort = new AbortController();
      let started = false;
      const pending = pool.exec(targetFor(server), sleeper(m), { timeoutMs: 60_000, signal: abort.signal, onStart: () => (started = true) });
      await waitFor(async () => started && (await isRunning(server, m)), 'the remote sleeper to start');
      abort.abort();
      const r = await pending;
      expect(r).to.include({ reason: 'cancelled', exitCode: null });
      expect(r.durationMs).to.be.below(30_000);
      await waitFor(async () => !(await isRunning(server, m)), 'the remote process to be gone', 5000);
    });

    it('does not start a command whose signal is already aborted', async () => {
      let started = false;
      const r = await pool.exec(targetFor(server), 'true', { timeoutMs: 5000, signal: AbortSignal.abort(), onStart: () => (started = true) });
      expect(r.reason).to.equal('cancelled');
      expect(started).to.equal(false);
    });

    it('cancels an execution still waiting in the queue without running it', async () => {
      const single = createSshPool({ maxSessionsPerHost: 1 });
      const m = marker();
      try {
        const blocker = new AbortController();
        const first = single.exec(targetFor(server), sleeper(m), { timeoutMs: 60_000, signal: blocker.signal });
        await waitFor(() => single.stats().sessions === 1, 'the first execution to hold the only slot');
        const queued = new AbortController();
        let started = false;
        const second = single.exec(targetFor(server), 'true', { timeoutMs: 5000, signal: queued.signal, onStart: () => (started = true) });
        await waitFor(() => single.stats().queued === 1, 'the second execution to queue');
        queued.abort();
        expect((await second).reason).to.equal('cancelled');
        expect(started).to.equal(false);
        blocker.abort();
        expect((await first).reason).to.equal('cancelled');
      } finally {
        await single.close();
      }
    });
  });

  describe('connections', () => {
    it('shares one connection among concurrent executions and closes it when idle', async () => {
      const shared = createSshPool({ maxSessionsPerHost: 8, idleMs: 200 });
      try {
        let connections = 0;
        let sessions = 0;
        const sample = () => {
          connections = Math.max(connections, shared.stats().connections);
          sessions = Math.max(sessions, shared.stats().sessions);
        };
        const results = await Promise.all(
          Array.from({ length: 30 }, () => shared.exec(targetFor(server), 'echo hi', { timeoutMs: 10_000, onStart: sample })),
        );
        expect(results.every((r) => r.exitCode === 0)).to.equal(true);
        expect(connections).to.equal(1);
        expect(sessions).to.be.at.most(8);
        await waitFor(() => shared.stats().connections === 0, 'the idle connection to close', 5000);
      } finally {
        await shared.close();
      }
    });

    it('fails the executions on a connection that dies with SSH_ERROR and drops it', async () => {
      const own = createSshPool({ maxSessionsPerHost: 2 });
      const m = marker();
      try {
        const pending = own.exec(targetFor(server), sleeper(m), { timeoutMs: 60_000 });
        await waitFor(() => isRunning(server, m), 'the remote sleeper to start');
        // Kill the sshd process serving this session: the TCP connection goes down with it.
        const pattern = `[${m[0]}]${m.slice(1)}`;
        await server.run(
          `p=$(pgrep -f '${pattern}' | head -1); while [ -n "$p" ] && [ "$p" != 1 ] && ! ps -o args= -p "$p" | grep -q '^sshd: '; do p=$(ps -o ppid= -p "$p" | tr -d ' '); done; kill -9 "$p"`,
        );
        const err = await expectCode(pending, 'SSH_ERROR');
        expect(err.message).to.match(/connection .* was lost/);
        await waitFor(() => own.stats().connections === 0, 'the dead connection to leave the pool');
        // The next execution opens a new connection.
        expect((await own.exec(targetFor(server), 'true', { timeoutMs: 5000 })).exitCode).to.equal(0);
      } finally {
        await own.close();
        await server.run(`pkill -KILL -f '[${m[0]}]${m.slice(1)}'`);
      }
    });

    it('close() kills running commands and fails their executions', async () => {
      const own = createSshPool({ maxSessionsPerHost: 2 });
      const m = marker();
      const pending = own.exec(targetFor(server), sleeper(m), { timeoutMs: 60_000 });
      await waitFor(() => isRunning(server, m), 'the remote sleeper to start');
      const failed = expectCode(pending, 'SSH_ERROR'); // listening before it rejects
      await own.close();
      const err = await failed;
      expect(err.message).to.contain('closed');
      await waitFor(async () => !(await isRunning(server, m)), 'the remote process to be gone', 5000);
      await expectCode(own.exec(targetFor(server), 'true', { timeoutMs: 1000 }), 'SSH_ERROR');
    });
  });

  describe('test()', () => {
    it('reports whoami, hostname, OS and the host key', async () => {
      const r = await pool.test(targetFor(server, { password: server.password }));
      expect(r.whoami).to.equal(server.username);
      expect(r.hostname).to.equal(hostname());
      expect(r.osInfo).to.match(/Linux/);
      expect(r.hostKeyFingerprint).to.equal(server.hostKeyFingerprint);
      expect(r.responseTimeMs).to.be.a('number').and.at.least(0);
    });

    it('fails like exec does (HOST_KEY_MISMATCH)', async () => {
      await expectCode(pool.test(targetFor(server, undefined, 'SHA256:nope')), 'HOST_KEY_MISMATCH');
    });
  });

  describe('logging', () => {
    it('never logged a secret in all of the above', () => {
      const text = JSON.stringify(logger.lines);
      expect(text).not.to.contain(server.password);
      expect(text).not.to.contain(server.encryptedKey.passphrase);
      expect(text).not.to.contain('PRIVATE KEY');
    });
  });
});
