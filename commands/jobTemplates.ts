// Job templates (SPEC §6, the origin's "satellites"): a command with typed `{{name}}`
// parameters, targets, and an optional cron schedule with an overlap policy. Running one
// creates a job whose command has every value shell-quoted (infra/shellQuote.ts); string
// values are also held to a plain alphabet, so shell syntax in a value is refused outright.
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import { z } from 'zod';
import { DomainError } from '../domain/domainError.ts';
import {
  PLACEHOLDER, templateDecider, templateStream, undeclaredPlaceholders,
  type TemplateParameter, type TemplateTargets,
} from '../domain/jobs.ts';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { requirePrincipal, requireProjectAccess, requireResourceAccess } from '../infra/auth/authenticate.ts';
import type { Principal } from '../infra/auth/principal.ts';
import { cronProblem } from '../infra/cron.ts';
import { withIfMatch } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid, ValidationError } from '../infra/http/validate.ts';
import { shellQuote } from '../infra/shellQuote.ts';
import { commandContext, PlainText, settle, type CommandKit, answerResource } from './commandRoute.ts';
import { type CommandContext, streamCommandRunner } from './handleCommand.ts';
import { checkSchedule, createJob, DEFAULT_JOB_TIMEOUT_SECONDS, selectorOf, TargetBody, type JobViews } from './jobs.ts';
import { jobEventSchemas } from './jobSchemas.ts';
import { requireProject } from './nodes.ts';

type Routes = ReturnType<typeof bindRoutes>;
type Value = string | number | boolean;

export type TemplateRow = {
  id: string; project: string; name: string; command: string; parameters: unknown; targets: unknown;
  timeout_seconds: number; max_parallel: number | null; overlap: string; cron: string | null; timezone: string;
};

export type TemplateViews = {
  template(id: string): Promise<{ view: unknown; revision: bigint; project: string; row: TemplateRow } | null>;
  schemas: { Template: z.ZodType };
};

export type TemplateCommandDeps = CommandKit & { views: TemplateViews; jobViews: JobViews };

/** What a string parameter may hold: no shell syntax at all (quoting is the second line of defence). */
export const SAFE_STRING = /^[A-Za-z0-9 _./:=@%+,-]*$/;

const ParamName = z.string().regex(/^[a-z][a-z0-9_]{0,62}$/, 'parameter names are lowercase letters, digits and underscores');
const ParameterBody = z.strictObject({
  name: ParamName, type: z.enum(['string', 'integer', 'boolean', 'enum']), required: z.boolean().optional(),
  default: z.union([z.string().max(1024), z.number().int(), z.boolean()]).nullable().optional(),
  values: z.array(z.string().min(1).max(200).regex(SAFE_STRING, 'enum values must be plain words')).min(1).max(100).optional(),
  description: PlainText(0, 500).optional(),
}).superRefine((p, ctx) => {
  if (p.type === 'enum' && !p.values) ctx.addIssue({ code: 'custom', path: ['values'], message: 'an enum parameter lists its values' });
  if (p.type !== 'enum' && p.values) ctx.addIssue({ code: 'custom', path: ['values'], message: 'only an enum parameter has values' });
}).meta({ id: 'TemplateParameter' });

const TemplateBody = {
  name: PlainText(1, 100),
  command: z.string().min(1).max(10_000).refine((c) => c.trim().length > 0 && !c.includes('\u0000'), 'must not be empty or hold NUL'),
  parameters: z.array(ParameterBody).max(50),
  ...TargetBody,
  cron: z.string().max(200).nullable(),
  timezone: z.string().min(1).max(64),
  overlap: z.enum(['allow', 'skip', 'queue']),
  timeout_seconds: z.number().int().min(1).max(86_400),
  max_parallel: z.number().int().min(1).max(1000).nullable(),
};
const CreateTemplate = z.strictObject({
  ...TemplateBody, project: Slug.default(DEFAULT_PROJECT), parameters: TemplateBody.parameters.default([]),
  cron: TemplateBody.cron.optional(), timezone: TemplateBody.timezone.default('UTC'), overlap: TemplateBody.overlap.default('allow'),
  timeout_seconds: TemplateBody.timeout_seconds.optional(), max_parallel: TemplateBody.max_parallel.optional(),
});
const UpdateTemplate = z.strictObject(Object.fromEntries(Object.entries(TemplateBody).map(([k, v]) => [k, v.optional()])) as {
  [K in keyof typeof TemplateBody]: z.ZodOptional<(typeof TemplateBody)[K]>
});
const RunTemplate = z.strictObject({
  params: z.record(z.string(), z.union([z.string().max(1024), z.number(), z.boolean()])).default({}),
  schedule_at: z.iso.datetime({ offset: true }).optional(),
});
const IdParams = z.object({ id: Uuid });

const toParameters = (ps: z.output<typeof ParameterBody>[]): TemplateParameter[] =>
  ps.map((p) => ({ name: p.name, type: p.type, required: p.required ?? p.default === undefined, default: p.default ?? null, values: p.values ?? null, description: p.description ?? null }));

/** A value of a parameter's type, or why not. */
const checkValue = (p: TemplateParameter, v: Value): string | null => {
  switch (p.type) {
    case 'string': return typeof v !== 'string' ? 'must be a string' : SAFE_STRING.test(v) ? null : 'may hold only letters, digits, spaces and _ . / : = @ % + , - (no shell syntax)';
    case 'integer': return Number.isSafeInteger(v) ? null : 'must be an integer';
    case 'boolean': return typeof v === 'boolean' ? null : 'must be true or false';
    case 'enum': return typeof v === 'string' && p.values!.includes(v) ? null : `must be one of ${p.values!.join(', ')}`;
    default: { const _never: never = p.type; return _never; }
  }
};

/** Checks a template's parameters, defaults and placeholders (400 naming each problem). */
const checkTemplate = (command: string, parameters: TemplateParameter[], cron: string | null | undefined, timezone: string) => {
  const errors: { path: string; message: string }[] = [];
  for (const name of undeclaredPlaceholders(command, parameters)) errors.push({ path: 'body.command', message: `{{${name}}} is not a declared parameter` });
  const seen = new Set<string>();
  parameters.forEach((p, i) => {
    if (seen.has(p.name)) errors.push({ path: `body.parameters[${i}].name`, message: `duplicate parameter ${p.name}` });
    seen.add(p.name);
    const problem = p.default === null ? null : checkValue(p, p.default);
    if (problem) errors.push({ path: `body.parameters[${i}].default`, message: problem });
  });
  if (cron) {
    const problem = cronProblem(cron, timezone);
    if (problem) errors.push({ path: /time zone/.test(problem) ? 'body.timezone' : 'body.cron', message: problem });
  } else if (cronProblem('0 0 * * *', timezone)) errors.push({ path: 'body.timezone', message: `unknown time zone ${timezone}` });
  if (errors.length > 0) throw new ValidationError(errors);
};

/** The command with every placeholder replaced by its shell-quoted value; 400 naming each bad or missing value. */
export const renderCommand = (command: string, parameters: readonly TemplateParameter[], given: Record<string, Value>) => {
  const errors: { path: string; message: string }[] = [];
  const byName = new Map(parameters.map((p) => [p.name, p]));
  for (const name of Object.keys(given)) if (!byName.has(name)) errors.push({ path: `body.params.${name}`, message: 'unknown parameter' });
  const values: Record<string, Value> = {};
  for (const p of parameters) {
    const v = given[p.name] ?? p.default;
    if (v === null || v === undefined) {
      if (p.required) errors.push({ path: `body.params.${p.name}`, message: 'is required' });
      continue;
    }
    const problem = checkValue(p, v);
    if (problem) errors.push({ path: `body.params.${p.name}`, message: problem });
    else values[p.name] = v;
  }
  if (errors.length > 0) throw new ValidationError(errors);
  const rendered = command.replace(PLACEHOLDER, (_m, name: string) => (values[name] === undefined ? "''" : shellQuote(String(values[name]))));
  return { command: rendered, params: values };
};

const templateNotFound = (id: string) => new DomainError('TEMPLATE_NOT_FOUND', `job template ${id} not found`);

export const templateCommandRunner = (store: CommandKit['store']) => streamCommandRunner(store, jobEventSchemas, templateDecider, templateStream);

/** Creates the job a template run makes (by hand or by the scheduler). */
export const runTemplate = async (
  deps: Pick<TemplateCommandDeps, 'store' | 'jobViews'>, row: TemplateRow,
  run: { params: Record<string, Value>; scheduleAt: string | null; createdBy: string | null; jobId?: string; queuedBehind: string | null },
  ctx: CommandContext,
) => {
  const parameters = row.parameters as TemplateParameter[];
  const { command, params } = renderCommand(row.command, parameters, run.params);
  return createJob({ store: deps.store, views: deps.jobViews }, {
    ...(run.jobId ? { jobId: run.jobId } : {}),
    name: row.name, command, project: row.project, selector: row.targets as TemplateTargets, scheduleAt: run.scheduleAt,
    timeoutSeconds: row.timeout_seconds, maxParallel: row.max_parallel, createdBy: run.createdBy, templateId: row.id, params,
    queuedBehind: run.queuedBehind,
  }, ctx);
};

export const jobTemplateCommandRoutes = (routes: Routes, deps: TemplateCommandDeps): void => {
  const run = templateCommandRunner(deps.store);
  const answer = async (res: Response, id: string, status: number) =>
    answerResource(res, await deps.views.template(id), { status, location: `/api/v1/job-templates/${id}`, notFound: () => templateNotFound(id) });
  const writable = async (principal: Principal, id: string) => {
    const found = await deps.views.template(id);
    if (!found) throw templateNotFound(id);
    requireResourceAccess(principal, found.project, 'jobs:run', () => templateNotFound(id));
    return found;
  };

  routes.post({
    path: '/job-templates', summary: 'Create a job template', tags: ['job-templates'], auth: true,
    description: 'Needs jobs:run. `{{name}}` in the command is replaced by the shell-quoted value of that parameter. '
      + '`cron` (5 fields) in `timezone` runs it on a schedule; `overlap` says what a due run does while the last one still runs: '
      + '`allow` it, `skip` it, or `queue` it behind.',
    body: CreateTemplate, responses: { 201: { body: deps.views.schemas.Template, headers: { Location: 'the new template' } } },
  }, async ({ body }, req, res) => {
    requireProjectAccess(res, body.project, 'jobs:run');
    await requireProject(deps.jobViews, body.project);
    const parameters = toParameters(body.parameters);
    checkTemplate(body.command, parameters, body.cron, body.timezone);
    const templateId = randomUUID();
    const result = await run(templateId, { type: 'CreateTemplate', data: {
      templateId, name: body.name, project: body.project, command: body.command, parameters, targets: selectorOf(body),
      cron: body.cron ?? null, timezone: body.timezone, overlap: body.overlap, timeoutSeconds: body.timeout_seconds ?? DEFAULT_JOB_TIMEOUT_SECONDS,
      maxParallel: body.max_parallel ?? null,
    } }, commandContext(req, res, body.project));
    await settle(deps, res, [result]);
    await answer(res, templateId, 201);
  });

  routes.patch({
    path: '/job-templates/:id', summary: 'Change a job template', tags: ['job-templates'], auth: true, ifMatch: true,
    params: IdParams, body: UpdateTemplate,
    responses: { 200: { body: deps.views.schemas.Template, headers: { ETag: 'the template’s revision' } }, 404: 'no such template (or not visible to you)' },
  }, async ({ params, body }, req, res) => {
    const found = await writable(requirePrincipal(res), params.id);
    const parameters = body.parameters ? toParameters(body.parameters) : (found.row.parameters as TemplateParameter[]);
    checkTemplate(body.command ?? found.row.command, parameters, body.cron === undefined ? found.row.cron : body.cron, body.timezone ?? found.row.timezone);
    const targets = body.system_ids || body.selector ? selectorOf(body) : undefined;
    const changes = Object.fromEntries(Object.entries({
      name: body.name, command: body.command, parameters: body.parameters ? parameters : undefined, targets, cron: body.cron,
      timezone: body.timezone, overlap: body.overlap, timeoutSeconds: body.timeout_seconds, maxParallel: body.max_parallel,
    }).filter(([, v]) => v !== undefined));
    const result = await withIfMatch(req, (expected) =>
      run(params.id, { type: 'UpdateTemplate', data: { templateId: params.id, ...changes } }, commandContext(req, res, found.project), expected));
    await settle(deps, res, [result]);
    await answer(res, params.id, 200);
  });

  routes.delete({
    path: '/job-templates/:id', summary: 'Delete a job template', tags: ['job-templates'], auth: true, ifMatch: true,
    description: 'Its schedule stops; jobs it made are kept.',
    params: IdParams, responses: { 204: 'deleted', 404: 'no such template (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const found = await writable(requirePrincipal(res), params.id);
    const result = await withIfMatch(req, (expected) =>
      run(params.id, { type: 'DeleteTemplate', data: { templateId: params.id } }, commandContext(req, res, found.project), expected));
    await settle(deps, res, [result]);
    res.status(204).end();
  });

  routes.post({
    path: '/job-templates/:id/run', summary: 'Run a job template', tags: ['job-templates'], auth: true,
    description: 'Needs jobs:run. `params` are checked against the template’s typed parameters (400 naming each bad one, nothing written); '
      + 'string values may not hold shell syntax, and every value is shell-quoted.',
    params: IdParams, body: RunTemplate, responses: { 201: { body: deps.jobViews.schemas.Job, headers: { Location: 'the new job' } } },
  }, async ({ params, body }, req, res) => {
    const principal = requirePrincipal(res);
    const found = await writable(principal, params.id);
    const scheduleAt = checkSchedule(body.schedule_at, Date.now());
    const { jobId, result } = await runTemplate(deps, found.row, { params: body.params, scheduleAt, createdBy: principal.userId, queuedBehind: null },
      commandContext(req, res, found.project));
    await settle(deps, res, [result]);
    answerResource(res, await deps.jobViews.job(jobId), {
      status: 201, location: `/api/v1/jobs/${jobId}`, notFound: () => new DomainError('JOB_NOT_FOUND', `job ${jobId} not found`),
    });
  });
};
