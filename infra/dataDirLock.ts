// One Opsledger process per DATA_DIR: two embedded PostgreSQL instances on the same files
// would corrupt them, so the second process must stop with a message that says why.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from './errors.ts';

export const LOCK_FILE = 'opsledger.lock';

export interface DataDirLock {
  release(): Promise<void>;
}

// Locks this process holds: a second acquire here must fail, while a lock file naming our pid
// that we do not hold was left by an earlier process that had the same pid (containers restart
// as pid 1), so it is stale.
const held = new Set<string>();

type Owner = { state: 'alive'; pid: number } | { state: 'stale'; content: string } | { state: 'gone' };

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else — still alive.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

const parsePid = (content: string): number | null => {
  const trimmed = content.trim();
  return /^\d+$/.test(trimmed) && Number(trimmed) > 0 ? Number(trimmed) : null;
};

const readOwner = async (lockPath: string): Promise<Owner> => {
  // A lock created with O_EXCL is empty for an instant before its pid is written; give a
  // young unreadable file a moment before calling it garbage.
  for (let attempt = 0; ; attempt++) {
    let content: string;
    try {
      content = await readFile(lockPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'gone' };
      throw err;
    }
    const pid = parsePid(content);
    if (pid !== null) return pid !== process.pid && isAlive(pid) ? { state: 'alive', pid } : { state: 'stale', content };
    const young = await stat(lockPath).then((s) => Date.now() - s.mtimeMs < 1000, () => false);
    if (!young || attempt >= 20) return { state: 'stale', content };
    await sleep(50);
  }
};

const lockedError = (dataDir: string, pid: number) =>
  new AppError('DATA_DIR_LOCKED',
    `DATA_DIR ${dataDir} is in use by another Opsledger process (pid ${pid}); stop it or choose another DATA_DIR`,
    { dataDir, pid });

const tryCreate = (lockPath: string): boolean => {
  let fd: number;
  try {
    fd = openSync(lockPath, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
};

/** Replace a stale lock: temp file + rename, so nobody ever sees a half-written lock. */
const takeOver = async (lockPath: string, staleContent: string): Promise<boolean> => {
  const temp = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, `${process.pid}\n`, { mode: 0o600 });
  try {
    // Re-read just before the rename: if another process already took it over, leave it alone.
    const now = await readFile(lockPath, 'utf8').catch(() => null);
    if (now !== null && now !== staleContent) return false;
    await rename(temp, lockPath);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  // Two processes racing on the same stale lock: the last rename wins, the other sees it here.
  return parsePid(await readFile(lockPath, 'utf8').catch(() => '')) === process.pid;
};

const holdsLock = (content: string | null) => content !== null && parsePid(content) === process.pid;

export const acquireDataDirLock = async (dataDir: string): Promise<DataDirLock> => {
  const dir = resolve(dataDir);
  const lockPath = join(dir, LOCK_FILE);
  // Claimed before the first await, so two acquires racing in this process cannot both win.
  if (held.has(lockPath)) throw lockedError(dir, process.pid);
  held.add(lockPath);
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (let attempt = 0; ; attempt++) {
      if (tryCreate(lockPath)) break;
      const owner = await readOwner(lockPath);
      if (owner.state === 'alive') throw lockedError(dir, owner.pid);
      if (owner.state === 'stale' && (await takeOver(lockPath, owner.content))) break;
      // Gone, or another process won the takeover: look again (it may now hold it legitimately).
      if (attempt >= 10) {
        const again = await readOwner(lockPath);
        throw again.state === 'alive' ? lockedError(dir, again.pid) : new AppError('DATA_DIR_LOCKED', `could not lock DATA_DIR ${dir}`);
      }
    }
  } catch (err) {
    held.delete(lockPath);
    throw err;
  }

  // A normal exit (even process.exit) runs 'exit' listeners, which must be synchronous.
  const onExit = () => {
    try {
      if (holdsLock(readFileSync(lockPath, 'utf8'))) unlinkSync(lockPath);
    } catch {
      // Already gone: nothing to clean up.
    }
  };
  process.on('exit', onExit);
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      process.off('exit', onExit);
      // Only remove the lock if it is still ours: never delete a successor's lock.
      if (holdsLock(await readFile(lockPath, 'utf8').catch(() => null))) await unlink(lockPath).catch(() => undefined);
      held.delete(lockPath); // last, so a re-acquire in this process cannot overlap the unlink
    },
  };
};
