// The job engine's SSH adapter: runs commands on hosts over pooled connections. It knows
// nothing of jobs. Real hosts keep sshd's defaults (MaxSessions 10 channels per
// connection, MaxStartups 10 unauthenticated connections), so the pool shares connections,
// bounds channels per host with a FIFO queue, learns the per-connection channel limit
// from refusals, and opens at most a few connections to a host at a time.
import { createHmac, randomBytes } from 'node:crypto';
import type { Client, ClientChannel } from 'ssh2';
import { createGate, type Gate } from './gate.ts';
import { HOST_INFO_COMMAND, parseHostInfo } from './hostInfo.ts';
import { createKeyCache } from './keyCache.ts';
import { runChannel, type ExecOptions, type ExecResult, type RunningChannel } from './runChannel.ts';
import { connectWithRetry, type SshLogger } from './sshConnect.ts';
import { SshError } from './sshError.ts';
import { describeTarget, type SshTarget } from './sshTypes.ts';

export type { SshCredentials, SshTarget } from './sshTypes.ts';
export type { ExecOptions, ExecResult } from './runChannel.ts';
export type { SshLogger } from './sshConnect.ts';
export { SshError, type SshErrorCode } from './sshError.ts';

export type TestResult = { responseTimeMs: number; whoami: string; hostname: string; osInfo: string; hostKeyFingerprint: string };

export type SshPoolOptions = {
  maxSessionsPerHost: number;
  /** TCP connect + handshake + authentication, per attempt. */
  connectTimeoutMs?: number;
  /** Close a connection after it has carried no channel for this long. */
  idleMs?: number;
  /** Attempts when the host drops the connection during the handshake (MaxStartups). */
  maxConnectAttempts?: number;
  logger?: SshLogger;
};

export type SshPool = {
  exec(target: SshTarget, command: string, opts: ExecOptions): Promise<ExecResult>;
  /** whoami, hostname and OS (PRETTY_NAME and uname -srm) of a POSIX host, over a fresh connection. */
  test(target: SshTarget, opts?: { timeoutMs?: number }): Promise<TestResult>;
  stats(): { connections: number; sessions: number; queued: number };
  /** Kills running commands, fails queued ones, and ends every connection. */
  close(): Promise<void>;
};

// Handshakes in flight per host: well under sshd's default MaxStartups (10), so the
// engine does not cause the drops it would then have to retry.
const CONNECTS_PER_HOST = 3;
// Refused channels are retried (never a reason to fail an execution), but a host that
// refuses sessions while holding none of ours is not limiting us: that ends in an error.
const MAX_REFUSALS = 20;
const TEST_OUTPUT_LIMIT = 64 * 1024;

type Conn = {
  readonly client: Client;
  readonly fingerprint: string;
  /** Which executions may share it: same host, port, user, credentials and pin. */
  readonly key: string;
  /** user@host:port, for messages. */
  readonly where: string;
  /** Channels being opened or open (what the session limit is checked against). */
  reserved: number;
  /** Channel open requests sent, refused, and channels that ran and ended: a refusal's
   * place in this sequence tells how many sessions the server held (see openExec). */
  requested: number;
  refused: number;
  finished: number;
  closed: boolean;
  lostError: SshError | null;
  readonly running: Set<RunningChannel>;
  idleTimer: NodeJS.Timeout | null;
  readonly done: Promise<void>;
};

type PendingConn = { readonly key: string; reserved: number; ready: Promise<Conn> };

type Host = {
  readonly name: string;
  readonly slots: Gate;
  readonly connects: Gate;
  readonly conns: Set<Conn>;
  readonly pending: Set<PendingConn>;
  /** Channels one connection takes (sshd MaxSessions), learned from refusals. */
  sessionLimit: number;
};

const closedError = () => new SshError('SSH_ERROR', 'the SSH pool is closed');
const isRefusal = (err: unknown) => err instanceof Error && 'reason' in err; // ssh2's CHANNEL_OPEN_FAILURE

/** The server refused a channel (sshd: "open failed" past MaxSessions) while holding `held` of ours. */
class ChannelRefused extends Error {
  constructor(readonly held: number) {
    super('channel open refused');
  }
}

export const createSshPool = (options: SshPoolOptions): SshPool => {
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const idleMs = options.idleMs ?? 5000;
  const maxConnectAttempts = options.maxConnectAttempts ?? 6;
  const { logger } = options;
  if (!(options.maxSessionsPerHost >= 1)) throw new RangeError('maxSessionsPerHost must be at least 1');

  const hosts = new Map<string, Host>();
  // Keys connections by a keyed hash of the credentials, so secrets are not kept as map keys
  // and the hash is useless outside this process.
  const keySecret = randomBytes(32);
  const keys = createKeyCache();
  /** Every connection not yet closed, pooled or retired, so close() can wait for them all. */
  const live = new Set<Conn>();
  let closed = false;
  // Abandons handshakes in flight, so close() does not wait out a silent host's timeout.
  const shutdown = new AbortController();
  let probes = 0;

  const hostOf = (t: SshTarget): Host => {
    const name = `${t.host}:${t.port}`;
    let host = hosts.get(name);
    if (!host) {
      host = {
        name,
        slots: createGate(options.maxSessionsPerHost),
        connects: createGate(CONNECTS_PER_HOST),
        conns: new Set(),
        pending: new Set(),
        sessionLimit: Infinity,
      };
      hosts.set(name, host);
    }
    return host;
  };

  const connectionKey = (t: SshTarget): string =>
    createHmac('sha256', keySecret).update(JSON.stringify([t.host, t.port, t.username, t.credentials, t.hostKeyFingerprint])).digest('base64');

  const reserve = (conn: Conn) => {
    conn.reserved++;
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.idleTimer = null;
  };

  const release = (conn: Conn) => {
    conn.reserved--;
    if (conn.reserved > 0 || conn.closed) return;
    conn.idleTimer = setTimeout(() => {
      if (conn.reserved === 0) retire(conn);
    }, idleMs);
    conn.idleTimer.unref();
  };

  /** Takes a connection out of the pool and ends it gracefully. */
  const retire = (conn: Conn) => {
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.idleTimer = null;
    conn.closed = true;
    for (const host of hosts.values()) host.conns.delete(conn);
    conn.client.end();
  };

  const adopt = (host: Host, target: SshTarget, key: string, client: Client, fingerprint: string, reserved: number): Conn => {
    let lastError = '';
    let onDone!: () => void;
    const conn: Conn = {
      client, fingerprint, key, where: describeTarget(target), reserved, requested: 0, refused: 0, finished: 0, closed: false, lostError: null,
      running: new Set(), idleTimer: null, done: new Promise<void>((r) => (onDone = r)),
    };
    client.on('error', (err: Error) => (lastError = err.message));
    client.on('close', () => {
      live.delete(conn);
      conn.lostError = new SshError('SSH_ERROR', `the SSH connection to ${conn.where} was lost${lastError ? `: ${lastError}` : ''}`);
      const wasRetired = conn.closed;
      retire(conn);
      if (conn.running.size > 0 && !wasRetired) {
        logger?.warn({ host: host.name, executions: conn.running.size, err: lastError || undefined }, 'ssh connection lost while commands were running');
      }
      for (const run of [...conn.running]) run.fail(conn.lostError);
      onDone();
    });
    host.conns.add(conn);
    live.add(conn);
    return conn;
  };

  const startConnect = (host: Host, target: SshTarget, key: string): PendingConn => {
    const pending: PendingConn = { key, reserved: 0, ready: Promise.resolve(null as unknown as Conn) };
    pending.ready = connectWithRetry(target, {
      gate: host.connects, keys, timeoutMs: connectTimeoutMs, maxAttempts: maxConnectAttempts, logger, shutdown: shutdown.signal,
    }).then(
      ({ client, fingerprint }) => {
        host.pending.delete(pending);
        const conn = adopt(host, target, key, client, fingerprint, pending.reserved);
        if (closed) {
          retire(conn);
          throw closedError();
        }
        return conn;
      },
      (err: unknown) => {
        host.pending.delete(pending);
        throw err;
      },
    );
    host.pending.add(pending);
    return pending;
  };

  /** A connection with room for one more channel, reserved for the caller; opens one if none. */
  const acquireConn = async (host: Host, target: SshTarget, key: string): Promise<Conn> => {
    if (closed) throw closedError();
    for (const conn of host.conns) {
      if (conn.key === key && !conn.closed && conn.reserved < host.sessionLimit) {
        reserve(conn);
        return conn;
      }
    }
    // Until the limit is known, everyone waits for the connection being opened rather
    // than opening their own: most hosts take all our channels on one.
    let pending = [...host.pending].find((p) => p.key === key && p.reserved < host.sessionLimit);
    pending ??= startConnect(host, target, key);
    pending.reserved++;
    return pending.ready;
  };

  /**
   * Opens an exec channel and hands it to `onOpen` synchronously, inside ssh2's callback:
   * the exit status may be in the same TCP read, and an 'exit' emitted before a listener
   * is attached is lost for good. The bookkeeping is synchronous for the same reason.
   */
  const openExec = <T>(host: Host, conn: Conn, command: string, onOpen: (channel: ClientChannel) => T): Promise<T> =>
    new Promise((resolve, reject) => {
      const seq = conn.requested++;
      try {
        conn.client.exec(command, (err, channel) => {
          if (!err) return resolve(onOpen(channel));
          if (isRefusal(err)) {
            // sshd answers opens in order, so every earlier request was answered before
            // this refusal: those not refused and not yet ended are the sessions it held.
            const held = seq - conn.refused - conn.finished;
            conn.refused++;
            // A low figure only means sessions still closing on the host; keep the highest.
            const limit = Math.max(1, held);
            host.sessionLimit = host.sessionLimit === Infinity ? limit : Math.max(host.sessionLimit, limit);
            reject(new ChannelRefused(held));
            return;
          }
          conn.finished++; // confirmed, then the exec request failed: it holds nothing now
          reject(err);
        });
      } catch (err) {
        reject(err); // 'Not connected': the socket went away under us
      }
    });

  /** Runs the command on some connection's channel, riding out MaxSessions refusals; null if cancelled first. */
  const startOnHost = async (host: Host, target: SshTarget, command: string, opts: ExecOptions) => {
    const key = connectionKey(target);
    for (let refusals = 0, emptyRefusals = 0; ; refusals++) {
      const conn = await acquireConn(host, target, key);
      if (opts.signal?.aborted) {
        release(conn);
        return null;
      }
      try {
        // Wrapped so the run's promise is not flattened into the open's.
        return await openExec(host, conn, command, (channel) => ({ result: run(conn, channel, target, opts) }));
      } catch (err) {
        release(conn);
        if (conn.closed) throw conn.lostError ?? new SshError('SSH_ERROR', `the SSH connection to ${conn.where} closed`);
        if (!(err instanceof ChannelRefused)) {
          throw new SshError('SSH_ERROR', `could not start the command on ${describeTarget(target)}: ${(err as Error).message}`);
        }
        // Refused while holding sessions: the limit at work, wait our turn however long.
        // Refused while (as far as we know) holding none: that is what must not go on forever.
        if (err.held <= 0 && ++emptyRefusals > MAX_REFUSALS) {
          throw new SshError('SSH_ERROR', `${describeTarget(target)} refuses new sessions even with none of ours open (${emptyRefusals} times)`);
        }
        logger?.debug?.({ host: host.name, sessionLimit: host.sessionLimit, held: err.held }, 'ssh channel refused, retrying');
        // The first refusal just teaches the limit; more mean sessions are still closing on the host.
        if (refusals > 0) await new Promise((r) => setTimeout(r, Math.min(1000, 10 * 2 ** refusals) * (0.5 + Math.random())));
      }
    }
  };

  const run = (conn: Conn, channel: ClientChannel, target: SshTarget, opts: ExecOptions): Promise<ExecResult> =>
    runChannel(channel, opts, {
      fingerprint: conn.fingerprint,
      where: describeTarget(target),
      track: (r) => conn.running.add(r),
      ended: (r) => {
        conn.running.delete(r);
        conn.finished++;
        release(conn);
      },
      lost: () => conn.lostError,
    });

  /** The result of an execution cancelled before its command started. */
  const notStarted = (target: SshTarget): ExecResult => ({
    exitCode: null, exitSignal: null, reason: 'cancelled', durationMs: 0, hostKeyFingerprint: target.hostKeyFingerprint ?? '',
  });

  return {
    async exec(target, command, opts) {
      if (closed) throw closedError();
      const host = hostOf(target);
      if (!(await host.slots.acquire(opts.signal))) return notStarted(target);
      try {
        const started = await startOnHost(host, target, command, opts);
        return started ? await started.result : notStarted(target);
      } finally {
        host.slots.release();
      }
    },

    async test(target, { timeoutMs = 15_000 } = {}) {
      if (closed) throw closedError();
      const host = hostOf(target);
      await host.slots.acquire();
      const startedAt = performance.now();
      let conn: Conn | null = null;
      try {
        // A fresh connection, not a pooled one: the point is to prove the host answers now.
        const { client, fingerprint } = await connectWithRetry(target, {
          gate: host.connects, keys, timeoutMs: connectTimeoutMs, maxAttempts: maxConnectAttempts, logger, shutdown: shutdown.signal,
        });
        conn = adopt(host, target, `probe:${++probes}`, client, fingerprint, 1);
        if (closed) throw closedError();
        let out = '';
        const onStdout = (chunk: Buffer) => {
          if (out.length < TEST_OUTPUT_LIMIT) out += chunk.toString('utf8');
        };
        const probe = conn;
        const started = await openExec(host, probe, HOST_INFO_COMMAND, (channel) => ({ result: run(probe, channel, target, { timeoutMs, onStdout }) }));
        const result = await started.result;
        const info = result.reason === 'exit' && result.exitCode === 0 ? parseHostInfo(out) : null;
        if (!info) {
          const how = result.reason === 'timeout' ? `did not finish within ${timeoutMs} ms` : `failed (exit ${result.exitCode ?? result.exitSignal})`;
          throw new SshError('SSH_ERROR', `the host information command on ${describeTarget(target)} ${how}`);
        }
        return { responseTimeMs: Math.round(performance.now() - startedAt), ...info, hostKeyFingerprint: fingerprint };
      } catch (err) {
        if (err instanceof SshError) throw err;
        throw new SshError('SSH_ERROR', `testing ${describeTarget(target)} failed: ${(err as Error).message}`);
      } finally {
        if (conn && !conn.closed) retire(conn);
        host.slots.release();
      }
    },

    stats() {
      let connections = 0;
      let sessions = 0;
      let queued = 0;
      for (const host of hosts.values()) {
        connections += host.conns.size + host.pending.size;
        sessions += host.slots.inUse;
        queued += host.slots.waiting;
      }
      return { connections, sessions, queued };
    },

    async close() {
      if (closed) return;
      closed = true;
      shutdown.abort();
      keys.clear();
      const pending: Promise<unknown>[] = [];
      for (const host of hosts.values()) {
        host.slots.rejectWaiting(closedError());
        host.connects.rejectWaiting(closedError());
        for (const p of host.pending) pending.push(p.ready.catch(() => undefined));
      }
      for (const conn of live) {
        // Ending the connection alone would leave the remote commands running.
        for (const r of [...conn.running]) {
          r.kill();
          r.fail(closedError());
        }
        retire(conn);
      }
      // Connections still handshaking are retired as soon as they are ready (startConnect).
      await Promise.all(pending);
      const conns = [...live];
      const ended = Promise.all(conns.map((c) => c.done));
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((r) => (timer = setTimeout(r, 2000)));
      await Promise.race([ended, deadline]);
      clearTimeout(timer);
      for (const c of conns) c.client.destroy(); // a host that ignores our disconnect
    },
  };
};
