// Opening one authenticated SSH connection, and sorting its failures into stable codes.
// Drops during the handshake (sshd's MaxStartups) are retried with jittered exponential
// backoff; everything else fails at once, since retrying cannot fix it.
import { Client, type AnyAuthMethod } from 'ssh2';
import { fingerprintOf, sameFingerprint } from './hostKey.ts';
import type { Gate } from './gate.ts';
import type { KeyCache } from './keyCache.ts';
import { SshDroppedError, SshError } from './sshError.ts';
import { describeTarget, type SshTarget } from './sshTypes.ts';

export type Connected = { client: Client; fingerprint: string };

export type SshLogger = { debug?(o: object, m?: string): void; warn(o: object, m?: string): void };

const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
const DROPPED = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

type Ssh2Error = Error & { code?: string | number; level?: string };

/** The methods to offer, in order; a bad key fails here, before any connection is made. */
const authMethods = (target: SshTarget, keys: KeyCache): AnyAuthMethod[] => {
  const { username, credentials } = target;
  if ('password' in credentials) {
    const { password } = credentials;
    return [
      { type: 'password', username, password },
      // Some hosts only take passwords through keyboard-interactive: answer its prompts with it.
      { type: 'keyboard-interactive', username, prompt: (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => password)) },
    ];
  }
  return [{ type: 'publickey', username, key: keys.get(credentials.privateKey, credentials.passphrase, describeTarget(target)) }];
};

const where = (t: SshTarget) => ({ host: t.host, port: t.port, username: t.username });

const classify = (target: SshTarget, err: Ssh2Error, seen: string | null, mismatch: boolean): SshError => {
  const who = describeTarget(target);
  if (mismatch) {
    return new SshError(
      'HOST_KEY_MISMATCH',
      `host key of ${target.host}:${target.port} does not match the pinned key: expected ${target.hostKeyFingerprint}, got ${seen}` +
        ' (the host was reinstalled, or someone is intercepting; clear the pin once verified)',
      { ...where(target), expected: target.hostKeyFingerprint, seen },
    );
  }
  if (err.level === 'client-authentication') {
    const what = 'password' in target.credentials ? 'password' : 'key';
    return new SshError('SSH_AUTH_FAILED', `authentication failed for ${who}: the server did not accept the ${what}`, where(target));
  }
  if (err.level === 'client-timeout') return timeoutError(target);
  const code = typeof err.code === 'string' ? err.code : undefined;
  if (code && UNREACHABLE.has(code)) {
    return new SshError('SSH_UNREACHABLE', `cannot reach ${target.host}:${target.port} (${code})`, { ...where(target), cause: code });
  }
  if ((code && DROPPED.has(code)) || /lost before handshake|kex_exchange_identification|connection closed/i.test(err.message)) {
    return new SshDroppedError(`${who} dropped the connection during the handshake (${code ?? err.message})`, where(target));
  }
  return new SshError('SSH_ERROR', `SSH connection to ${who} failed: ${err.message}`, where(target));
};

const timeoutError = (target: SshTarget) =>
  new SshError('SSH_CONNECT_TIMEOUT', `no SSH answer from ${target.host}:${target.port} in time`, where(target));

const closedError = () => new SshError('SSH_ERROR', 'the SSH pool is closed');

/**
 * One attempt: resolves with a connection that is authenticated and whose host key was
 * checked. `shutdown` abandons it (the pool is closing).
 */
export const connectOnce = (target: SshTarget, timeoutMs: number, keys: KeyCache, shutdown?: AbortSignal): Promise<Connected> =>
  new Promise((resolve, reject) => {
    if (shutdown?.aborted) {
      reject(closedError());
      return;
    }
    let authHandler: AnyAuthMethod[];
    try {
      authHandler = authMethods(target, keys);
    } catch (err) {
      reject(err);
      return;
    }
    const client = new Client();
    let seen: string | null = null;
    let mismatch = false;
    let settled = false;
    const onShutdown = () => fail(closedError());
    const fail = (err: SshError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      shutdown?.removeEventListener('abort', onShutdown);
      client.destroy();
      reject(err);
    };
    shutdown?.addEventListener('abort', onShutdown, { once: true });
    // Our own timer covers TCP connect, handshake and authentication as one budget.
    const timer = setTimeout(() => fail(timeoutError(target)), timeoutMs);
    // An 'error' listener stays for the connection's life: ssh2 emits errors after 'ready' too.
    client.on('error', (err: Ssh2Error) => fail(classify(target, err, seen, mismatch)));
    client.on('close', () => fail(classify(target, new Error('connection closed before login completed'), seen, mismatch)));
    client.on('ready', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      shutdown?.removeEventListener('abort', onShutdown);
      resolve({ client, fingerprint: seen ?? '' });
    });
    try {
      client.connect({
        host: target.host,
        port: target.port,
        username: target.username,
        authHandler,
        readyTimeout: 0, // our timer above
        keepaliveInterval: 15_000, // notice a dead peer (and keep NAT state) while channels run
        keepaliveCountMax: 3,
        // Rejecting here, during key exchange, means no credential is ever sent to a wrong host.
        hostVerifier: (key: Buffer) => {
          seen = fingerprintOf(key);
          const pin = target.hostKeyFingerprint;
          mismatch = pin !== null && !sameFingerprint(pin, seen);
          return !mismatch;
        },
      });
    } catch (err) {
      fail(new SshError('SSH_ERROR', `SSH connection to ${describeTarget(target)} failed: ${(err as Error).message}`, where(target)));
    }
  });

/** Resolves after `ms`, or at once when `signal` aborts. */
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });

/** Full jitter around an exponential step: 100, 200, 400 … ms, capped at 2 s. */
const backoffMs = (attempt: number) => Math.min(2000, 100 * 2 ** (attempt - 1)) * (0.5 + Math.random());

/**
 * Connects through `gate` (which bounds concurrent handshakes to one host, so we do not
 * trip its MaxStartups ourselves), retrying drops up to `maxAttempts` times.
 */
export const connectWithRetry = async (
  target: SshTarget,
  opts: { gate: Gate; keys: KeyCache; timeoutMs: number; maxAttempts: number; logger?: SshLogger; shutdown: AbortSignal },
): Promise<Connected> => {
  for (let attempt = 1; ; attempt++) {
    if (opts.shutdown.aborted) throw closedError();
    await opts.gate.acquire();
    try {
      return await connectOnce(target, opts.timeoutMs, opts.keys, opts.shutdown);
    } catch (err) {
      if (!(err instanceof SshDroppedError)) throw err;
      if (attempt >= opts.maxAttempts) {
        throw new SshError(
          'SSH_ERROR',
          `${describeTarget(target)} kept dropping the connection during the handshake (${attempt} attempts;` +
            ' is sshd limiting concurrent connections with MaxStartups?)',
          { host: target.host, port: target.port, username: target.username, attempts: attempt },
        );
      }
      opts.logger?.debug?.({ host: target.host, port: target.port, username: target.username, attempt, err: err.message }, 'ssh connection dropped, retrying');
    } finally {
      opts.gate.release();
    }
    await sleep(backoffMs(attempt), opts.shutdown);
  }
};
