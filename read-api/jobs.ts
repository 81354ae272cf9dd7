// GET endpoints of jobs (SPEC §6): SSH systems, jobs with their executions and output,
// job templates, and the dashboard. Thin queries over the jobs read models
// (projections/jobs.ts) and the runner's output store; a system, job or template in a
// project the caller cannot read answers 404 like a missing one. No view ever holds a
// credential or its vault reference.
import { sql, type Kysely, type Selectable } from 'kysely';
import { z } from 'zod';
import { AppError } from '../infra/errors.ts';
import { requirePrincipal } from '../infra/auth/authenticate.ts';
import { can, visibleProjects } from '../infra/auth/authorize.ts';
import type { Principal } from '../infra/auth/principal.ts';
import { nextCronRun } from '../infra/cron.ts';
import type { JobTemplatesTable, SystemsTable, Tables } from '../infra/db/tables.ts';
import { setEtag } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { CursorPageOf, cursorPage, Limit, page, PageOf, Pagination, Slug, Uuid } from '../infra/http/validate.ts';
import { inProjects, LabelFilter, parseLabels } from './monitoring.ts';
import { projectExists } from './projects.ts';

type Routes = ReturnType<typeof bindRoutes>;
const Time = z.iso.datetime();
const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

// The statuses of domain/jobs.ts (read-api may not import domain/).
export const EXECUTION_STATUSES = ['pending', 'running', 'completed', 'failed', 'timeout', 'cancelled', 'interrupted'] as const;
export const JOB_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
const ExecutionStatus = z.enum(EXECUTION_STATUSES);
const JobStatus = z.enum(JOB_STATUSES);
type ExecutionStatus = z.output<typeof ExecutionStatus>;

/** How much of each stream GET /jobs/{id} inlines per execution (characters); the rest is behind …/output. */
export const INLINE_OUTPUT_CHARS = 65_536;

const Labels = z.record(z.string(), z.string());
const ParamValue = z.union([z.string(), z.number(), z.boolean()]);

// ---- views -----------------------------------------------------------------------------

export const SystemView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), hostname: z.string(), port: z.number().int(),
  system_type: z.enum(['linux', 'windows']), username: z.string(),
  auth_type: z.enum(['password', 'private_key']).meta({ description: 'how it logs in; the credential itself is write-only' }),
  description: z.string().nullable(), labels: Labels, is_active: z.boolean(),
  health_status: z.enum(['healthy', 'unhealthy', 'unknown']), last_health_check: Time.nullable(), response_time_ms: z.number().nullable(),
  last_error: z.string().nullable(),
  host_key_fingerprint: z.string().nullable().meta({ description: 'pinned on the first successful connection (null: not yet, or cleared)' }),
  created_at: Time, updated_at: Time,
}).meta({ id: 'System' });
export type SystemView = z.output<typeof SystemView>;

const Counts = z.strictObject({
  total: z.number().int(), pending: z.number().int(), running: z.number().int(), completed: z.number().int(), failed: z.number().int(),
  timeout: z.number().int(), cancelled: z.number().int(), interrupted: z.number().int(),
}).meta({ description: 'the job’s executions by status' });

export const JobView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), command: z.string(), status: JobStatus,
  schedule_at: Time.nullable(), timeout_seconds: z.number().int(), max_parallel: z.number().int().nullable(),
  created_by: z.uuid().nullable(), template_id: z.uuid().nullable(), params: z.record(z.string(), ParamValue).nullable(),
  queued_behind: z.uuid().nullable().meta({ description: 'overlap policy `queue`: the job this one waits for' }),
  created_at: Time, started_at: Time.nullable(), finished_at: Time.nullable(), counts: Counts,
}).meta({ id: 'Job' });
export type JobView = z.output<typeof JobView>;

export const ExecutionView = z.strictObject({
  id: z.uuid(), system_id: z.uuid(), system_name: z.string(), status: ExecutionStatus,
  started_at: Time.nullable(), completed_at: Time.nullable(), exit_code: z.number().int().nullable(),
  stdout: z.string().meta({ description: 'the first 64 KiB (65536 characters) of the stored stdout; the whole is at …/output?stream=stdout' }),
  stderr: z.string().meta({ description: 'the first 64 KiB (65536 characters) of the stored stderr' }),
  stdout_truncated: z.boolean().meta({ description: 'the remote wrote more than MAX_OUTPUT_BYTES: the stored output ends with a marker' }),
  stderr_truncated: z.boolean(), stdout_bytes: z.number().int(), stderr_bytes: z.number().int(),
  error_message: z.string().nullable(), duration_seconds: z.number().nullable(),
}).meta({ id: 'Execution' });
export type ExecutionView = z.output<typeof ExecutionView>;

export const JobDetailsView = JobView.extend({ executions: z.array(ExecutionView) }).meta({ id: 'JobDetails' });
export type JobDetailsView = z.output<typeof JobDetailsView>;

export const OutputChunkView = z.strictObject({ seq: z.number().int(), data: z.string() }).meta({ id: 'OutputChunk' });

export const TemplateParameterView = z.strictObject({
  name: z.string(), type: z.enum(['string', 'integer', 'boolean', 'enum']), required: z.boolean(),
  default: ParamValue.nullable(), values: z.array(z.string()).nullable().meta({ description: 'enum: the allowed values' }),
  description: z.string().nullable(),
}).meta({ id: 'TemplateParameter' });

export const TemplateView = z.strictObject({
  id: z.uuid(), name: z.string(), project: z.string(), command: z.string(), parameters: z.array(TemplateParameterView),
  system_ids: z.array(z.uuid()).optional().meta({ description: 'the target systems (either this or `selector`)' }),
  selector: z.strictObject({ labels: Labels }).optional().meta({ description: 'targets: every active system with these labels at run time' }),
  cron: z.string().nullable(), timezone: z.string(), overlap: z.enum(['allow', 'skip', 'queue']),
  timeout_seconds: z.number().int(), max_parallel: z.number().int().nullable(),
  last_run_at: Time.nullable(), next_run_at: Time.nullable().meta({ description: 'the next time the cron schedule fires (null: no schedule)' }),
  created_at: Time, updated_at: Time,
}).meta({ id: 'JobTemplate' });
export type TemplateView = z.output<typeof TemplateView>;

const Int = z.number().int();
export const DashboardView = z.strictObject({
  user: z.strictObject({ id: z.uuid(), username: z.string(), role: z.enum(['admin', 'user']) }),
  systems: z.strictObject({ total: Int, active: Int, healthy: Int, linux: Int, windows: Int }),
  jobs: z.strictObject({ total: Int, pending: Int, running: Int, completed: Int, failed: Int })
    .meta({ description: 'cancelled jobs count in `total` only' }),
  executions: z.strictObject({
    total: Int, pending: Int, running: Int, completed: Int,
    failed: Int.meta({ description: 'failed, timed out or interrupted' }),
    average_duration: z.number().meta({ description: 'seconds, over the finished executions that have a duration (0: none yet)' }),
  }),
  engine: z.strictObject({ status: z.string(), running_jobs: Int, available_slots: Int }),
}).meta({ id: 'Dashboard', description: 'Over the projects where you may read systems (systems) and jobs (jobs, executions)' });
export type DashboardView = z.output<typeof DashboardView>;

// ---- rows → views ----------------------------------------------------------------------

export type SystemRow = Selectable<SystemsTable>;
export type TemplateRow = Selectable<JobTemplatesTable>;
type JobRow = Selectable<Tables['jobs']>;
type ExecutionRow = Selectable<Tables['job_executions']>;

const toSystemView = (r: SystemRow): SystemView => ({
  id: r.id, name: r.name, project: r.project, hostname: r.hostname, port: r.port, system_type: r.system_type as SystemView['system_type'],
  username: r.username, auth_type: r.auth_kind as SystemView['auth_type'], description: r.description, labels: r.labels as Record<string, string>,
  is_active: r.is_active, health_status: r.health_status as SystemView['health_status'], last_health_check: iso(r.last_health_check),
  response_time_ms: r.response_time_ms, last_error: r.last_error, host_key_fingerprint: r.host_key_fingerprint,
  created_at: iso(r.created_at)!, updated_at: iso(r.updated_at)!,
});

const emptyCounts = (): JobView['counts'] =>
  ({ total: 0, pending: 0, running: 0, completed: 0, failed: 0, timeout: 0, cancelled: 0, interrupted: 0 });

const toJobView = (r: JobRow, counts: JobView['counts']): JobView => ({
  id: r.id, name: r.name, project: r.project, command: r.command, status: r.status as JobView['status'],
  schedule_at: iso(r.schedule_at), timeout_seconds: r.timeout_seconds, max_parallel: r.max_parallel, created_by: r.created_by,
  template_id: r.template_id, params: (r.params ?? null) as JobView['params'], queued_behind: r.queued_behind,
  created_at: iso(r.created_at)!, started_at: iso(r.started_at), finished_at: iso(r.finished_at), counts,
});

const toExecutionView = (r: ExecutionRow, output: { stdout?: string; stderr?: string }): ExecutionView => ({
  id: r.id, system_id: r.system_id, system_name: r.system_name, status: r.status as ExecutionStatus,
  started_at: iso(r.started_at), completed_at: iso(r.completed_at), exit_code: r.exit_code,
  stdout: output.stdout ?? '', stderr: output.stderr ?? '', stdout_truncated: r.stdout_truncated, stderr_truncated: r.stderr_truncated,
  stdout_bytes: Number(r.stdout_bytes), stderr_bytes: Number(r.stderr_bytes), error_message: r.error_message, duration_seconds: r.duration_seconds,
});

const toTemplateView = (r: TemplateRow, now: Date): TemplateView => {
  const targets = r.targets as { systemIds?: string[]; labels?: Record<string, string> };
  let next: Date | null = null;
  if (r.cron) {
    try {
      next = nextCronRun(r.cron, r.timezone, now);
    } catch {
      next = null; // validated when written; a zone that vanished from the tz database must not break the list
    }
  }
  return {
    id: r.id, name: r.name, project: r.project, command: r.command, parameters: r.parameters as TemplateView['parameters'],
    ...(targets.systemIds ? { system_ids: targets.systemIds } : { selector: { labels: targets.labels ?? {} } }),
    cron: r.cron, timezone: r.timezone, overlap: r.overlap as TemplateView['overlap'], timeout_seconds: r.timeout_seconds,
    max_parallel: r.max_parallel, last_run_at: iso(r.last_run_at), next_run_at: iso(next),
    created_at: iso(r.created_at)!, updated_at: iso(r.updated_at)!,
  };
};

// ---- filters ---------------------------------------------------------------------------

/** `key=value` (or `key:value`) label filters, as for nodes. */

export const SystemFilters = Pagination.extend({
  project: Slug.optional(),
  active: z.enum(['true', 'false']).optional().meta({ description: 'only active (true) or inactive (false) systems' }),
  system_type: z.enum(['linux', 'windows']).optional(),
  label: z.union([LabelFilter, z.array(LabelFilter).max(20)]).optional().meta({ description: 'key=value; repeat for several (all must match)' }),
});
type SystemFilters = z.output<typeof SystemFilters>;

export const JobFilters = Pagination.extend({ project: Slug.optional(), status: JobStatus.optional(), created_by: Uuid.optional() });
type JobFilters = z.output<typeof JobFilters>;

export const OutputQuery = z.strictObject({
  stream: z.enum(['stdout', 'stderr']).default('stdout'),
  limit: Limit.meta({ description: 'chunks per page (default 50, max 500)' }),
  cursor: z.string().min(1).max(200).optional(),
});

/** Output cursor, opaque to clients: the seq of the last chunk handed out. */
const encodeCursor = (seq: number) => Buffer.from(`o:${seq}`).toString('base64url');
const decodeCursor = (cursor: string): number => {
  const m = /^o:(-1|\d{1,10})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw new AppError('VALIDATION_FAILED', 'cursor is not one this API handed out');
  return Number(m[1]);
};

const countBy = <K extends string>(rows: readonly { k: string | null; n: string | number | bigint }[]): Partial<Record<K, number>> =>
  Object.fromEntries(rows.map((r) => [r.k ?? '', Number(r.n)])) as Partial<Record<K, number>>;

// ---- queries ---------------------------------------------------------------------------

export type TargetSelector = { systemIds?: readonly string[] | undefined; labels?: Readonly<Record<string, string>> | undefined };

export const jobQueries = (db: Kysely<Tables>, opts: { now?: () => Date } = {}) => {
  const now = opts.now ?? (() => new Date());

  const systemsIn = (projects: readonly string[] | 'all') => {
    let q = db.selectFrom('systems').where('deleted', '=', false);
    if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
    return q;
  };
  const jobsIn = (projects: readonly string[] | 'all') => {
    let q = db.selectFrom('jobs');
    if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
    return q;
  };
  const templatesIn = (projects: readonly string[] | 'all') => {
    let q = db.selectFrom('job_templates').where('deleted', '=', false);
    if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
    return q;
  };

  /** Executions by status, per job. */
  const countsOf = async (jobIds: readonly string[]): Promise<Map<string, JobView['counts']>> => {
    const out = new Map(jobIds.map((id) => [id, emptyCounts()]));
    if (jobIds.length === 0) return out;
    const rows = await db.selectFrom('job_executions').select(['job_id', 'status', (eb) => eb.fn.countAll<string>().as('n')])
      .where('job_id', 'in', [...jobIds]).groupBy(['job_id', 'status']).execute();
    for (const r of rows) {
      const c = out.get(r.job_id)!;
      const n = Number(r.n);
      c.total += n;
      if (r.status in c) c[r.status as ExecutionStatus] += n;
    }
    return out;
  };

  /**
   * The first INLINE_OUTPUT_CHARS characters of each stream of these executions. Only the
   * chunks that start before the cut are aggregated, so a 1 MiB output is not read whole.
   */
  const inlineOutput = async (executionIds: readonly string[]): Promise<Map<string, { stdout?: string; stderr?: string }>> => {
    const out = new Map<string, { stdout?: string; stderr?: string }>();
    if (executionIds.length === 0) return out;
    const { rows } = await sql<{ execution_id: string; stream: string; data: string }>`
      select execution_id, stream, left(string_agg(data, '' order by seq), ${INLINE_OUTPUT_CHARS}::int) as data
      from (
        select execution_id, stream, seq, data,
          sum(length(data)) over (partition by execution_id, stream order by seq) - length(data) as before
        from execution_output
        where execution_id in (${sql.join(executionIds.map((id) => sql`${id}::uuid`))})
      ) o
      where before < ${INLINE_OUTPUT_CHARS}
      group by execution_id, stream`.execute(db);
    for (const r of rows) {
      const entry = out.get(r.execution_id) ?? {};
      if (r.stream === 'stdout' || r.stream === 'stderr') entry[r.stream] = r.data;
      out.set(r.execution_id, entry);
    }
    return out;
  };

  const queries = {
    /** The view schemas, for the command routes’ responses. */
    schemas: { System: SystemView, Job: JobView, JobDetails: JobDetailsView, Template: TemplateView },

    projectExists: (slug: string): Promise<boolean> => projectExists(db, slug),

    /** A system that is not deleted; `row` is for the commands and the runner (holds the credential reference: never answer it). */
    async system(id: string): Promise<{ view: SystemView; revision: bigint; project: string; row: SystemRow } | null> {
      const r = await db.selectFrom('systems').selectAll().where('id', '=', id).where('deleted', '=', false).executeTakeFirst();
      return r ? { view: toSystemView(r), revision: BigInt(r.revision), project: r.project, row: r } : null;
    },

    async listSystems(principal: Principal, f: SystemFilters) {
      let q = systemsIn(visibleProjects(principal, 'systems:read', f.project));
      if (f.active) q = q.where('is_active', '=', f.active === 'true');
      if (f.system_type) q = q.where('system_type', '=', f.system_type);
      const labels = parseLabels(f.label);
      if (Object.keys(labels).length > 0) q = q.where(sql<boolean>`labels @> ${JSON.stringify(labels)}::jsonb`);
      const [rows, count] = await Promise.all([
        q.selectAll().orderBy('project').orderBy('name').orderBy('id').limit(f.limit).offset(f.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      return page(rows.map(toSystemView), count.n, f);
    },

    /**
     * The active, not deleted systems of `project` a job would run on: by id (in the order
     * given; ids that are unknown, deleted, inactive or of another project are `missing`)
     * or else by labels (all must match; by name).
     */
    async systemsMatching(project: string, selector: TargetSelector): Promise<{ found: SystemRow[]; missing: string[] }> {
      const base = db.selectFrom('systems').selectAll().where('project', '=', project).where('deleted', '=', false).where('is_active', '=', true);
      if (selector.systemIds) {
        const ids = [...new Set(selector.systemIds.map((id) => id.toLowerCase()))];
        if (ids.length === 0) return { found: [], missing: [] };
        const rows = await base.where('id', 'in', ids).execute();
        const byId = new Map(rows.map((r) => [r.id, r]));
        return { found: ids.flatMap((id) => byId.get(id) ?? []), missing: ids.filter((id) => !byId.has(id)) };
      }
      if (selector.labels) {
        const rows = await base.where(sql<boolean>`labels @> ${JSON.stringify(selector.labels)}::jsonb`).orderBy('name').orderBy('id').execute();
        return { found: rows, missing: [] };
      }
      return { found: [], missing: [] };
    },

    async job(id: string): Promise<{ view: JobDetailsView; revision: bigint; project: string } | null> {
      const r = await db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
      if (!r) return null;
      const executions = await db.selectFrom('job_executions').selectAll().where('job_id', '=', id).orderBy('ord').execute();
      const output = await inlineOutput(executions.map((e) => e.id));
      const counts = emptyCounts();
      for (const e of executions) {
        counts.total += 1;
        if (e.status in counts) counts[e.status as ExecutionStatus] += 1;
      }
      return {
        view: { ...toJobView(r, counts), executions: executions.map((e) => toExecutionView(e, output.get(e.id) ?? {})) },
        revision: BigInt(r.revision), project: r.project,
      };
    },

    async listJobs(principal: Principal, f: JobFilters) {
      let q = jobsIn(visibleProjects(principal, 'jobs:read', f.project));
      if (f.status) q = q.where('status', '=', f.status);
      if (f.created_by) q = q.where('created_by', '=', f.created_by);
      const [rows, count] = await Promise.all([
        q.selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').limit(f.limit).offset(f.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      const counts = await countsOf(rows.map((r) => r.id));
      return page(rows.map((r) => toJobView(r, counts.get(r.id)!)), count.n, f);
    },

    /** A job's project, without its executions (cheap: for authorization). */
    async jobRef(id: string): Promise<{ jobId: string; project: string; status: string } | null> {
      const r = await db.selectFrom('jobs').select(['id', 'project', 'status']).where('id', '=', id).executeTakeFirst();
      return r ? { jobId: r.id, project: r.project, status: r.status } : null;
    },

    /** The execution's job and status, if it is one of `jobId`'s. */
    async execution(jobId: string, executionId: string): Promise<{ jobId: string; project: string; status: ExecutionStatus } | null> {
      const r = await db.selectFrom('job_executions').select(['job_id', 'project', 'status'])
        .where('id', '=', executionId).where('job_id', '=', jobId).executeTakeFirst();
      return r ? { jobId: r.job_id, project: r.project, status: r.status as ExecutionStatus } : null;
    },

    /**
     * One page of an execution's stored output, oldest first. `next_cursor` is set while
     * there is more, and also at the end while the execution still runs (poll it for new
     * chunks); null once the output is complete.
     */
    async output(executionId: string, stream: 'stdout' | 'stderr', limit: number, cursor: string | undefined, running: boolean) {
      const after = cursor === undefined ? -1 : decodeCursor(cursor);
      const rows = await db.selectFrom('execution_output').select(['seq', 'data'])
        .where('execution_id', '=', executionId).where('stream', '=', stream).where('seq', '>', after)
        .orderBy('seq').limit(limit + 1).execute();
      const items = rows.slice(0, limit);
      const last = items.at(-1)?.seq ?? after;
      const more = rows.length > limit;
      return cursorPage(items, limit, more || running ? encodeCursor(last) : null);
    },

    async template(id: string): Promise<{ view: TemplateView; revision: bigint; project: string; row: TemplateRow } | null> {
      const r = await db.selectFrom('job_templates').selectAll().where('id', '=', id).where('deleted', '=', false).executeTakeFirst();
      return r ? { view: toTemplateView(r, now()), revision: BigInt(r.revision), project: r.project, row: r } : null;
    },

    async listTemplates(principal: Principal, p: Pagination & { project?: string | undefined }) {
      const q = templatesIn(visibleProjects(principal, 'jobs:read', p.project));
      const [rows, count] = await Promise.all([
        q.selectAll().orderBy('project').orderBy('name').orderBy('id').limit(p.limit).offset(p.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      const t = now();
      return page(rows.map((r) => toTemplateView(r, t)), count.n, p);
    },

    /** The dashboard's counts, without `user` and `engine` (the route adds those). */
    async dashboardCounts(principal: Principal): Promise<Pick<DashboardView, 'systems' | 'jobs' | 'executions'>> {
      const jobProjects = visibleProjects(principal, 'jobs:read');
      let executions = db.selectFrom('job_executions');
      if (jobProjects !== 'all') executions = executions.where('project', 'in', inProjects(jobProjects));
      const [systems, jobs, execs, avg] = await Promise.all([
        systemsIn(visibleProjects(principal, 'systems:read')).select((eb) => [
          eb.fn.countAll<string>().as('total'),
          sql<string>`count(*) filter (where is_active)`.as('active'),
          sql<string>`count(*) filter (where health_status = 'healthy')`.as('healthy'),
          sql<string>`count(*) filter (where system_type = 'linux')`.as('linux'),
          sql<string>`count(*) filter (where system_type = 'windows')`.as('windows'),
        ]).executeTakeFirstOrThrow(),
        jobsIn(jobProjects).select(['status as k', (eb) => eb.fn.countAll<string>().as('n')]).groupBy('status').execute(),
        executions.select(['status as k', (eb) => eb.fn.countAll<string>().as('n')]).groupBy('status').execute(),
        executions.select(sql<number | string | null>`avg(duration_seconds)`.as('avg'))
          .where('status', 'in', ['completed', 'failed', 'timeout', 'cancelled', 'interrupted']).executeTakeFirstOrThrow(),
      ]);
      const j = countBy<string>(jobs);
      const e = countBy<string>(execs);
      const sum = (by: Partial<Record<string, number>>) => Object.values(by).reduce<number>((s, n) => s + (n ?? 0), 0);
      return {
        systems: {
          total: Number(systems.total), active: Number(systems.active), healthy: Number(systems.healthy),
          linux: Number(systems.linux), windows: Number(systems.windows),
        },
        jobs: { total: sum(j), pending: j.pending ?? 0, running: j.running ?? 0, completed: j.completed ?? 0, failed: j.failed ?? 0 },
        executions: {
          total: sum(e), pending: e.pending ?? 0, running: e.running ?? 0, completed: e.completed ?? 0,
          failed: (e.failed ?? 0) + (e.timeout ?? 0) + (e.interrupted ?? 0),
          average_duration: avg.avg === null ? 0 : Math.round(Number(avg.avg) * 1000) / 1000,
        },
      };
    },
  };
  return queries;
};

export type JobQueries = ReturnType<typeof jobQueries>;

// ---- routes ----------------------------------------------------------------------------

const IdParams = z.object({ id: Uuid });
const OutputParams = z.object({ id: Uuid, execution_id: Uuid });
const ProjectPage = Pagination.extend({ project: Slug.optional() });

const notFound = (what: string, id: string, code: string) => new AppError(code, `${what} ${id} not found`);

/** 404 unless the caller may do `permission` (a read) in `project`. */

export type JobReadDeps = {
  db: Kysely<Tables>;
  /** The job engine's state for the dashboard. */
  engine: () => { status: string; running_jobs: number; available_slots: number };
  now?: () => Date;
};

export const jobReadRoutes = (routes: Routes, deps: JobReadDeps): JobQueries => {
  const q = jobQueries(deps.db, deps.now ? { now: deps.now } : {});

  const requireJobRead = async (res: Parameters<typeof requirePrincipal>[0], id: string) => {
    const found = await q.job(id);
    if (!found || !can(requirePrincipal(res), 'jobs:read', found.project)) throw notFound('job', id, 'JOB_NOT_FOUND');
    return found;
  };

  // ---- systems

  routes.get({
    path: '/systems', summary: 'List SSH systems', tags: ['systems'], auth: true,
    description: 'The systems of the projects where you have systems:read. Filters: `project`, `active`, `system_type`, `label=key=value` (repeatable). Never shows credentials.',
    query: SystemFilters, responses: { 200: PageOf(SystemView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listSystems(requirePrincipal(res), query));
  });

  routes.get({
    path: '/systems/:id', summary: 'An SSH system', tags: ['systems'], auth: true,
    params: IdParams, responses: { 200: { body: SystemView, headers: { ETag: 'the system’s revision' } }, 404: 'no such system (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await q.system(params.id);
    if (!found || !can(requirePrincipal(res), 'systems:read', found.project)) throw notFound('system', params.id, 'SYSTEM_NOT_FOUND');
    setEtag(res, found.revision);
    res.json(found.view);
  });

  // ---- jobs

  routes.get({
    path: '/jobs', summary: 'List jobs, newest first', tags: ['jobs'], auth: true,
    description: 'The jobs of the projects where you have jobs:read. Filters: `project`, `status`, `created_by`.',
    query: JobFilters, responses: { 200: PageOf(JobView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listJobs(requirePrincipal(res), query));
  });

  routes.get({
    path: '/jobs/:id', summary: 'A job with its executions', tags: ['jobs'], auth: true,
    description: 'Each execution carries the first 64 KiB of its stdout and stderr; the whole output is at `/jobs/{id}/executions/{execution_id}/output`.',
    params: IdParams, responses: { 200: { body: JobDetailsView, headers: { ETag: 'the job’s revision' } }, 404: 'no such job (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await requireJobRead(res, params.id);
    setEtag(res, found.revision);
    res.json(found.view);
  });

  routes.get({
    path: '/jobs/:id/executions/:execution_id/output', summary: 'An execution’s stored output, oldest chunk first', tags: ['jobs'], auth: true,
    description: '`stream` (stdout by default); follow `next_cursor` for the next chunks. While the execution is pending or running, '
      + '`next_cursor` stays set at the end so that it can be polled for new output; it is null once the output is complete.',
    params: OutputParams, query: OutputQuery,
    responses: { 200: CursorPageOf(OutputChunkView), 404: 'no such job or execution (or not visible to you)' },
  }, async ({ params, query }, _req, res) => {
    const principal = requirePrincipal(res);
    const execution = await q.execution(params.id, params.execution_id);
    if (!execution || !can(principal, 'jobs:read', execution.project)) {
      // Say which one is missing only to a caller who may see the job.
      const job = execution ? null : await q.jobRef(params.id);
      if (job && can(principal, 'jobs:read', job.project)) throw notFound('execution', params.execution_id, 'EXECUTION_NOT_FOUND');
      throw notFound('job', params.id, 'JOB_NOT_FOUND');
    }
    const running = execution.status === 'pending' || execution.status === 'running';
    res.json(await q.output(params.execution_id, query.stream, query.limit, query.cursor, running));
  });

  // ---- templates

  routes.get({
    path: '/job-templates', summary: 'List job templates', tags: ['job-templates'], auth: true,
    description: 'The templates of the projects where you have jobs:read. Filter: `project`.',
    query: ProjectPage, responses: { 200: PageOf(TemplateView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listTemplates(requirePrincipal(res), query));
  });

  routes.get({
    path: '/job-templates/:id', summary: 'A job template and its next scheduled run', tags: ['job-templates'], auth: true,
    params: IdParams, responses: { 200: { body: TemplateView, headers: { ETag: 'the template’s revision' } }, 404: 'no such template (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await q.template(params.id);
    if (!found || !can(requirePrincipal(res), 'jobs:read', found.project)) throw notFound('job template', params.id, 'TEMPLATE_NOT_FOUND');
    setEtag(res, found.revision);
    res.json(found.view);
  });

  // ---- dashboard

  routes.get({
    path: '/dashboard', summary: 'Systems, jobs and executions at a glance, and the job engine’s state', tags: ['dashboard'], auth: true,
    description: 'Counts over the projects where you may read systems (systems) and jobs (jobs, executions). '
      + 'Job `failed` does not include cancelled jobs (they count in `total` only); execution `failed` includes timed-out and interrupted ones.',
    responses: { 200: DashboardView },
  }, async (_input, _req, res) => {
    const principal = requirePrincipal(res);
    const counts = await q.dashboardCounts(principal);
    const engine = deps.engine();
    res.json({
      user: { id: principal.userId, username: principal.username, role: principal.role },
      ...counts,
      engine: { status: engine.status, running_jobs: engine.running_jobs, available_slots: engine.available_slots },
    } satisfies DashboardView);
  });

  return q;
};
