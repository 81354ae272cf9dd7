// One command on one open exec channel: streams output as it arrives, enforces the
// timeout, honours cancellation, and reports how it ended. Closing a channel does not
// stop the remote process (SERVICES.md), so timeout and cancel send KILL first.
import type { ClientChannel } from 'ssh2';
import { SshError } from './sshError.ts';

export type ExecOptions = {
  /** Counted from the channel opening; then the remote process is KILLed: reason 'timeout'. */
  timeoutMs: number;
  /** Cancel: the remote process is KILLed (channel.signal('KILL')), reason 'cancelled'. */
  signal?: AbortSignal;
  onStdout?(chunk: Buffer): void;
  onStderr?(chunk: Buffer): void;
  /** The command started on the host (channel open). */
  onStart?(): void;
};

export type ExecResult = {
  exitCode: number | null;
  /** As Node names signals ('SIGKILL'), when the process died of one. */
  exitSignal: string | null;
  reason: 'exit' | 'timeout' | 'cancelled';
  /** From the channel opening to its end (queueing and connecting not included). */
  durationMs: number;
  hostKeyFingerprint: string;
};

/** How the pool follows a running channel: it can fail it (connection lost) or abandon it (pool closing). */
export type RunningChannel = { fail(err: SshError): void; kill(): void };

// A host that no longer answers after KILL must not hold the execution forever.
const KILL_GRACE_MS = 5000;

export const runChannel = (
  channel: ClientChannel,
  opts: ExecOptions,
  ctx: {
    fingerprint: string;
    where: string;
    track(run: RunningChannel): void;
    /** Called synchronously as the run settles, so the pool's counts are right for the very next packet. */
    ended(run: RunningChannel): void;
    /** Set when the connection under the channel died. */
    lost(): SshError | null;
  },
): Promise<ExecResult> =>
  new Promise((resolve, reject) => {
    const startedAt = performance.now();
    let exit: { code: number | null; signal: string | null } | null = null;
    let reason: ExecResult['reason'] = 'exit';
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;

    const cleanup = () => {
      settled = true;
      clearTimeout(timer);
      clearTimeout(graceTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      ctx.ended(running);
    };
    const fail = (err: Error) => {
      if (settled) return;
      cleanup();
      reject(err);
    };
    const finish = () => {
      if (settled) return;
      if (!exit && reason === 'exit') {
        fail(ctx.lost() ?? new SshError('SSH_ERROR', `the channel to ${ctx.where} closed without an exit status`));
        return;
      }
      cleanup();
      resolve({
        exitCode: exit?.code ?? null,
        exitSignal: exit?.signal ?? null,
        reason,
        durationMs: Math.round(performance.now() - startedAt),
        hostKeyFingerprint: ctx.fingerprint,
      });
    };
    const sendKill = () => {
      // Without this the process outlives the channel; signal() is a no-op once the channel is closing.
      channel.signal('KILL');
      channel.close();
    };
    const kill = (why: 'timeout' | 'cancelled') => {
      if (settled || exit || reason !== 'exit') return;
      reason = why;
      sendKill();
      graceTimer = setTimeout(finish, KILL_GRACE_MS);
    };
    const onAbort = () => kill('cancelled');
    /** A throwing callback is the caller's bug; stop the command rather than crash the process. */
    const deliver = (cb: ((chunk: Buffer) => void) | undefined, chunk: Buffer) => {
      if (!cb || settled) return;
      try {
        cb(chunk);
      } catch (err) {
        sendKill();
        fail(err instanceof Error ? err : new Error(String(err)));
      }
    };

    const running: RunningChannel = { fail, kill: sendKill };
    ctx.track(running);
    // setTimeout fires at once past 2^31-1 ms (~24.8 days); no job should wait that long anyway.
    const timer = setTimeout(() => kill('timeout'), Math.min(opts.timeoutMs, 2 ** 31 - 1));
    // Listening from the start keeps both streams flowing: chunks go straight to the
    // callbacks and the SSH window is re-opened at once, so nothing piles up here.
    channel.on('data', (chunk: Buffer) => deliver(opts.onStdout, chunk));
    channel.stderr.on('data', (chunk: Buffer) => deliver(opts.onStderr, chunk));
    channel.on('exit', (code: number | null, signal?: string) => {
      exit = { code: typeof code === 'number' ? code : null, signal: signal ?? null };
    });
    // ssh2 emits 'close' after the stdout end, and stderr chunks are delivered as pushed.
    channel.on('close', finish);
    try {
      opts.onStart?.();
    } catch (err) {
      sendKill();
      fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (opts.signal?.aborted) kill('cancelled');
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
