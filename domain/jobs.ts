// Jobs over SSH (SPEC §6): systems, jobs with one execution per system, and job
// templates. Pure.
//
// Streams: `system-<id>` (a host and how to log in: the credentials themselves live in the
// vault, events name them by reference), `job-<id>` (the job and its executions' lives;
// output is not in the log: it goes to an output store, see workers/jobRunner.ts),
// `job-template-<id>` (a template and its scheduled runs).
import { DomainError } from './domainError.ts';
import type { Decider } from './decider.ts';

// ---- systems ---------------------------------------------------------------------------

export type SystemType = 'linux' | 'windows';
export type AuthKind = 'password' | 'private_key';
export type SystemFields = {
  name: string; project: string; hostname: string; port: number; systemType: SystemType; username: string;
  authKind: AuthKind; credentialRef: string; description: string | null; labels: Record<string, string>; isActive: boolean;
};

export type SystemRegistered = { type: 'SystemRegistered'; data: { systemId: string } & SystemFields };
export type SystemUpdated = { type: 'SystemUpdated'; data: { systemId: string } & Partial<Omit<SystemFields, 'project'>> };
export type SystemDeleted = { type: 'SystemDeleted'; data: { systemId: string; project: string; credentialRef: string } };
export type HostKeyPinned = { type: 'HostKeyPinned'; data: { systemId: string; fingerprint: string } };
export type HostKeyCleared = { type: 'HostKeyCleared'; data: { systemId: string; previous: string } };
export type SystemChecked = { type: 'SystemChecked'; data: {
  systemId: string; healthy: boolean; checkedAt: string; responseTimeMs: number | null; error: string | null;
} };
export type SystemEvent = SystemRegistered | SystemUpdated | SystemDeleted | HostKeyPinned | HostKeyCleared | SystemChecked;

export type SystemCommand =
  | { type: 'RegisterSystem'; data: SystemRegistered['data'] }
  | { type: 'UpdateSystem'; data: SystemUpdated['data'] }
  | { type: 'DeleteSystem'; data: { systemId: string } }
  | { type: 'PinHostKey'; data: HostKeyPinned['data'] }
  | { type: 'ClearHostKey'; data: { systemId: string } }
  | { type: 'RecordSystemCheck'; data: SystemChecked['data'] };

export type SystemState =
  | { status: 'none' }
  | ({ status: 'active' | 'deleted'; systemId: string; hostKey: string | null } & SystemFields);

export const systemStream = (systemId: string): string => `system-${systemId}`;

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

const liveSystem = (state: SystemState, systemId: string) => {
  if (state.status !== 'active') throw new DomainError('SYSTEM_NOT_FOUND', `system ${systemId} not found`);
  return state;
};

export const systemDecider: Decider<SystemState, SystemCommand, SystemEvent> = {
  initialState: () => ({ status: 'none' }),
  evolve(state, event) {
    switch (event.type) {
      case 'SystemRegistered': {
        const { systemId, ...fields } = event.data;
        return { status: 'active', systemId, hostKey: null, ...fields };
      }
      case 'SystemUpdated': {
        if (state.status === 'none') return state;
        const { systemId: _id, ...changes } = event.data;
        // A new address is a new host: its key is learned again.
        const moved = (changes.hostname !== undefined && changes.hostname !== state.hostname) || (changes.port !== undefined && changes.port !== state.port);
        return { ...state, ...changes, hostKey: moved ? null : state.hostKey };
      }
      case 'SystemDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      case 'HostKeyPinned':
        return state.status === 'none' ? state : { ...state, hostKey: event.data.fingerprint };
      case 'HostKeyCleared':
        return state.status === 'none' ? state : { ...state, hostKey: null };
      case 'SystemChecked':
        return state;
      default: { const _never: never = event; return _never; }
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'RegisterSystem':
        if (state.status !== 'none') throw new DomainError('SYSTEM_EXISTS', `system ${command.data.systemId} exists`);
        return [{ type: 'SystemRegistered', data: command.data }];
      case 'UpdateSystem': {
        const system = liveSystem(state, command.data.systemId);
        const { systemId, ...changes } = command.data;
        const changed = Object.fromEntries(Object.entries(changes)
          .filter(([k, v]) => v !== undefined && !sameJson(system[k as keyof SystemFields], v)));
        return Object.keys(changed).length === 0 ? [] : [{ type: 'SystemUpdated', data: { systemId, ...changed } }];
      }
      case 'DeleteSystem': {
        const system = liveSystem(state, command.data.systemId);
        return [{ type: 'SystemDeleted', data: { systemId: system.systemId, project: system.project, credentialRef: system.credentialRef } }];
      }
      case 'PinHostKey': {
        const system = liveSystem(state, command.data.systemId);
        if (system.hostKey === command.data.fingerprint) return [];
        // First contact only: a different key later is a mismatch until an admin clears the pin.
        if (system.hostKey !== null) throw new DomainError('HOST_KEY_MISMATCH', `system ${system.name} has the host key ${system.hostKey} pinned, not ${command.data.fingerprint}`);
        return [{ type: 'HostKeyPinned', data: command.data }];
      }
      case 'ClearHostKey': {
        const system = liveSystem(state, command.data.systemId);
        return system.hostKey === null ? [] : [{ type: 'HostKeyCleared', data: { systemId: system.systemId, previous: system.hostKey } }];
      }
      case 'RecordSystemCheck':
        liveSystem(state, command.data.systemId);
        return [{ type: 'SystemChecked', data: command.data }];
      default: { const _never: never = command; return _never; }
    }
  },
};

// ---- jobs ------------------------------------------------------------------------------

export type ExecutionStatus = 'pending' | 'running' | 'completed' | 'failed' | 'timeout' | 'cancelled' | 'interrupted';
export type FinalStatus = Exclude<ExecutionStatus, 'pending' | 'running'>;
export type JobStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';
export type JobTarget = { executionId: string; systemId: string; systemName: string };

export type JobCreated = { type: 'JobCreated'; data: {
  jobId: string; name: string; command: string; project: string; targets: JobTarget[]; scheduleAt: string | null;
  timeoutSeconds: number; maxParallel: number | null; createdBy: string | null;
  templateId: string | null; params: Record<string, string | number | boolean> | null;
  /** Overlap policy `queue`: this job waits until that one has finished. */
  queuedBehind: string | null;
} };
export type ExecutionStarted = { type: 'ExecutionStarted'; data: { jobId: string; executionId: string; startedAt: string; runner: string } };
export type OutputSummary = { bytes: number; truncated: boolean };
export type ExecutionFinished = { type: 'ExecutionFinished'; data: {
  jobId: string; executionId: string; status: FinalStatus; exitCode: number | null; errorMessage: string | null;
  finishedAt: string; durationSeconds: number | null; stdout: OutputSummary; stderr: OutputSummary;
} };
export type JobCancelled = { type: 'JobCancelled'; data: { jobId: string; at: string } };
export type JobEvent = JobCreated | ExecutionStarted | ExecutionFinished | JobCancelled;

export type JobCommand =
  | { type: 'CreateJob'; data: JobCreated['data'] }
  | { type: 'StartExecution'; data: ExecutionStarted['data'] }
  | { type: 'FinishExecution'; data: ExecutionFinished['data'] }
  /**
   * The runner's starts and ends of several executions of one job at once: one append
   * instead of one per execution. A start the job no longer wants (cancelled, not pending)
   * and an end of an execution already ended are left out, not refused.
   */
  | { type: 'RecordExecutions'; data: { jobId: string; starts: ExecutionStarted['data'][]; finishes: ExecutionFinished['data'][] } }
  | { type: 'CancelJob'; data: { jobId: string; at: string } };

export type JobState =
  | { status: 'none' }
  | { status: 'exists'; jobId: string; project: string; cancelled: boolean; executions: Record<string, ExecutionStatus> };

export const jobStream = (jobId: string): string => `job-${jobId}`;

export const isFinal = (s: ExecutionStatus): s is FinalStatus => s !== 'pending' && s !== 'running';

/** A job's status from its executions: running while any runs, then failed if any did not complete. */
export const jobStatusOf = (statuses: readonly ExecutionStatus[], cancelled: boolean): JobStatus => {
  if (statuses.some((s) => s === 'running')) return 'running';
  if (statuses.some((s) => s === 'pending')) return cancelled ? 'cancelled' : statuses.some(isFinal) ? 'running' : 'pending';
  if (cancelled) return 'cancelled';
  return statuses.every((s) => s === 'completed') ? 'completed' : 'failed';
};

const existingJob = (state: JobState, jobId: string) => {
  if (state.status !== 'exists') throw new DomainError('JOB_NOT_FOUND', `job ${jobId} not found`);
  return state;
};

const emptyOutput: OutputSummary = { bytes: 0, truncated: false };

export const jobDecider: Decider<JobState, JobCommand, JobEvent> = {
  initialState: () => ({ status: 'none' }),
  evolve(state, event) {
    switch (event.type) {
      case 'JobCreated':
        return { status: 'exists', jobId: event.data.jobId, project: event.data.project, cancelled: false,
          executions: Object.fromEntries(event.data.targets.map((t) => [t.executionId, 'pending' as ExecutionStatus])) };
      case 'ExecutionStarted':
        return state.status === 'none' ? state : { ...state, executions: { ...state.executions, [event.data.executionId]: 'running' } };
      case 'ExecutionFinished':
        return state.status === 'none' ? state : { ...state, executions: { ...state.executions, [event.data.executionId]: event.data.status } };
      case 'JobCancelled':
        return state.status === 'none' ? state : { ...state, cancelled: true };
      default: { const _never: never = event; return _never; }
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'CreateJob':
        if (state.status !== 'none') throw new DomainError('JOB_EXISTS', `job ${command.data.jobId} exists`);
        if (command.data.targets.length === 0) throw new DomainError('NO_TARGETS', 'the job has no systems to run on');
        return [{ type: 'JobCreated', data: command.data }];
      case 'StartExecution': {
        const job = existingJob(state, command.data.jobId);
        const current = job.executions[command.data.executionId];
        if (current === undefined) throw new DomainError('EXECUTION_NOT_FOUND', `execution ${command.data.executionId} not found`);
        if (job.cancelled) throw new DomainError('JOB_CANCELLED', `job ${job.jobId} was cancelled`);
        if (current !== 'pending') throw new DomainError('EXECUTION_NOT_PENDING', `execution ${command.data.executionId} is ${current}`);
        return [{ type: 'ExecutionStarted', data: command.data }];
      }
      case 'FinishExecution': {
        const job = existingJob(state, command.data.jobId);
        const current = job.executions[command.data.executionId];
        if (current === undefined) throw new DomainError('EXECUTION_NOT_FOUND', `execution ${command.data.executionId} not found`);
        if (isFinal(current)) return []; // already ended (a cancel got there first): nothing to add
        return [{ type: 'ExecutionFinished', data: command.data }];
      }
      case 'RecordExecutions': {
        const job = existingJob(state, command.data.jobId);
        const status = { ...job.executions };
        const out: JobEvent[] = [];
        for (const start of command.data.starts) {
          if (job.cancelled || status[start.executionId] !== 'pending') continue;
          status[start.executionId] = 'running';
          out.push({ type: 'ExecutionStarted', data: start });
        }
        for (const finish of command.data.finishes) {
          const current = status[finish.executionId];
          if (current === undefined || isFinal(current)) continue;
          status[finish.executionId] = finish.status;
          out.push({ type: 'ExecutionFinished', data: finish });
        }
        return out;
      }
      case 'CancelJob': {
        const job = existingJob(state, command.data.jobId);
        const open = Object.entries(job.executions).filter(([, s]) => !isFinal(s));
        if (job.cancelled || open.length === 0) throw new DomainError('JOB_FINISHED', `job ${job.jobId} has already ended`);
        // Pending executions end here; running ones end when the runner has killed them.
        return [
          { type: 'JobCancelled', data: command.data },
          ...open.filter(([, s]) => s === 'pending').map(([executionId]): ExecutionFinished => ({ type: 'ExecutionFinished', data: {
            jobId: job.jobId, executionId, status: 'cancelled', exitCode: null, errorMessage: 'cancelled before it started',
            finishedAt: command.data.at, durationSeconds: null, stdout: emptyOutput, stderr: emptyOutput,
          } })),
        ];
      }
      default: { const _never: never = command; return _never; }
    }
  },
};

// ---- job templates ---------------------------------------------------------------------

export type ParameterType = 'string' | 'integer' | 'boolean' | 'enum';
export type TemplateParameter = {
  name: string; type: ParameterType; required: boolean; default: string | number | boolean | null;
  /** enum: the allowed values. */ values: string[] | null;
  description: string | null;
};
export type Overlap = 'allow' | 'skip' | 'queue';
export type TemplateTargets = { systemIds: string[] } | { labels: Record<string, string> };
export type TemplateFields = {
  name: string; project: string; command: string; parameters: TemplateParameter[]; targets: TemplateTargets;
  cron: string | null; timezone: string; overlap: Overlap; timeoutSeconds: number; maxParallel: number | null;
};
export type TemplateCreated = { type: 'TemplateCreated'; data: { templateId: string } & TemplateFields };
export type TemplateUpdated = { type: 'TemplateUpdated'; data: { templateId: string } & Partial<Omit<TemplateFields, 'project'>> };
export type TemplateDeleted = { type: 'TemplateDeleted'; data: { templateId: string; project: string } };
/** A scheduled run that did not start: the overlap policy `skip` with a run still going, or no target left. */
export type TemplateRunSkipped = { type: 'TemplateRunSkipped'; data: { templateId: string; dueAt: string; reason: string } };
export type TemplateEvent = TemplateCreated | TemplateUpdated | TemplateDeleted | TemplateRunSkipped;

export type TemplateCommand =
  | { type: 'CreateTemplate'; data: TemplateCreated['data'] }
  | { type: 'UpdateTemplate'; data: TemplateUpdated['data'] }
  | { type: 'DeleteTemplate'; data: { templateId: string } }
  | { type: 'SkipTemplateRun'; data: TemplateRunSkipped['data'] };

export type TemplateState = { status: 'none' } | ({ status: 'active' | 'deleted'; templateId: string } & TemplateFields);

export const templateStream = (templateId: string): string => `job-template-${templateId}`;

const liveTemplate = (state: TemplateState, templateId: string) => {
  if (state.status !== 'active') throw new DomainError('TEMPLATE_NOT_FOUND', `job template ${templateId} not found`);
  return state;
};

export const templateDecider: Decider<TemplateState, TemplateCommand, TemplateEvent> = {
  initialState: () => ({ status: 'none' }),
  evolve(state, event) {
    switch (event.type) {
      case 'TemplateCreated': {
        const { templateId, ...fields } = event.data;
        return { status: 'active', templateId, ...fields };
      }
      case 'TemplateUpdated': {
        if (state.status === 'none') return state;
        const { templateId: _id, ...changes } = event.data;
        return { ...state, ...changes };
      }
      case 'TemplateDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      case 'TemplateRunSkipped':
        return state;
      default: { const _never: never = event; return _never; }
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'CreateTemplate':
        if (state.status !== 'none') throw new DomainError('TEMPLATE_EXISTS', `job template ${command.data.templateId} exists`);
        return [{ type: 'TemplateCreated', data: command.data }];
      case 'UpdateTemplate': {
        const t = liveTemplate(state, command.data.templateId);
        const { templateId, ...changes } = command.data;
        const changed = Object.fromEntries(Object.entries(changes).filter(([k, v]) => v !== undefined && !sameJson(t[k as keyof TemplateFields], v)));
        return Object.keys(changed).length === 0 ? [] : [{ type: 'TemplateUpdated', data: { templateId, ...changed } }];
      }
      case 'DeleteTemplate': {
        const t = liveTemplate(state, command.data.templateId);
        return [{ type: 'TemplateDeleted', data: { templateId: t.templateId, project: t.project } }];
      }
      case 'SkipTemplateRun':
        liveTemplate(state, command.data.templateId);
        return [{ type: 'TemplateRunSkipped', data: command.data }];
      default: { const _never: never = command; return _never; }
    }
  },
};

/** `{{name}}` placeholders in a template's command. */
export const PLACEHOLDER = /\{\{\s*([a-z][a-z0-9_]{0,62})\s*\}\}/g;

/** Placeholders the command uses that are not declared parameters (a template refuses them). */
export const undeclaredPlaceholders = (command: string, parameters: readonly TemplateParameter[]): string[] => {
  const declared = new Set(parameters.map((p) => p.name));
  return [...new Set([...command.matchAll(PLACEHOLDER)].map((m) => m[1]!))].filter((n) => !declared.has(n));
};
