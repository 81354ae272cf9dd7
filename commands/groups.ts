// Group command endpoints (SPEC §5): a group is up when at least `min_online` of its
// nodes are up. Members are chosen by labels (every node of the project carrying them)
// or listed by id. One stream per group.
import type { Response } from 'express';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { DomainError } from '../domain/domainError.ts';
import { groupDecider, groupStream, type GroupSelector } from '../domain/monitoring.ts';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { requirePrincipal, requireProjectAccess, requireResourceAccess } from '../infra/auth/authenticate.ts';
import { withIfMatch } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid } from '../infra/http/validate.ts';
import { commandContext, PlainText, settle, type CommandKit, answerResource } from './commandRoute.ts';
import { requireProject } from './nodes.ts';
import { streamCommandRunner } from './handleCommand.ts';
import { Labels, monitoringEventSchemas } from './monitoringSchemas.ts';

type Routes = ReturnType<typeof bindRoutes>;

export type GroupViews = {
  group(groupId: string): Promise<{ view: unknown; revision: bigint; project: string } | null>;
  projectExists(slug: string): Promise<boolean>;
  schemas: { Group: z.ZodType };
};

export type GroupCommandDeps = CommandKit & { views: GroupViews; minOnlineDefault: number };

const Selector = z.union([
  z.strictObject({ labels: Labels }),
  z.strictObject({ node_ids: z.array(Uuid).min(1).max(1000) }),
], { error: 'must be {labels: {key: value}} or {node_ids: [uuid, …]}' }).meta({ id: 'GroupSelector' });
const MinOnline = z.number().int().min(1).max(100_000);
const CreateGroup = z.strictObject({ name: PlainText(1, 100), project: Slug.default(DEFAULT_PROJECT), min_online: MinOnline.optional(), selector: Selector });
const UpdateGroup = z.strictObject({ name: PlainText(1, 100).optional(), min_online: MinOnline.optional(), selector: Selector.optional() });
const IdParams = z.object({ id: Uuid });

const toSelector = (s: z.output<typeof Selector>): GroupSelector =>
  'labels' in s ? { labels: s.labels } : { nodeIds: [...new Set(s.node_ids)] };

const groupNotFound = (id: string) => new DomainError('GROUP_NOT_FOUND', `group ${id} not found`);

export const groupCommandRoutes = (routes: Routes, deps: GroupCommandDeps): void => {
  const run = streamCommandRunner(deps.store, monitoringEventSchemas, groupDecider, groupStream);

  const answer = async (res: Response, id: string, status: number) =>
    answerResource(res, await deps.views.group(id), { status, location: `/api/v1/groups/${id}`, notFound: () => groupNotFound(id) });

  /** 404 for a group the caller cannot see, 403 without nodes:write in its project. */
  const writable = async (res: Response, id: string) => {
    const principal = requirePrincipal(res);
    const found = await deps.views.group(id);
    if (!found) throw groupNotFound(id);
    requireResourceAccess(principal, found.project, 'nodes:write', () => groupNotFound(id));
    return found.project;
  };

  routes.post({
    path: '/groups', summary: 'Create a group', tags: ['groups'], auth: true,
    description: 'Needs nodes:write. `min_online` defaults to MIN_ONLINE_DEFAULT (16).',
    body: CreateGroup, responses: { 201: { body: deps.views.schemas.Group, headers: { Location: 'the new group' } } },
  }, async ({ body }, req, res) => {
    requireProjectAccess(res, body.project, 'nodes:write');
    await requireProject(deps.views, body.project);
    const groupId = randomUUID();
    const result = await run(groupId, { type: 'CreateGroup', data: {
      groupId, name: body.name, project: body.project, minOnline: body.min_online ?? deps.minOnlineDefault, selector: toSelector(body.selector),
    } }, commandContext(req, res, body.project));
    await settle(deps, res, [result]);
    await answer(res, groupId, 201);
  });

  routes.patch({
    path: '/groups/:id', summary: 'Change a group', tags: ['groups'], auth: true, ifMatch: true,
    params: IdParams, body: UpdateGroup,
    responses: { 200: { body: deps.views.schemas.Group, headers: { ETag: 'the group’s revision' } }, 404: 'no such group (or not visible to you)' },
  }, async ({ params, body }, req, res) => {
    const project = await writable(res, params.id);
    const result = await withIfMatch(req, (expected) => run(params.id, { type: 'UpdateGroup', data: {
      groupId: params.id,
      ...(body.name !== undefined ? { name: body.name } : {}),
      ...(body.min_online !== undefined ? { minOnline: body.min_online } : {}),
      ...(body.selector !== undefined ? { selector: toSelector(body.selector) } : {}),
    } }, commandContext(req, res, project), expected));
    await settle(deps, res, [result]);
    await answer(res, params.id, 200);
  });

  routes.delete({
    path: '/groups/:id', summary: 'Delete a group', tags: ['groups'], auth: true, ifMatch: true,
    description: 'Its nodes are untouched; its status timeline stays in the log.',
    params: IdParams, responses: { 204: 'deleted', 404: 'no such group (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const project = await writable(res, params.id);
    const result = await withIfMatch(req, (expected) => run(params.id, { type: 'DeleteGroup', data: { groupId: params.id } }, commandContext(req, res, project), expected));
    await settle(deps, res, [result]);
    res.status(204).end();
  });
};
