// Project command endpoints (SPEC §4): create, change and delete projects, and set or
// remove members. One stream per project (`project-<slug>`), members included, so the
// project's ETag covers its members and "at least one admin" holds under races.
//
// Who may: any signed-in user may create a project (and becomes its admin) unless their
// token is pinned to a project or scoped without members:write; changing or deleting a
// project and managing its members takes members:write in it (project admins, global
// admins); a member may always leave. A project the caller cannot see is a 404.
import type { Response } from 'express';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { DEFAULT_PROJECT, projectDecider, projectStream, type ProjectCommand } from '../domain/projects.ts';
import { forbidden, projectNotFound, requirePrincipal, requireProjectAccess } from '../infra/auth/authenticate.ts';
import { can } from '../infra/auth/authorize.ts';
import { PROJECT_ROLES } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { Tables } from '../infra/db/tables.ts';
import { AppError, ConcurrencyError } from '../infra/errors.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { setEtag, withIfMatch } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid } from '../infra/http/validate.ts';
import { commandContext, PlainText, settle, type CommandKit } from './commandRoute.ts';
import { createCommandHandler, streamCommandRunner, type CommandContext, type CommandResult } from './handleCommand.ts';
import { projectEventSchemas } from './identitySchemas.ts';

type Routes = ReturnType<typeof bindRoutes>;
type Found<V> = { view: V; revision: bigint } | null;

/** The read side, handed in by the composition root (commands may not import read-api). */
export type ProjectViews = {
  project(slug: string, principal: Principal | null): Promise<Found<unknown>>;
  member(slug: string, userId: string): Promise<unknown | null>;
  schemas: { Project: z.ZodType; Member: z.ZodType };
};

export type ProjectCommandDeps = CommandKit & { db: Kysely<Tables>; views: ProjectViews };

const Billing = z.strictObject({
  company_name: PlainText(1, 200),
  company_address: PlainText(1, 500),
  tax_number_type: z.enum(['vat', 'gst', 'ein']),
  tax_number: PlainText(1, 64),
  country: z.string().regex(/^[A-Z]{2}$/, 'must be an ISO 3166-1 alpha-2 country code, e.g. DE'),
});
const DisplayName = PlainText(1, 200);
const CreateProject = z.strictObject({ slug: Slug, display_name: DisplayName, billing_account: Billing.nullable().optional() });
const UpdateProject = z.strictObject({ display_name: DisplayName.optional(), billing_account: Billing.nullable().optional() });
const SetMember = z.strictObject({ role: z.enum(PROJECT_ROLES) });
const SlugParams = z.object({ slug: Slug });
const MemberParams = z.object({ slug: Slug, user_id: Uuid });

const handlerOf = (store: EventStore) => createCommandHandler(store, projectEventSchemas);

type AnyResult = CommandResult<unknown, { type: string; data: Record<string, unknown> }>;

/** One command on a project's stream with If-Match as its expected revision (412 on a mismatch). */
const runOnProject = (deps: ProjectCommandDeps, slug: string, command: ProjectCommand, ctx: CommandContext, expected: bigint | undefined) =>
  streamCommandRunner(deps.store, projectEventSchemas, projectDecider, projectStream)(slug, command, ctx, expected);

/** Creates the `default` project unless it exists (SPEC §4: it always exists). Safe to run on every start, on every instance. */
export const ensureDefaultProject = async (store: EventStore): Promise<AnyResult | null> => {
  try {
    return (await handlerOf(store)(projectDecider, projectStream(DEFAULT_PROJECT), {
      type: 'CreateProject', data: { slug: DEFAULT_PROJECT, displayName: 'Default', billingAccount: null, createdBy: null },
    }, { actor: null, requestId: null, ip: null, project: DEFAULT_PROJECT })) as AnyResult;
  } catch (err) {
    if ((err as { code?: unknown }).code === 'PROJECT_EXISTS') return null;
    throw err;
  }
};

export const projectCommandRoutes = (routes: Routes, deps: ProjectCommandDeps): void => {
  const { db, views } = deps;

  /** The project as the caller sees it after a write; 404 when it is gone. */
  const answerProject = async (res: Response, slug: string, principal: Principal, status: number) => {
    const found = await views.project(slug, principal);
    if (!found) throw projectNotFound(slug);
    setEtag(res, found.revision);
    if (status === 201) res.setHeader('Location', `/api/v1/projects/${slug}`);
    res.status(status).json(found.view);
  };

  /** 404 unless the project is live (after the visibility check, so invisible and missing look alike). */
  const requireLive = async (slug: string, principal: Principal) => {
    if (!(await views.project(slug, principal))) throw projectNotFound(slug);
  };

  routes.post({
    path: '/projects', summary: 'Create a project (you become its admin)', tags: ['projects'], auth: true,
    body: CreateProject,
    responses: { 201: { body: views.schemas.Project, headers: { Location: 'the new project', 'X-Event-Position': 'the write’s position' } }, 409: 'the slug is taken (or was)' },
  }, async ({ body }, req, res) => {
    const principal = requirePrincipal(res);
    if (principal.projectPin) throw forbidden('a token pinned to a project cannot create projects');
    if (principal.scopes && !principal.scopes.has('members:write')) throw forbidden('creating a project needs a token with the members:write scope');
    const result = await handlerOf(deps.store)(projectDecider, projectStream(body.slug), {
      type: 'CreateProject',
      data: { slug: body.slug, displayName: body.display_name, billingAccount: body.billing_account ?? null, createdBy: principal.userId },
    }, commandContext(req, res, body.slug));
    await settle(deps, res, [result as AnyResult]);
    // The creator is now an admin of it: reflect that in the answer's `role`.
    await answerProject(res, body.slug, { ...principal, memberships: { ...principal.memberships, [body.slug]: 'admin' } }, 201);
  });

  routes.patch({
    path: '/projects/:slug', summary: 'Change a project', tags: ['projects'], auth: true, ifMatch: true,
    description: 'Needs members:write in the project.',
    params: SlugParams, body: UpdateProject,
    responses: { 200: { body: views.schemas.Project, headers: { ETag: 'the project’s revision' } }, 404: 'no such project (or not visible to you)' },
  }, async ({ params, body }, req, res) => {
    const principal = requireProjectAccess(res, params.slug, 'members:write');
    const changes = {
      ...(body.display_name !== undefined ? { displayName: body.display_name } : {}),
      ...(body.billing_account !== undefined ? { billingAccount: body.billing_account } : {}),
    };
    const result = await withIfMatch(req, async (expected) => {
      // A change is checked by the decider (a missing or deleted project is a 404 there);
      // an empty one with If-Match only compares revisions, so it looks the project up first.
      if (Object.keys(changes).length === 0 && expected !== undefined) {
        await requireLive(params.slug, principal);
        const actual = await deps.store.streamRevision(projectStream(params.slug));
        if (actual !== expected) throw new ConcurrencyError(projectStream(params.slug), `revision ${expected}`, actual);
      }
      return runOnProject(deps, params.slug, { type: 'UpdateProject', data: { slug: params.slug, ...changes } }, commandContext(req, res, params.slug), expected);
    });
    await settle(deps, res, [result]);
    await answerProject(res, params.slug, principal, 200);
  });

  routes.delete({
    path: '/projects/:slug', summary: 'Delete a project', tags: ['projects'], auth: true, ifMatch: true,
    description: 'Needs members:write in the project. The default project cannot be deleted (409). A deleted project’s slug is never reused.',
    params: SlugParams, responses: { 204: 'deleted', 404: 'no such project (or not visible to you)', 409: 'the default project' },
  }, async ({ params }, req, res) => {
    const principal = requireProjectAccess(res, params.slug, 'members:write');
    await requireLive(params.slug, principal);
    const result = await withIfMatch(req, (expected) =>
      runOnProject(deps, params.slug, { type: 'DeleteProject', data: { slug: params.slug } }, commandContext(req, res, params.slug), expected));
    await settle(deps, res, [result]);
    if (result.append) setEtag(res, result.append.nextExpectedRevision);
    res.status(204).end();
  });

  routes.put({
    path: '/projects/:slug/members/:user_id', summary: 'Add a member or change their role', tags: ['projects'], auth: true, ifMatch: true,
    description: 'Needs members:write in the project. A project keeps at least one admin (409 LAST_ADMIN).',
    params: MemberParams, body: SetMember,
    responses: {
      200: { body: views.schemas.Member, headers: { ETag: 'the project’s revision' } },
      201: { body: views.schemas.Member, headers: { ETag: 'the project’s revision' } },
      404: 'no such project (or not visible to you), or no such user',
      409: 'the last admin would be demoted, or the user is deactivated',
    },
  }, async ({ params, body }, req, res) => {
    const principal = requireProjectAccess(res, params.slug, 'members:write');
    await requireLive(params.slug, principal);
    const user = await db.selectFrom('users').select(['id', 'active']).where('id', '=', params.user_id).executeTakeFirst();
    if (!user) throw new AppError('USER_NOT_FOUND', `user ${params.user_id} not found`);
    if (!user.active) throw new AppError('USER_INACTIVE', `user ${params.user_id} is deactivated`);
    const before = await views.member(params.slug, params.user_id);
    const result = await withIfMatch(req, (expected) =>
      runOnProject(deps, params.slug, { type: 'SetMember', data: { slug: params.slug, userId: params.user_id, role: body.role } },
        commandContext(req, res, params.slug), expected));
    await settle(deps, res, [result]);
    const member = await views.member(params.slug, params.user_id);
    const project = await views.project(params.slug, null);
    if (!member || !project) throw projectNotFound(params.slug);
    setEtag(res, project.revision);
    res.status(before === null ? 201 : 200).json(member);
  });

  routes.delete({
    path: '/projects/:slug/members/:user_id', summary: 'Remove a member (or leave a project)', tags: ['projects'], auth: true, ifMatch: true,
    description: 'Needs members:write in the project, except to remove yourself. A project keeps at least one admin (409 LAST_ADMIN).',
    params: MemberParams, responses: { 204: 'removed', 404: 'no such project (or not visible to you), or not a member', 409: 'the last admin' },
  }, async ({ params }, req, res) => {
    const principal = requireProjectAccess(res, params.slug);
    // Leaving takes the user's full rights: a token scoped to, say, nodes:read may not do it.
    const self = principal.userId === params.user_id && principal.scopes === null;
    if (!self && !can(principal, 'members:write', params.slug)) throw forbidden(`this needs the permission members:write in project ${params.slug}`);
    await requireLive(params.slug, principal);
    const result = await withIfMatch(req, (expected) =>
      runOnProject(deps, params.slug, { type: 'RemoveMember', data: { slug: params.slug, userId: params.user_id } },
        commandContext(req, res, params.slug), expected));
    await settle(deps, res, [result]);
    if (result.append) setEtag(res, result.append.nextExpectedRevision);
    res.status(204).end();
  });
};
