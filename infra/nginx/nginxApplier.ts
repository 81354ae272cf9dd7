// Puts one site file in place the only safe way (SPEC §7): write it atomically, test the
// WHOLE configuration with `nginx -t`, reload; on any failure put the previous file back
// (or remove the new one), test again and reload, then throw NginxError with the code of
// the step that failed. nginx therefore only ever reloads a configuration that passed
// `nginx -t`, and one bad site never takes the others down.
//
// Applies to one configuration run one at a time (an in-process lock per confPath): two
// concurrent applies would otherwise test or restore each other's half-done state.
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { programRunner } from '../programRunner.ts';
import { NginxError, type NginxErrorCode } from './nginxError.ts';
import { check, isProxyName } from './validateNames.ts';

export type NginxTarget = {
  sitesDir: string;
  nginxBin: string;
  /** The main configuration, passed to every nginx invocation as -c; omitted: nginx's compiled-in one. */
  confPath?: string | undefined;
  /** -p, for an instance with its own prefix (tests); omitted: nginx's compiled-in prefix. */
  prefix?: string;
  /** -e, where nginx logs before reading error_log; omitted: the compiled-in default. */
  errorLog?: string;
  /** Per nginx invocation; default 15 s. */
  timeoutMs?: number;
};

export type ApplyResult = { name: string; path: string; changed: boolean; testOutput: string };

const locks = new Map<string, Promise<unknown>>();

/** Runs `task` after every earlier task for the same key has settled. */
const serialized = <T>(key: string, task: () => Promise<T>): Promise<T> => {
  const previous = locks.get(key) ?? Promise.resolve();
  const run = previous.then(task, task);
  const tail = run.catch(() => undefined);
  locks.set(key, tail);
  void tail.then(() => {
    if (locks.get(key) === tail) locks.delete(key);
  });
  return run;
};

type NginxRun = { ok: boolean; output: string };

const runNginx = async (t: NginxTarget, args: string[]): Promise<NginxRun> => {
  const base = [...(t.prefix ? ['-p', t.prefix] : []), ...(t.confPath ? ['-c', t.confPath] : []), ...(t.errorLog ? ['-e', t.errorLog] : [])];
  const r = await programRunner.run(t.nginxBin, [...base, ...args], t.timeoutMs ?? 15_000);
  const output = `${r.stderr}${r.stdout}`.trim();
  return { ok: r.ok, output: !r.ok && !output ? (r.error ?? 'failed') : output };
};

export const testConfig = (t: NginxTarget): Promise<NginxRun> => runNginx(t, ['-t']);

/** nginx's compiled-in paths (`nginx -V`), asked once per binary. */
const builds = new Map<string, Promise<{ confPath: string | null; pidPath: string | null }>>();
const buildOf = (bin: string) => {
  let found = builds.get(bin);
  if (!found) {
    found = programRunner.run(bin, ['-V'], 5000).then((r) => {
      const text = `${r.stderr}${r.stdout}`;
      return { confPath: /--conf-path=(\S+)/.exec(text)?.[1] ?? null, pidPath: /--pid-path=(\S+)/.exec(text)?.[1] ?? null };
    });
    builds.set(bin, found);
  }
  return found;
};

/**
 * The master's pid file: the main configuration's own top-level `pid` directive, else the
 * compiled-in one. null when it cannot be told for sure (a relative path, an include).
 */
const pidFileOf = async (t: NginxTarget): Promise<string | null> => {
  const build = await buildOf(t.nginxBin);
  const conf = t.confPath ?? build.confPath;
  if (!conf) return null;
  const text = (await readFile(conf, 'utf8')).replace(/#.*$/gm, '');
  const directive = /(?:^|[;{}])\s*pid\s+([^;\s]+)\s*;/.exec(text);
  // Without its own directive, an included file might hold one: only then is the compiled-in path not sure.
  const path = directive ? directive[1]! : /(?:^|[;{}])\s*include\s/.test(text) ? null : build.pidPath;
  return path && path.startsWith('/') ? path : null;
};

/** The master's worker processes (pid → shutting down?), from /proc; null where /proc cannot tell. */
const workersOf = async (master: number): Promise<Map<number, boolean> | null> => {
  let children: string;
  try {
    children = await readFile(`/proc/${master}/task/${master}/children`, 'utf8');
  } catch {
    return null;
  }
  const out = new Map<number, boolean>();
  for (const pid of children.split(' ').filter(Boolean).map(Number)) {
    // nginx titles its processes; a worker told to quit says so before it closes its listeners.
    const title = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (title.includes('worker process')) out.set(pid, title.includes('shutting down'));
  }
  return out;
};

const RELOAD_POLL_MS = 5;

/** One lock and one reload record per main configuration. */
const configKey = (t: NginxTarget) => t.confPath ?? '(default)';

/**
 * A reload is only a signal: the master then parses the configuration again, starts new
 * workers and tells the old ones to quit, while they go on accepting connections with the
 * previous configuration. Done means: a worker the reload started is there, and every
 * worker from before is shutting down or gone. A master that keeps its old workers did
 * not take the configuration (it says why in its error log only).
 */
const untilReloaded = async (master: number, before: Map<number, boolean>, timeoutMs: number): Promise<NginxRun> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await workersOf(master);
    if (now === null) return { ok: true, output: '' };
    const started = [...now.keys()].some((pid) => !before.has(pid));
    const oldOnesQuit = [...before.keys()].every((pid) => !now.has(pid) || now.get(pid));
    if (started && oldOnesQuit) return { ok: true, output: '' };
    if (Date.now() >= deadline) {
      return { ok: false, output: `nginx's master (pid ${master}) did not start workers with the new configuration within ${timeoutMs} ms; its error log says why` };
    }
    await new Promise((r) => setTimeout(r, RELOAD_POLL_MS));
  }
};

/**
 * What `nginx -s reload` does, without it: that command parses the whole configuration
 * again only to find the pid file, which doubles the cost of an apply. The master is
 * signalled directly (SIGHUP: it re-reads the configuration, and keeps the running one if
 * that fails, exactly as after `-s reload`); reloadSettled tells when nginx serves with the
 * new configuration. Whenever the pid cannot be told for sure, or the
 * signal cannot be sent, `nginx -s reload` runs and speaks for itself.
 */
export const reloadNginx = async (t: NginxTarget): Promise<NginxRun> => {
  let master: number | null = null;
  try {
    const pidFile = await pidFileOf(t);
    if (pidFile) {
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      if (Number.isInteger(pid) && pid > 1) master = pid;
    }
  } catch {
    // Not readable: nginx's own command reports why.
  }
  if (master !== null) {
    const before = await workersOf(master);
    try {
      process.kill(master, 'SIGHUP');
      if (before !== null) {
        const key = configKey(t);
        const settled = untilReloaded(master, before, t.timeoutMs ?? 15_000);
        reloads.set(key, settled);
        void settled.then(() => {
          if (reloads.get(key) === settled) reloads.delete(key);
        });
      }
      return { ok: true, output: '' };
    } catch {
      // Not running, not ours to signal: nginx's own command reports why.
    }
  }
  return runNginx(t, ['-s', 'reload']);
};

/** The last signalled reload of each configuration, until nginx serves with it. */
const reloads = new Map<string, Promise<NginxRun>>();

/**
 * Resolves once nginx serves with the configuration of the last reload (at once if none is
 * under way): for whoever needs the new configuration live, such as an ACME server about to
 * fetch a challenge. A reload itself returns as soon as it is signalled, as `nginx -s
 * reload` does.
 */
export const reloadSettled = (t: NginxTarget): Promise<NginxRun> => reloads.get(configKey(t)) ?? Promise.resolve({ ok: true, output: '' });

const readIfExists = async (path: string): Promise<string | null> => {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
};

/**
 * Temp file in the same directory (so rename is atomic) under a name the `*.conf`
 * include never matches, fsync'd, renamed over the target, then the directory fsync'd.
 */
const writeAtomically = async (dir: string, file: string, content: string): Promise<void> => {
  const temp = join(dir, `.${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'wx', 0o644);
    try {
      await handle.writeFile(content, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, join(dir, file));
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await syncDir(dir);
};

const syncDir = async (dir: string): Promise<void> => {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
};

const removeIfExists = async (dir: string, file: string): Promise<void> => {
  try {
    await unlink(join(dir, file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await syncDir(dir);
};

/** Puts `previous` back (null: the file did not exist), then tests and reloads; what happened goes into the error's details. */
const restore = async (t: NginxTarget, file: string, previous: string | null): Promise<Record<string, unknown>> => {
  try {
    if (previous === null) await removeIfExists(t.sitesDir, file);
    else await writeAtomically(t.sitesDir, file, previous);
  } catch (err) {
    return { restored: false, restoreError: (err as Error).message };
  }
  const retest = await testConfig(t);
  // Never reload what does not test clean (another site may be broken too): the running
  // workers keep the last good configuration.
  if (!retest.ok) return { restored: true, retestOk: false, retestOutput: retest.output };
  const reload = await reloadNginx(t);
  return { restored: true, retestOk: true, reloadedPrevious: reload.ok, ...(reload.ok ? {} : { reloadOutput: reload.output }) };
};

const fail = async (t: NginxTarget, file: string, previous: string | null, code: NginxErrorCode, what: string, output: string): Promise<never> => {
  const details = await restore(t, file, previous);
  throw new NginxError(code, `${what} for ${file}; the previous configuration was ${details.restored ? 'restored' : 'NOT restored'}`, output, details);
};

/**
 * Installs SITES_DIR/NAME.conf with `content` (already rendered and validated) and reloads nginx.
 * `previous` is the known-good content to restore on failure (null: the site did not
 * exist); by default, what is on disk now. A caller that may find an untested file there
 * (a crash between the write and the test) passes what it last applied instead.
 */
export const applySite = (t: NginxTarget & { name: string; content: string; previous?: string | null }): Promise<ApplyResult> => {
  check(isProxyName(t.name), 'name', t.name, 'a slug ([a-z0-9][a-z0-9-]{0,62})');
  const file = `${t.name}.conf`;
  const path = join(t.sitesDir, file);
  return serialized(configKey(t), async () => {
    let previous: string | null;
    let onDisk: string | null;
    try {
      onDisk = await readIfExists(path);
      previous = t.previous === undefined ? onDisk : t.previous;
    } catch (err) {
      throw new NginxError('CONFIG_WRITE_FAILED', `cannot read the current ${file}: ${(err as Error).message}`, '');
    }
    try {
      await writeAtomically(t.sitesDir, file, t.content);
    } catch (err) {
      // The rename is the last step that touches the target: if anything failed, the old file is intact.
      throw new NginxError('CONFIG_WRITE_FAILED', `cannot write ${file}: ${(err as Error).message}`, '');
    }
    const tested = await testConfig(t);
    if (!tested.ok) return fail(t, file, previous, 'NGINX_TEST_FAILED', 'nginx -t failed', tested.output);
    const reloaded = await reloadNginx(t);
    if (!reloaded.ok) return fail(t, file, previous, 'NGINX_RELOAD_FAILED', 'nginx -s reload failed', reloaded.output);
    return { name: t.name, path, changed: onDisk !== t.content, testOutput: tested.output };
  });
};

/**
 * Removes SITES_DIR/NAME.conf and reloads; restores it if the result does not test or reload.
 * Absent: nothing to do, unless `reloadIfAbsent` (a removal interrupted between the unlink
 * and the reload left nginx running the site).
 */
export const removeSite = (t: NginxTarget & { name: string; reloadIfAbsent?: boolean }): Promise<{ name: string; removed: boolean }> => {
  check(isProxyName(t.name), 'name', t.name, 'a slug ([a-z0-9][a-z0-9-]{0,62})');
  const file = `${t.name}.conf`;
  const path = join(t.sitesDir, file);
  return serialized(configKey(t), async () => {
    let previous: string | null;
    try {
      previous = await readIfExists(path);
      if (previous === null && !t.reloadIfAbsent) return { name: t.name, removed: false };
      await removeIfExists(t.sitesDir, file);
    } catch (err) {
      throw new NginxError('CONFIG_WRITE_FAILED', `cannot remove ${file}: ${(err as Error).message}`, '');
    }
    const tested = await testConfig(t);
    if (!tested.ok) return fail(t, file, previous, 'NGINX_TEST_FAILED', 'nginx -t failed after removing the site', tested.output);
    const reloaded = await reloadNginx(t);
    if (!reloaded.ok) return fail(t, file, previous, 'NGINX_RELOAD_FAILED', 'nginx -s reload failed', reloaded.output);
    return { name: t.name, removed: previous !== null };
  });
};
