// The job runner (SPEC §6, DESIGN §5): takes pending executions of due jobs, runs each
// command over SSH and records how it ended, as events through the job commands.
//
// - At most `maxConcurrency` executions at once (JOB_MAX_CONCURRENCY), a job's own
//   `max_parallel`, and the SSH pool's per-host session limit (MAX_SESSIONS_PER_HOST).
// - Each execution holds a lease with a heartbeat. An execution left `running` by a
//   process that died (its lease lapsed, or on the embedded database any lease not ours:
//   one process per data directory) ends as `interrupted`; nothing stays running.
// - Cancel and timeout kill the remote process (the SSH pool signals KILL); a stop of
//   Opsledger does the same and records the executions as `interrupted`.
// - Output goes to the output store (workers/jobOutput.ts) and live to `job:{id}`.
import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type Selectable } from 'kysely';
import type { Observable, Subscription } from 'rxjs';
import type { ExecutionFinished, FinalStatus } from '../domain/jobs.ts';
import type { Tables } from '../infra/db/tables.ts';
import type { ExecOptions, ExecResult, SshCredentials, SshTarget } from '../infra/ssh/sshPool.ts';
import type { Worker, WorkerDetails } from '../infra/workers.ts';
import { createOutputSink, type OutputStreamName } from './jobOutput.ts';

export type LiveOutput = { jobId: string; project: string; executionId: string; stream: OutputStreamName; text: string };

export type JobRunnerDeps = {
  db: Kysely<Tables>;
  ssh: { exec(target: SshTarget, command: string, opts: ExecOptions): Promise<ExecResult> };
  /** The system's credentials from the vault, or null when they are gone. */
  credentials(ref: string): Promise<SshCredentials | null>;
  /** Appends ExecutionStarted; false when the job no longer wants it (cancelled meanwhile). */
  start(jobId: string, executionId: string, runner: string): Promise<boolean>;
  finish(data: ExecutionFinished['data']): Promise<void>;
  /** First contact with a host: remember its key. */
  pinHostKey(systemId: string, fingerprint: string): Promise<void>;
  output?(o: LiveOutput): void;
  /** Job ids as they are cancelled (live); the runner also checks on every tick. */
  cancellations?: Observable<string>;
  /** Anything emitted makes it look for work at once (e.g. a job was created). */
  wakeups?: Observable<unknown>;
  maxConcurrency: number;
  maxOutputBytes: number;
  /** Every lease not ours is dead (embedded database: one process per data directory). */
  exclusive: boolean;
  leaseTtlMs?: number;
  heartbeatMs?: number;
  tickMs?: number;
  logger?: { warn(o: object, msg?: string): void; info?(o: object, msg?: string): void };
};

type Running = { jobId: string; abort: AbortController; why: 'cancel' | 'shutdown' | null; done: Promise<void> };

type Due = { id: string; job_id: string; system_id: string; project: string; command: string; timeout_seconds: number; max_parallel: number | null };

const none = { bytes: 0, truncated: false };

/** How an execution ended must be recorded: a few tries, then the lease check ends it as interrupted. */
const withRetries = async (write: () => Promise<void>, delaysMs: readonly number[] = [100, 500, 2000]): Promise<void> => {
  for (let attempt = 0; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (attempt >= delaysMs.length) throw err;
      await new Promise((resolve) => setTimeout(resolve, delaysMs[attempt]));
    }
  }
};

export const createJobRunner = (deps: JobRunnerDeps): Worker & { runOnce(): Promise<number>; engine(): { status: string; running_jobs: number; available_slots: number } } => {
  const owner = `runner-${randomUUID()}`;
  const leaseTtlMs = deps.leaseTtlMs ?? 30_000;
  const heartbeatMs = deps.heartbeatMs ?? 5000;
  const tickMs = deps.tickMs ?? 1000;
  const running = new Map<string, Running>();
  let state: 'stopped' | 'running' | 'stopping' = 'stopped';
  let timer: NodeJS.Timeout | null = null;
  let beat: NodeJS.Timeout | null = null;
  let subs: Subscription[] = [];
  let ticking: Promise<number> | null = null;
  let again = false;
  let lastError: string | null = null;
  let finished = 0;

  const now = () => new Date();
  const note = (msg: string, err: unknown) => {
    lastError = `${msg}: ${(err as Error)?.message ?? String(err)}`;
    deps.logger?.warn({ err: (err as Error)?.message ?? String(err) }, msg);
  };

  /** Ends what a dead process left running as `interrupted`, and frees its leases. */
  const recover = async () => {
    const lapsed = new Date(Date.now() - leaseTtlMs);
    const orphans = await deps.db.selectFrom('job_executions as e')
      .leftJoin('execution_leases as l', 'l.execution_id', 'e.id')
      .select(['e.id', 'e.job_id', 'e.started_at', 'l.owner'])
      .where('e.status', '=', 'running')
      .where((eb) => eb.or([
        eb('l.owner', 'is', null),
        eb.and([eb('l.owner', '!=', owner), deps.exclusive ? sql<boolean>`true` : eb('l.heartbeat_at', '<', lapsed)]),
      ]))
      .execute();
    for (const o of orphans) {
      if (running.has(o.id)) continue;
      const at = now();
      await deps.finish({
        jobId: o.job_id, executionId: o.id, status: 'interrupted', exitCode: null,
        errorMessage: 'the Opsledger process running it stopped before it finished', finishedAt: at.toISOString(),
        durationSeconds: o.started_at ? (at.getTime() - new Date(o.started_at).getTime()) / 1000 : null, stdout: none, stderr: none,
      });
      await deps.db.deleteFrom('execution_leases').where('execution_id', '=', o.id).execute();
    }
    // Leases of dead runners on executions that never started (a crash between lease and start).
    await deps.db.deleteFrom('execution_leases').where('owner', '!=', owner)
      .where(deps.exclusive ? sql<boolean>`true` : sql<boolean>`heartbeat_at < ${lapsed.toISOString()}::timestamptz`).execute();
  };

  const due = async (limit: number): Promise<Due[]> => {
    const { rows } = await sql<Due>`
      select e.id, e.job_id, e.system_id, j.project, j.command, j.timeout_seconds, j.max_parallel
        from job_executions e join jobs j on j.id = e.job_id
       where e.status = 'pending' and not j.cancelled
         and (j.schedule_at is null or j.schedule_at <= now())
         and (j.queued_behind is null or exists (
               select 1 from jobs q where q.id = j.queued_behind and q.status in ('completed', 'failed', 'cancelled')))
         and not exists (select 1 from execution_leases l where l.execution_id = e.id)
       order by j.created_at, e.ord
       limit ${limit}`.execute(deps.db);
    return rows;
  };

  // Credentials are immutable under their reference (a change makes a new one), so each is
  // read from the vault once: a fan-out to fifty systems costs no fifty vault reads per job.
  const credentialCache = new Map<string, Promise<SshCredentials | null>>();
  const credentialsOf = (ref: string) => {
    let found = credentialCache.get(ref);
    if (!found) {
      if (credentialCache.size >= 10_000) credentialCache.clear();
      found = deps.credentials(ref);
      credentialCache.set(ref, found);
      void found.then((c) => { if (!c) credentialCache.delete(ref); }, () => credentialCache.delete(ref));
    }
    return found;
  };

  type SystemRow = Selectable<Tables['systems']>;

  const execute = async (d: Due, run: Running, system: SystemRow | undefined): Promise<void> => {
    const startedAt = now();
    const finish = async (status: FinalStatus, fields: { exitCode?: number | null; errorMessage?: string | null; stdout?: typeof none; stderr?: typeof none }) => {
      const at = now();
      await withRetries(() => deps.finish({
        jobId: d.job_id, executionId: d.id, status, exitCode: fields.exitCode ?? null, errorMessage: fields.errorMessage ?? null,
        finishedAt: at.toISOString(), durationSeconds: (at.getTime() - startedAt.getTime()) / 1000,
        stdout: fields.stdout ?? none, stderr: fields.stderr ?? none,
      }));
    };
    if (!system || system.deleted || !system.is_active) {
      await finish('failed', { errorMessage: `system ${system?.name ?? d.system_id} is ${system?.deleted || !system ? 'deleted' : 'inactive'}` });
      return;
    }
    const credentials = await credentialsOf(system.credential_ref);
    if (!credentials) {
      await finish('failed', { errorMessage: `the credentials of system ${system.name} are missing from the vault` });
      return;
    }
    const sinks = Object.fromEntries((['stdout', 'stderr'] as const).map((stream) => [stream, createOutputSink({
      db: deps.db, executionId: d.id, stream, maxBytes: deps.maxOutputBytes,
      live: deps.output ? (text) => deps.output!({ jobId: d.job_id, project: d.project, executionId: d.id, stream, text }) : undefined,
      onError: (err) => note('could not store execution output', err),
    })])) as Record<OutputStreamName, ReturnType<typeof createOutputSink>>;
    let result: ExecResult | null = null;
    let failure: { code?: string; message: string } | null = null;
    try {
      result = await deps.ssh.exec({
        host: system.hostname, port: system.port, username: system.username, credentials, hostKeyFingerprint: system.host_key_fingerprint,
      }, d.command, {
        timeoutMs: d.timeout_seconds * 1000, signal: run.abort.signal,
        onStdout: (c) => sinks.stdout.write(c), onStderr: (c) => sinks.stderr.write(c),
      });
    } catch (err) {
      failure = { code: (err as { code?: string }).code, message: (err as Error).message };
    }
    const [stdout, stderr] = await Promise.all([sinks.stdout.close(), sinks.stderr.close()]);
    if (result && system.host_key_fingerprint === null) {
      await deps.pinHostKey(system.id, result.hostKeyFingerprint).catch((err: unknown) => note(`could not pin the host key of ${system.name}`, err));
    }
    if (failure) {
      await finish('failed', { errorMessage: failure.code ? `${failure.code}: ${failure.message}` : failure.message, stdout, stderr });
      return;
    }
    const r = result!;
    switch (r.reason) {
      case 'exit':
        await finish(r.exitCode === 0 ? 'completed' : 'failed', {
          exitCode: r.exitCode, stdout, stderr,
          errorMessage: r.exitCode === 0 ? null : r.exitCode === null ? `killed by signal ${r.exitSignal ?? 'unknown'}` : `exited with ${r.exitCode}`,
        });
        return;
      case 'timeout':
        await finish('timeout', { errorMessage: `timed out after ${d.timeout_seconds} s: the remote process was killed`, stdout, stderr });
        return;
      case 'cancelled':
        if (run.why === 'shutdown') await finish('interrupted', { errorMessage: 'Opsledger stopped: the remote process was killed', stdout, stderr });
        else await finish('cancelled', { errorMessage: 'cancelled: the remote process was killed', stdout, stderr });
        return;
      default: { const _never: never = r.reason; void _never; }
    }
  };

  /**
   * Claims a set of due executions together: one statement takes their leases, and their
   * starts go out at once (the execution recorder appends them to each job in one go).
   */
  const launch = async (batch: Due[]): Promise<number> => {
    if (batch.length === 0) return 0;
    const claimed = new Set((await deps.db.insertInto('execution_leases')
      .values(batch.map((d) => ({ execution_id: d.id, job_id: d.job_id, owner, heartbeat_at: now() })))
      .onConflict((oc) => oc.column('execution_id').doNothing()).returning('execution_id').execute()).map((r) => r.execution_id));
    const mine = batch.filter((d) => claimed.has(d.id));
    const started = await Promise.all(mine.map((d) => deps.start(d.job_id, d.id, owner).catch((err: unknown) => {
      note(`execution ${d.id} could not be started`, err);
      return false;
    })));
    const refused = mine.filter((_, i) => !started[i]).map((d) => d.id);
    if (refused.length > 0) await deps.db.deleteFrom('execution_leases').where('execution_id', 'in', refused).execute();
    const go = mine.filter((_, i) => started[i]);
    const systemIds = [...new Set(go.map((d) => d.system_id))];
    const systems = new Map(systemIds.length === 0 ? [] : (await deps.db.selectFrom('systems').selectAll().where('id', 'in', systemIds).execute()).map((r) => [r.id, r]));
    for (const d of go) {
      const run: Running = { jobId: d.job_id, abort: new AbortController(), why: null, done: Promise.resolve() };
      running.set(d.id, run);
      run.done = execute(d, run, systems.get(d.system_id))
        .catch((err: unknown) => note(`execution ${d.id} could not be recorded`, err))
        .finally(async () => {
          running.delete(d.id);
          finished += 1;
          await deps.db.deleteFrom('execution_leases').where('execution_id', '=', d.id).execute().catch(() => undefined);
          if (state === 'running') kick();
        });
    }
    return go.length;
  };

  const cancelJob = (jobId: string) => {
    for (const r of running.values()) if (r.jobId === jobId && !r.abort.signal.aborted) { r.why = 'cancel'; r.abort.abort(); }
  };

  const tick = async (): Promise<number> => {
    if (running.size > 0) {
      const jobIds = [...new Set([...running.values()].map((r) => r.jobId))];
      const cancelled = await deps.db.selectFrom('jobs').select('id').where('id', 'in', jobIds).where('cancelled', '=', true).execute();
      for (const c of cancelled) cancelJob(c.id);
    }
    const free = deps.maxConcurrency - running.size;
    if (free <= 0) return 0;
    const perJob = new Map<string, number>();
    for (const r of running.values()) perJob.set(r.jobId, (perJob.get(r.jobId) ?? 0) + 1);
    const batch: Due[] = [];
    for (const d of await due(free * 4)) {
      if (batch.length >= free) break;
      const inJob = perJob.get(d.job_id) ?? 0;
      if (d.max_parallel !== null && inJob >= d.max_parallel) continue;
      batch.push(d);
      perJob.set(d.job_id, inJob + 1);
    }
    if (state !== 'running') return 0;
    return launch(batch);
  };

  const runTick = (): Promise<number> => {
    if (ticking) { again = true; return ticking; }
    ticking = (async () => {
      let total = 0;
      try {
        do { again = false; total += await tick(); } while (again && state === 'running');
      } catch (err) {
        note('the job runner could not look for work', err);
      } finally {
        ticking = null;
      }
      return total;
    })();
    return ticking;
  };
  const kick = () => { void runTick(); };

  return {
    name: 'job-runner',
    async start() {
      if (state === 'running') return;
      state = 'running';
      await recover();
      subs = [
        ...(deps.cancellations ? [deps.cancellations.subscribe((jobId) => cancelJob(jobId))] : []),
        ...(deps.wakeups ? [deps.wakeups.subscribe(() => kick())] : []),
      ];
      timer = setInterval(kick, tickMs);
      timer.unref();
      beat = setInterval(() => {
        void deps.db.updateTable('execution_leases').set({ heartbeat_at: now() }).where('owner', '=', owner).execute()
          .catch((err: unknown) => note('could not renew execution leases', err));
        // Also catches an execution whose end could not be recorded (its lease is gone by then).
        void recover().catch((err: unknown) => note('could not look for interrupted executions', err));
      }, heartbeatMs);
      beat.unref();
      kick();
    },
    async stop() {
      if (state !== 'running') return;
      state = 'stopping';
      for (const s of subs) s.unsubscribe();
      if (timer) clearInterval(timer);
      if (beat) clearInterval(beat);
      await ticking;
      // What still runs is killed on its host and recorded as interrupted.
      for (const r of running.values()) { r.why ??= 'shutdown'; r.abort.abort(); }
      await Promise.all([...running.values()].map((r) => r.done));
      credentialCache.clear();
      state = 'stopped';
    },
    runOnce: () => runTick(),
    engine: () => ({
      status: state,
      running_jobs: new Set([...running.values()].map((r) => r.jobId)).size,
      available_slots: Math.max(0, deps.maxConcurrency - running.size),
    }),
    details: (): WorkerDetails => ({ owner, executions_running: running.size, executions_finished: finished, last_error: lastError }),
  };
};
