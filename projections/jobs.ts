// Jobs read models (SPEC §6): systems, jobs with their executions, job templates.
// Idempotent: rows guarded by stream revision; an execution's row only moves forward
// (pending → running → final), so a redelivered event changes nothing.
import { sql, type Transaction } from 'kysely';
import { jobStatusOf, type ExecutionStatus, type JobEvent, type SystemEvent, type TemplateEvent } from '../domain/jobs.ts';
import type { Tables } from '../infra/db/tables.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import type { Emit, Projector } from './projector.ts';

export const JOB_EVENT_TYPES: (JobEvent | SystemEvent | TemplateEvent)['type'][] = [
  'SystemRegistered', 'SystemUpdated', 'SystemDeleted', 'HostKeyPinned', 'HostKeyCleared', 'SystemChecked',
  'JobCreated', 'ExecutionStarted', 'ExecutionFinished', 'JobCancelled',
  'TemplateCreated', 'TemplateUpdated', 'TemplateDeleted', 'TemplateRunSkipped',
];

type Trx = Transaction<Tables>;

type Touched = Map<string, { at: string; revision: string; changes: { kind: string; position: RecordedEvent['position']; extra: object }[] }>;

/**
 * Once per job and batch (fifty executions ending in one batch recount once, not fifty
 * times): the job row's status and times from its executions, then its changes go out
 * with that status.
 */
const refreshJobs = async (trx: Trx, touched: Touched, emit: Emit) => {
  for (const [jobId, t] of touched) {
    const rows = await trx.selectFrom('job_executions').select(['status']).where('job_id', '=', jobId).execute();
    const job = await trx.selectFrom('jobs').select(['project', 'cancelled', 'started_at']).where('id', '=', jobId).executeTakeFirst();
    if (!job) continue;
    const status = jobStatusOf(rows.map((r) => r.status as ExecutionStatus), job.cancelled);
    const ended = status === 'completed' || status === 'failed' || status === 'cancelled';
    await trx.updateTable('jobs').set({
      status, revision: t.revision,
      ...(job.started_at === null && rows.some((r) => r.status !== 'pending' && r.status !== 'cancelled') ? { started_at: t.at } : {}),
      ...(ended ? { finished_at: t.at } : {}),
    }).where('id', '=', jobId).where('revision', '<', t.revision).execute();
    for (const c of t.changes) emit({ topic: 'jobs', kind: c.kind, id: jobId, project: job.project, position: c.position, data: { status, ...c.extra } });
  }
};

/** Notes a change of a job's executions, to be recounted and announced at the end of the batch. */
const touch = (touched: Touched, jobId: string, at: string, revision: string, kind: string, position: RecordedEvent['position'], extra: object) => {
  const t = touched.get(jobId) ?? { at, revision, changes: [] };
  t.at = at;
  t.revision = revision;
  t.changes.push({ kind, position, extra });
  touched.set(jobId, t);
};

const FINAL = ['completed', 'failed', 'timeout', 'cancelled', 'interrupted'];

const apply = async (trx: Trx, recorded: RecordedEvent, emit: Emit, touched: Touched) => {
  const e = recorded as RecordedEvent & (JobEvent | SystemEvent | TemplateEvent);
  const at = recorded.createdAt.toISOString();
  const revision = recorded.revision.toString();
  const { position } = recorded;
  const systemRow = (id: string) => trx.updateTable('systems').where('id', '=', id).where('revision', '<', revision);
  const templateRow = (id: string) => trx.updateTable('job_templates').where('id', '=', id).where('revision', '<', revision);
  switch (e.type) {
    case 'SystemRegistered': {
      const d = e.data;
      await trx.insertInto('systems').values({
        id: d.systemId, project: d.project, name: d.name, hostname: d.hostname, port: d.port, system_type: d.systemType, username: d.username,
        auth_kind: d.authKind, credential_ref: d.credentialRef, description: d.description, labels: JSON.stringify(d.labels), is_active: d.isActive,
        created_at: at, updated_at: at, revision,
      }).onConflict((oc) => oc.column('id').doNothing()).execute();
      return;
    }
    case 'SystemUpdated': {
      const { systemId, systemType, authKind, credentialRef, isActive, labels, hostname, port, ...rest } = e.data;
      const current = await trx.selectFrom('systems').select(['hostname', 'port']).where('id', '=', systemId).executeTakeFirst();
      const moved = !!current && ((hostname !== undefined && hostname !== current.hostname) || (port !== undefined && port !== current.port));
      await systemRow(systemId).set({
        ...rest,
        ...(hostname !== undefined ? { hostname } : {}), ...(port !== undefined ? { port } : {}),
        ...(systemType !== undefined ? { system_type: systemType } : {}), ...(authKind !== undefined ? { auth_kind: authKind } : {}),
        ...(credentialRef !== undefined ? { credential_ref: credentialRef } : {}), ...(isActive !== undefined ? { is_active: isActive } : {}),
        ...(labels !== undefined ? { labels: JSON.stringify(labels) } : {}),
        // A new address is a new host: its key is learned again (as the decider says).
        ...(moved ? { host_key_fingerprint: null, health_status: 'unknown' } : {}),
        updated_at: at, revision,
      }).execute();
      return;
    }
    case 'SystemDeleted':
      await systemRow(e.data.systemId).set({ deleted: true, is_active: false, updated_at: at, revision }).execute();
      return;
    case 'HostKeyPinned':
      await systemRow(e.data.systemId).set({ host_key_fingerprint: e.data.fingerprint, updated_at: at, revision }).execute();
      return;
    case 'HostKeyCleared':
      await systemRow(e.data.systemId).set({ host_key_fingerprint: null, updated_at: at, revision }).execute();
      return;
    case 'SystemChecked':
      await systemRow(e.data.systemId).set({
        health_status: e.data.healthy ? 'healthy' : 'unhealthy', last_health_check: e.data.checkedAt,
        response_time_ms: e.data.responseTimeMs, last_error: e.data.error, revision,
      }).execute();
      return;

    case 'JobCreated': {
      const d = e.data;
      const inserted = await trx.insertInto('jobs').values({
        id: d.jobId, project: d.project, name: d.name, command: d.command, status: 'pending', schedule_at: d.scheduleAt,
        timeout_seconds: d.timeoutSeconds, max_parallel: d.maxParallel, created_by: d.createdBy, template_id: d.templateId,
        params: d.params === null ? null : JSON.stringify(d.params), queued_behind: d.queuedBehind, total: d.targets.length,
        created_at: at, revision,
      }).onConflict((oc) => oc.column('id').doNothing()).returning('id').executeTakeFirst();
      if (!inserted) return;
      await trx.insertInto('job_executions').values(d.targets.map((t, ord) => ({
        id: t.executionId, job_id: d.jobId, project: d.project, system_id: t.systemId, system_name: t.systemName, status: 'pending', ord,
      }))).onConflict((oc) => oc.column('id').doNothing()).execute();
      if (d.templateId && d.scheduleAt) {
        await trx.updateTable('job_templates').set({ last_run_at: sql`greatest(last_run_at, ${d.scheduleAt}::timestamptz)` })
          .where('id', '=', d.templateId).execute();
      }
      emit({ topic: 'jobs', kind: e.type, id: d.jobId, project: d.project, position, data: { status: 'pending', name: d.name, total: d.targets.length } });
      return;
    }
    case 'ExecutionStarted': {
      const moved = await trx.updateTable('job_executions').set({ status: 'running', started_at: e.data.startedAt })
        .where('id', '=', e.data.executionId).where('status', '=', 'pending').executeTakeFirst();
      if (moved.numUpdatedRows > 0n) {
        touch(touched, e.data.jobId, at, revision, e.type, position, { execution_id: e.data.executionId, execution_status: 'running' });
      }
      return;
    }
    case 'ExecutionFinished': {
      const d = e.data;
      const moved = await trx.updateTable('job_executions').set({
        status: d.status, completed_at: d.finishedAt, exit_code: d.exitCode, error_message: d.errorMessage, duration_seconds: d.durationSeconds,
        stdout_bytes: String(d.stdout.bytes), stderr_bytes: String(d.stderr.bytes), stdout_truncated: d.stdout.truncated, stderr_truncated: d.stderr.truncated,
      }).where('id', '=', d.executionId).where('status', 'not in', FINAL).executeTakeFirst();
      if (moved.numUpdatedRows > 0n) {
        touch(touched, d.jobId, at, revision, e.type, position, {
          execution_id: d.executionId, execution_status: d.status, exit_code: d.exitCode, error_message: d.errorMessage,
        });
      }
      return;
    }
    case 'JobCancelled': {
      await trx.updateTable('jobs').set({ cancelled: true }).where('id', '=', e.data.jobId).execute();
      touch(touched, e.data.jobId, at, revision, e.type, position, {});
      return;
    }

    case 'TemplateCreated': {
      const d = e.data;
      await trx.insertInto('job_templates').values({
        id: d.templateId, project: d.project, name: d.name, command: d.command, parameters: JSON.stringify(d.parameters),
        targets: JSON.stringify(d.targets), cron: d.cron, timezone: d.timezone, overlap: d.overlap, timeout_seconds: d.timeoutSeconds,
        max_parallel: d.maxParallel, created_at: at, updated_at: at, revision,
      }).onConflict((oc) => oc.column('id').doNothing()).execute();
      return;
    }
    case 'TemplateUpdated': {
      const { templateId, parameters, targets, timeoutSeconds, maxParallel, ...rest } = e.data;
      await templateRow(templateId).set({
        ...rest,
        ...(parameters !== undefined ? { parameters: JSON.stringify(parameters) } : {}),
        ...(targets !== undefined ? { targets: JSON.stringify(targets) } : {}),
        ...(timeoutSeconds !== undefined ? { timeout_seconds: timeoutSeconds } : {}),
        ...(maxParallel !== undefined ? { max_parallel: maxParallel } : {}),
        updated_at: at, revision,
      }).execute();
      return;
    }
    case 'TemplateDeleted':
      await templateRow(e.data.templateId).set({ deleted: true, updated_at: at, revision }).execute();
      return;
    case 'TemplateRunSkipped':
      await trx.updateTable('job_templates').set({ last_run_at: sql`greatest(last_run_at, ${e.data.dueAt}::timestamptz)` })
        .where('id', '=', e.data.templateId).execute();
      return;
    default: { const _never: never = e; void _never; }
  }
};

export const jobsProjection: Projector = {
  name: 'jobs',
  version: 1,
  handles: JOB_EVENT_TYPES,
  tables: ['systems', 'jobs', 'job_executions', 'job_templates'],
  async apply(trx, events, emit) {
    const touched: Touched = new Map();
    for (const e of events) await apply(trx, e, emit, touched);
    await refreshJobs(trx, touched, emit);
  },
};
