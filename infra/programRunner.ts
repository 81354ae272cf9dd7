// Runs external programs (nginx) from a small helper process instead of from the service.
//
// Why: starting a program forks the calling process first, and the service's address space
// is large (embedded PGlite maps close to a gigabyte), so each start costs ~20 ms of page
// table copying — twice per proxy apply. The helper is forked once; its own forks are
// cheap (~2 ms). If the helper cannot be started or dies, programs run directly.
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type ProgramResult = { ok: boolean; stdout: string; stderr: string; error: string | null };

type Pending = { file: string; args: string[]; timeoutMs: number; resolve(r: ProgramResult): void };

/** A helper that keeps dying is given up on: programs then run directly. */
const MAX_HELPER_STARTS = 3;

const HELPER = fileURLToPath(new URL('./spawnHelper.ts', import.meta.url));

const direct = (file: string, args: string[], timeoutMs: number): Promise<ProgramResult> =>
  new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ ok: !err, stdout, stderr, error: err ? err.message : null }));
  });

export const createProgramRunner = () => {
  let helper: ChildProcess | null = null;
  let broken = false;
  let starts = 0;
  let nextId = 1;
  const pending = new Map<number, Pending>();

  /** What the helper had not answered when it died runs directly (a run is only ever answered once). */
  const rerunAll = () => {
    const left = [...pending.values()];
    pending.clear();
    for (const p of left) void direct(p.file, p.args, p.timeoutMs).then(p.resolve);
  };

  const start = (): ChildProcess | null => {
    if (helper || broken) return helper;
    if (++starts > MAX_HELPER_STARTS) {
      broken = true;
      return null;
    }
    try {
      // The same loader flags as this process (tsx), no inspector port clashes.
      const child = fork(HELPER, [], { execArgv: process.execArgv.filter((a) => !a.startsWith('--inspect')), stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
      child.on('message', (m: { id: number; failed: boolean; message: string | null; stdout: string; stderr: string }) => {
        const p = pending.get(m.id);
        pending.delete(m.id);
        p?.resolve({ ok: !m.failed, stdout: m.stdout, stderr: m.stderr, error: m.message });
      });
      child.on('exit', () => {
        if (helper === child) helper = null;
        rerunAll();
      });
      child.on('error', () => {
        broken = true;
        helper = null;
      });
      // It must not keep the service alive on its own.
      child.unref();
      (child as unknown as { channel?: { unref(): void } }).channel?.unref();
      helper = child;
      return child;
    } catch {
      broken = true;
      return null;
    }
  };

  return {
    run(file: string, args: string[], timeoutMs = 15_000): Promise<ProgramResult> {
      const child = start();
      if (!child?.connected) return direct(file, args, timeoutMs);
      const id = nextId++;
      return new Promise((resolve) => {
        pending.set(id, { file, args, timeoutMs, resolve });
        child.send({ id, file, args, timeoutMs }, (err) => {
          if (!err) return;
          pending.delete(id);
          void direct(file, args, timeoutMs).then(resolve);
        });
      });
    },
  };
};

/** The process's one runner. */
export const programRunner = createProgramRunner();
