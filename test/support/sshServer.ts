// A throwaway OpenSSH server on 127.0.0.1 and a random free port, in a temp directory
// (SERVICES.md). The "remote" host is this machine: one local test user, made once and
// reused, logs in with a password or one of two keys authorized in the temp directory.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './postgresServer.ts';

export type SshServer = {
  host: '127.0.0.1';
  port: number;
  /** A real local user (made once with useradd -m, password set with chpasswd). */
  username: string;
  password: string;
  /** OpenSSH-format ed25519 private key authorized for the user (unencrypted). */
  privateKey: string;
  /** A second authorized key, passphrase-protected. */
  encryptedKey: { privateKey: string; passphrase: string };
  /** 'SHA256:…' as ssh-keygen -l prints it. */
  hostKeyFingerprint: string;
  /** Restarts sshd on the same port with a NEW host key; returns the new fingerprint. */
  rotateHostKey(): Promise<string>;
  /** Runs a local shell command (the "remote" host is this machine), e.g. pgrep -f MARKER. */
  run(command: string): Promise<{ code: number; stdout: string }>;
  stop(): Promise<void>;
};

export type SshServerOptions = {
  /** true: sshd's own MaxStartups/MaxSessions defaults (10:30:100, 10), as on real hosts. */
  defaults?: boolean;
  maxSessions?: number;
  maxStartups?: string;
};

const SSHD = '/usr/sbin/sshd';
const USERNAME = 'opltest';
// Fixed, so concurrent test processes sharing the user never invalidate each other's
// password; the user is only reachable through these loopback-only servers.
const PASSWORD = 'opl-test-password-7f3a';

const sh = (file: string, args: string[], input?: string): string => {
  const res = spawnSync(file, args, { encoding: 'utf8', input });
  if (res.error) throw new Error(`${file} could not run: ${res.error.message}`);
  if (res.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${(res.stderr || res.stdout).trim()}`);
  return res.stdout;
};

let userReady = false;
const ensureUser = (): void => {
  if (userReady) return;
  if (spawnSync('id', ['-u', USERNAME]).status !== 0) {
    const made = spawnSync('useradd', ['-m', '-s', '/bin/bash', USERNAME], { encoding: 'utf8' });
    // Another test process may have made it in the meantime (exit 9: user exists).
    if (made.status !== 0 && made.status !== 9) throw new Error(`useradd ${USERNAME} failed: ${made.stderr.trim()}`);
  }
  sh('chpasswd', [], `${USERNAME}:${PASSWORD}\n`);
  userReady = true;
};

/** Makes an ed25519 key pair at `path`(.pub); returns its fingerprint. */
const keygen = (path: string, passphrase = ''): string => {
  rmSync(path, { force: true });
  rmSync(`${path}.pub`, { force: true });
  sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'opsledger-test', '-f', path]);
  return fingerprintOf(`${path}.pub`);
};

const fingerprintOf = (pubPath: string): string => {
  const fp = sh('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubPath]).split(' ')[1];
  if (!fp?.startsWith('SHA256:')) throw new Error(`unexpected ssh-keygen -l output for ${pubPath}`);
  return fp;
};

/** True once the port answers with an SSH banner (sshd is listening and serving). */
const answersBanner = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('data', (chunk: Buffer) => done(chunk.toString('latin1').startsWith('SSH-')));
    socket.on('error', () => done(false));
  });

/** Every descendant of `pid` (read from /proc), children before grandchildren. */
const descendants = (pid: number): number[] => {
  const parentOf = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parentOf.set(ppid, [...(parentOf.get(ppid) ?? []), Number(entry)]);
    } catch {
      // The process ended while we looked.
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const child of parentOf.get(p) ?? []) {
      out.push(child);
      walk(child);
    }
  };
  walk(pid);
  return out;
};

const killQuietly = (pid: number) => {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
};

/** Every server still running, stopped synchronously if the test process exits early. */
const running = new Set<() => void>();
process.on('exit', () => {
  for (const stop of running) stop();
});

export const startSshServer = async (opts: SshServerOptions = {}): Promise<SshServer> => {
  ensureUser();
  mkdirSync('/run/sshd', { recursive: true }); // sshd's privilege-separation directory
  const dir = mkdtempSync(join(tmpdir(), 'opl-sshd-'));
  // sshd reads AuthorizedKeysFile as the test user, so the directory must be traversable.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const hostKeyPath = join(dir, 'host_ed25519');
  const keyPath = join(dir, 'client_ed25519');
  const encKeyPath = join(dir, 'client_enc_ed25519');
  const passphrase = randomBytes(12).toString('hex');
  let hostKeyFingerprint = keygen(hostKeyPath);
  keygen(keyPath);
  keygen(encKeyPath, passphrase);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(`${keyPath}.pub`, 'utf8') + readFileSync(`${encKeyPath}.pub`, 'utf8'), { mode: 0o644 });

  const config = join(dir, 'sshd_config');
  const log = join(dir, 'sshd.log');
  // Generous limits unless the test wants a real host's defaults (or its own values).
  const maxSessions = opts.maxSessions ?? (opts.defaults ? undefined : 200);
  const maxStartups = opts.maxStartups ?? (opts.defaults ? undefined : '200:30:400');
  writeFileSync(config, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKeyPath}`, `PidFile ${join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${authorized}`, 'StrictModes no', 'UsePAM no', 'PasswordAuthentication yes',
    'KbdInteractiveAuthentication no', 'PubkeyAuthentication yes', 'PermitRootLogin no', `AllowUsers ${USERNAME}`,
    'UseDNS no', 'PrintMotd no', 'PrintLastLog no',
    ...(maxSessions === undefined ? [] : [`MaxSessions ${maxSessions}`]),
    ...(maxStartups === undefined ? [] : [`MaxStartups ${maxStartups}`]),
    '',
  ].join('\n'));

  let daemon: ChildProcess | null = null;
  const logTail = () => {
    try {
      return readFileSync(log, 'utf8').trim().split('\n').slice(-10).join('\n');
    } catch {
      return '(no log)';
    }
  };

  /** Kills the listener and every session it forked (a host "reboot" as clients see it). */
  const killDaemon = (): ChildProcess | null => {
    const d = daemon;
    daemon = null;
    if (!d?.pid || d.exitCode !== null || d.signalCode !== null) return null;
    const pid = d.pid;
    const tree = descendants(pid);
    killQuietly(pid);
    for (const child of tree) killQuietly(child);
    return d;
  };

  const launch = async (): Promise<void> => {
    // -D: stay in the foreground as our child, so its pid is known and its exit is seen.
    const child = spawn(SSHD, ['-D', '-f', config, '-E', log], { stdio: 'ignore' });
    daemon = child;
    let exited: string | null = null;
    child.on('exit', (code, signal) => (exited = `exit ${code ?? signal}`));
    child.on('error', (err) => (exited = err.message));
    const deadline = Date.now() + 10_000;
    while (!(await answersBanner(port))) {
      if (exited !== null || Date.now() > deadline) {
        const why = exited ?? 'no banner within 10 s';
        killDaemon();
        throw new Error(`sshd on port ${port} did not start (${why}): ${logTail()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  let stopped = false;
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    running.delete(stopSync);
    killDaemon();
    rmSync(dir, { recursive: true, force: true });
  };
  running.add(stopSync);

  try {
    await launch();
  } catch (err) {
    stopSync();
    throw err;
  }

  const waitExit = (d: ChildProcess | null) =>
    !d || d.exitCode !== null || d.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => d.once('exit', () => resolve()));

  return {
    host: '127.0.0.1',
    port,
    username: USERNAME,
    password: PASSWORD,
    privateKey: readFileSync(keyPath, 'utf8'),
    encryptedKey: { privateKey: readFileSync(encKeyPath, 'utf8'), passphrase },
    get hostKeyFingerprint() {
      return hostKeyFingerprint;
    },
    async rotateHostKey() {
      await waitExit(killDaemon());
      hostKeyFingerprint = keygen(hostKeyPath);
      await launch();
      return hostKeyFingerprint;
    },
    run(command: string) {
      return new Promise((resolve, reject) => {
        const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'inherit'] });
        let stdout = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code: code ?? -1, stdout }));
      });
    },
    async stop() {
      const d = daemon;
      stopSync();
      await waitExit(d);
    },
  };
};
