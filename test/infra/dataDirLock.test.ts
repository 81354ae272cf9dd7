import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { AppError } from '../../infra/errors.ts';
import { acquireDataDirLock, LOCK_FILE } from '../../infra/dataDirLock.ts';

const MODULE_URL = pathToFileURL(join(import.meta.dirname, '../../infra/dataDirLock.ts')).href;

const expectLocked = async (dataDir: string, pid: number) => {
  try {
    await acquireDataDirLock(dataDir);
  } catch (err) {
    expect(err).to.be.instanceOf(AppError);
    expect((err as AppError).code).to.equal('DATA_DIR_LOCKED');
    expect((err as AppError).message).to.equal(
      `DATA_DIR ${dataDir} is in use by another Opsledger process (pid ${pid}); stop it or choose another DATA_DIR`);
    return;
  }
  throw new Error('the second acquire succeeded');
};

/** The pid of a process that has certainly exited. */
const deadPid = async (): Promise<number> => {
  const child = spawn(process.execPath, ['-e', '']);
  await once(child, 'exit');
  return child.pid!;
};

/** A separate node process that takes the lock (optionally exiting on its own), and says so on stdout. */
const lockInChild = async (dataDir: string, then: 'wait' | 'exit'): Promise<ChildProcess> => {
  const script = `const { acquireDataDirLock } = await import(${JSON.stringify(MODULE_URL)});
    await acquireDataDirLock(${JSON.stringify(dataDir)});
    console.log('locked');
    ${then === 'wait' ? 'setInterval(() => {}, 1000);' : 'process.exit(0);'}`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (chunk) => (out += chunk));
  await Promise.race([
    new Promise<void>((resolve) => child.stdout!.on('data', () => out.includes('locked') && resolve())),
    // 'close', not 'exit': stdout may still hold 'locked' when the process has already exited.
    once(child, 'close').then(([code]) => {
      if (!out.includes('locked')) throw new Error(`child exited with ${code} before locking`);
    }),
  ]);
  return child;
};

describe('data dir lock', () => {
  let root: string;
  let dataDir: string;
  const children: ChildProcess[] = [];
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'opsledger-lock-'));
    dataDir = join(root, 'data');
  });
  afterEach(() => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it('creates a missing DATA_DIR with mode 0700 and a lock file holding our pid', async () => {
    const lock = await acquireDataDirLock(dataDir);
    expect(statSync(dataDir).mode & 0o777).to.equal(0o700);
    expect(readFileSync(join(dataDir, LOCK_FILE), 'utf8').trim()).to.equal(String(process.pid));
    await lock.release();
  });

  it('refuses a second acquire while the first is held, and allows it after release', async () => {
    const lock = await acquireDataDirLock(dataDir);
    await expectLocked(dataDir, process.pid);
    await lock.release();
    expect(existsSync(join(dataDir, LOCK_FILE))).to.equal(false);
    await (await acquireDataDirLock(dataDir)).release();
  });

  const expectTakenOver = async (staleContent: string, ageMs = 0) => {
    mkdirSync(dataDir);
    writeFileSync(join(dataDir, LOCK_FILE), staleContent);
    const then = new Date(Date.now() - ageMs);
    utimesSync(join(dataDir, LOCK_FILE), then, then);
    const lock = await acquireDataDirLock(dataDir);
    expect(readFileSync(join(dataDir, LOCK_FILE), 'utf8').trim()).to.equal(String(process.pid));
    await lock.release();
    expect(existsSync(join(dataDir, LOCK_FILE))).to.equal(false);
  };

  it('takes over a stale lock whose pid is dead', async () => expectTakenOver(`${await deadPid()}\n`));

  it('takes over a lock file holding garbage', () => expectTakenOver('not a pid', 60_000));

  // Containers restart with the same pid (often 1): a lock naming us that we do not hold is stale.
  it('takes over a lock naming our own pid that this process does not hold', () => expectTakenOver(`${process.pid}\n`));

  it('lets exactly one of two concurrent acquires in this process win', async () => {
    const results = await Promise.allSettled([acquireDataDirLock(dataDir), acquireDataDirLock(dataDir)]);
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).to.have.length(1);
    expect(results.find((r) => r.status === 'rejected')!.reason).to.have.property('code', 'DATA_DIR_LOCKED');
    await won[0]!.value.release();
  });

  it('release leaves alone a lock that is no longer ours', async () => {
    const lock = await acquireDataDirLock(dataDir);
    const other = await deadPid();
    writeFileSync(join(dataDir, LOCK_FILE), `${other}\n`);
    await lock.release();
    expect(readFileSync(join(dataDir, LOCK_FILE), 'utf8').trim()).to.equal(String(other));
  });

  it('locks out another process until it dies, even by SIGKILL', async () => {
    const child = await lockInChild(dataDir, 'wait');
    children.push(child);
    await expectLocked(dataDir, child.pid!);
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(existsSync(join(dataDir, LOCK_FILE)), 'SIGKILL leaves the lock file behind').to.equal(true);
    const lock = await acquireDataDirLock(dataDir);
    await lock.release();
  });

  it('removes the lock when the holding process exits normally', async () => {
    const child = await lockInChild(dataDir, 'exit');
    children.push(child);
    if (child.exitCode === null) await once(child, 'exit');
    expect(existsSync(join(dataDir, LOCK_FILE))).to.equal(false);
  });
});
