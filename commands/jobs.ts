// Job command endpoints (SPEC §6): create-job (one execution per target system, now or at
// `schedule_at`) and cancel. The runner (workers/jobRunner.ts) does the rest.
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import { z } from 'zod';
import { DomainError } from '../domain/domainError.ts';
import { jobDecider, jobStream, type JobCreated } from '../domain/jobs.ts';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { requirePrincipal, requireProjectAccess, requireResourceAccess } from '../infra/auth/authenticate.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid, ValidationError } from '../infra/http/validate.ts';
import { commandContext, PlainText, settle, type CommandKit, answerResource } from './commandRoute.ts';
import { type CommandContext, streamCommandRunner } from './handleCommand.ts';
import { jobEventSchemas } from './jobSchemas.ts';
import { Labels } from './monitoringSchemas.ts';
import { requireProject } from './nodes.ts';
import type { SystemRow } from './systems.ts';

type Routes = ReturnType<typeof bindRoutes>;

export type Selector = { systemIds: string[] } | { labels: Record<string, string> };

export type JobViews = {
  job(id: string): Promise<{ view: unknown; revision: bigint; project: string } | null>;
  systemsMatching(project: string, selector: { systemIds?: string[]; labels?: Record<string, string> }): Promise<{ found: SystemRow[]; missing: string[] }>;
  projectExists(slug: string): Promise<boolean>;
  schemas: { Job: z.ZodType };
};

export type JobCommandDeps = CommandKit & { views: JobViews };

export const DEFAULT_JOB_TIMEOUT_SECONDS = 3600;
/** How far in the past a `schedule_at` may be (clock skew, a slow request) before it is refused. */
const SCHEDULE_SKEW_MS = 60_000;

const Command = z.string().min(1).max(100_000)
  .refine((c) => c.trim().length > 0, 'must not be empty')
  .refine((c) => !c.includes('\u0000'), 'must not contain NUL');
export const TargetBody = {
  system_ids: z.array(Uuid).min(1, 'needs at least one system').max(1000).optional(),
  selector: z.strictObject({ labels: Labels }).optional(),
};
const CreateJob = z.strictObject({
  name: PlainText(1, 100).optional(), command: Command, ...TargetBody,
  schedule_at: z.iso.datetime({ offset: true }).optional(),
  timeout_seconds: z.number().int().min(1).max(86_400).optional(),
  max_parallel: z.number().int().min(1).max(1000).optional(),
  project: Slug.default(DEFAULT_PROJECT),
});
const IdParams = z.object({ id: Uuid });

/** Exactly one of `system_ids` or `selector` (ValidationError otherwise). */
export const selectorOf = (body: { system_ids?: string[] | undefined; selector?: { labels: Record<string, string> } | undefined }): Selector => {
  if (body.system_ids && body.selector) throw new ValidationError([{ path: 'body.selector', message: 'give system_ids or selector, not both' }]);
  if (body.system_ids) return { systemIds: [...new Set(body.system_ids)] };
  if (body.selector) return { labels: body.selector.labels };
  throw new ValidationError([{ path: 'body.system_ids', message: 'give system_ids or selector' }]);
};

/** `schedule_at` as ISO, refused when it lies in the past. */
export const checkSchedule = (scheduleAt: string | undefined, nowMs: number): string | null => {
  if (!scheduleAt) return null;
  if (Date.parse(scheduleAt) < nowMs - SCHEDULE_SKEW_MS) {
    throw new ValidationError([{ path: 'body.schedule_at', message: 'is in the past' }], 'schedule_at is in the past');
  }
  return new Date(scheduleAt).toISOString();
};

export type NewJob = Omit<JobCreated['data'], 'jobId' | 'targets'> & { jobId?: string; selector: Selector };

export const jobCommandRunner = (store: CommandKit['store']) => streamCommandRunner(store, jobEventSchemas, jobDecider, jobStream);

/**
 * Resolves the targets (every id must be an active system of the project; a selector must
 * match at least one) and appends the job: one execution per system.
 */
export const createJob = async (deps: Pick<JobCommandDeps, 'store' | 'views'>, job: NewJob, ctx: CommandContext) => {
  const { jobId = randomUUID(), selector, ...fields } = job;
  const { found, missing } = await deps.views.systemsMatching(job.project, selector);
  if ('systemIds' in selector && missing.length > 0) {
    throw new ValidationError(missing.map((id) => ({ path: `body.system_ids[${selector.systemIds.indexOf(id)}]`, message: `no active system ${id} in project ${job.project}` })),
      `${missing.length} of the systems do not exist, are not in project ${job.project}, or are inactive`);
  }
  if (found.length === 0) throw new DomainError('NO_TARGETS', 'the selector matches no active system');
  const targets = found.map((s) => ({ executionId: randomUUID(), systemId: s.id, systemName: s.name }));
  const result = await jobCommandRunner(deps.store)(jobId, { type: 'CreateJob', data: { jobId, targets, ...fields } }, ctx);
  return { jobId, result };
};

const jobNotFound = (id: string) => new DomainError('JOB_NOT_FOUND', `job ${id} not found`);

export const jobCommandRoutes = (routes: Routes, deps: JobCommandDeps): void => {
  const answer = async (res: Response, id: string, status: number) =>
    answerResource(res, await deps.views.job(id), { status, location: `/api/v1/jobs/${id}`, notFound: () => jobNotFound(id) });

  routes.post({
    path: '/jobs', summary: 'Run a command on systems (now or at schedule_at)', tags: ['jobs'], auth: true,
    description: 'Needs jobs:run. One execution per target: `system_ids`, or `selector: {labels}` (active systems of the project). '
      + 'Unknown or inactive ids, an empty command or a `schedule_at` in the past are refused with nothing written.',
    body: CreateJob, responses: { 201: { body: deps.views.schemas.Job, headers: { Location: 'the new job' } } },
  }, async ({ body }, req, res) => {
    const principal = requireProjectAccess(res, body.project, 'jobs:run');
    await requireProject(deps.views, body.project);
    const scheduleAt = checkSchedule(body.schedule_at, Date.now());
    const { jobId, result } = await createJob(deps, {
      name: body.name ?? body.command.trim().split('\n')[0]!.slice(0, 100), command: body.command, project: body.project,
      selector: selectorOf(body), scheduleAt, timeoutSeconds: body.timeout_seconds ?? DEFAULT_JOB_TIMEOUT_SECONDS,
      maxParallel: body.max_parallel ?? null, createdBy: principal.userId, templateId: null, params: null, queuedBehind: null,
    }, commandContext(req, res, body.project));
    await settle(deps, res, [result]);
    await answer(res, jobId, 201);
  });

  routes.post({
    path: '/jobs/:id/cancel', summary: 'Cancel a job', tags: ['jobs'], auth: true, idempotent: false,
    description: 'Needs jobs:run. Pending executions end as `cancelled` at once; running ones when their remote process has been killed (moments later).',
    params: IdParams, responses: { 200: { body: deps.views.schemas.Job }, 404: 'no such job (or not visible to you)', 409: 'the job has already ended' },
  }, async ({ params }, req, res) => {
    const principal = requirePrincipal(res);
    const found = await deps.views.job(params.id);
    if (!found) throw jobNotFound(params.id);
    requireResourceAccess(principal, found.project, 'jobs:run', () => jobNotFound(params.id));
    const result = await jobCommandRunner(deps.store)(params.id, { type: 'CancelJob', data: { jobId: params.id, at: new Date().toISOString() } },
      commandContext(req, res, found.project));
    await settle(deps, res, [result]);
    await answer(res, params.id, 200);
  });
};
