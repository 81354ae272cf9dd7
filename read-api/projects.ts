// GET /projects, /projects/{slug}, /projects/{slug}/members (SPEC §4): thin queries over
// the projects and project_members read models. A project the caller cannot see answers
// 404 exactly like one that does not exist.
import type { Kysely, Selectable } from 'kysely';
import { z } from 'zod';
import { canSeeProject, projectNotFound, requirePrincipal, requireProjectAccess } from '../infra/auth/authenticate.ts';
import { PROJECT_PERMISSIONS, PROJECT_ROLES } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { ProjectsTable, Tables } from '../infra/db/tables.ts';
import { createEpochCache, noCache, type EpochCache } from '../infra/epochCache.ts';
import { setEtag } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { page, PageOf, Pagination, Slug, type Page } from '../infra/http/validate.ts';

type Routes = ReturnType<typeof bindRoutes>;

const Time = z.iso.datetime();

export const BillingAccount = z.strictObject({
  company_name: z.string().min(1).max(200),
  company_address: z.string().min(1).max(500),
  tax_number_type: z.enum(['vat', 'gst', 'ein']),
  tax_number: z.string().min(1).max(64),
  country: z.string().regex(/^[A-Z]{2}$/, 'must be an ISO 3166-1 alpha-2 country code, e.g. DE'),
}).meta({ id: 'BillingAccount' });

export const ProjectView = z.strictObject({
  slug: z.string(),
  display_name: z.string(),
  billing_account: BillingAccount.nullable(),
  created_by: z.uuid().nullable(),
  created_at: Time,
  updated_at: Time,
  role: z.enum(PROJECT_ROLES).nullable().meta({ description: 'the caller’s role in the project (null: none, e.g. a global admin)' }),
}).meta({ id: 'Project', description: 'A project (tenant)' });
export type ProjectView = z.output<typeof ProjectView>;

export const MemberView = z.strictObject({
  user_id: z.uuid(),
  username: z.string(),
  role: z.enum(PROJECT_ROLES),
  updated_at: Time,
}).meta({ id: 'ProjectMember' });
export type MemberView = z.output<typeof MemberView>;

const iso = (d: Date | string): string => new Date(d).toISOString();
const PROJECT_COLUMNS = ['slug', 'display_name', 'billing_account', 'created_by', 'created_at', 'updated_at', 'revision'] as const;

type ProjectRow = Pick<Selectable<ProjectsTable>, (typeof PROJECT_COLUMNS)[number]>;

const toProjectView = (p: ProjectRow, principal: Principal | null): ProjectView => ({
  slug: p.slug, display_name: p.display_name,
  billing_account: (p.billing_account ?? null) as ProjectView['billing_account'],
  created_by: p.created_by, created_at: iso(p.created_at), updated_at: iso(p.updated_at),
  role: principal?.memberships[p.slug] ?? null,
});

/** Whether a global admin (or a token of one) may see every project: no pin, and a scope that reaches some project. */
const seesAll = (principal: Principal): boolean =>
  principal.role === 'admin' && !principal.projectPin && (!principal.scopes || PROJECT_PERMISSIONS.some((p) => principal.scopes!.has(p)));

/** `cache`: single project rows by slug, exact while the projects read model stands still (infra/epochCache.ts). */
/** Whether the project exists and is not deleted (a new node, system, job, template or proxy needs one). */
export const projectExists = async (db: Kysely<Tables>, slug: string): Promise<boolean> =>
  !!(await db.selectFrom('projects').select('slug').where('slug', '=', slug).where('deleted', '=', false).executeTakeFirst());

export const projectQueries = (db: Kysely<Tables>, cache: EpochCache<ProjectRow | null> = noCache()) => ({
  /** The live project, or null when it does not exist or was deleted. */
  async project(slug: string, principal: Principal | null): Promise<{ view: ProjectView; revision: bigint } | null> {
    const row = await cache.through(slug, async () =>
      (await db.selectFrom('projects').select(PROJECT_COLUMNS).where('slug', '=', slug).where('deleted', '=', false).executeTakeFirst()) ?? null);
    return row ? { view: toProjectView(row, principal), revision: BigInt(row.revision) } : null;
  },
  async visibleProjects(principal: Principal, p: Pagination): Promise<Page<ProjectView>> {
    let q = db.selectFrom('projects').where('deleted', '=', false);
    if (!seesAll(principal)) {
      const slugs = [...new Set([...Object.keys(principal.memberships), ...(principal.projectPin ? [principal.projectPin] : [])])]
        .filter((s) => canSeeProject(principal, s));
      if (slugs.length === 0) return page([], 0, p);
      q = q.where('slug', 'in', slugs);
    }
    const [rows, count] = await Promise.all([
      q.select(PROJECT_COLUMNS).orderBy('slug').limit(p.limit).offset(p.offset).execute(),
      q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
    ]);
    return page(rows.map((r) => toProjectView(r, principal)), count.n, p);
  },
  async member(slug: string, userId: string): Promise<MemberView | null> {
    const row = await db.selectFrom('project_members as m').innerJoin('users as u', 'u.id', 'm.user_id')
      .select(['m.user_id', 'u.username', 'm.role', 'm.updated_at'])
      .where('m.project', '=', slug).where('m.user_id', '=', userId).executeTakeFirst();
    return row ? { user_id: row.user_id, username: row.username, role: row.role as MemberView['role'], updated_at: iso(row.updated_at) } : null;
  },
  async members(slug: string, p: Pagination): Promise<Page<MemberView>> {
    const q = db.selectFrom('project_members as m').innerJoin('users as u', 'u.id', 'm.user_id').where('m.project', '=', slug);
    const [rows, count] = await Promise.all([
      q.select(['m.user_id', 'u.username', 'm.role', 'm.updated_at']).orderBy('u.username').orderBy('m.user_id').limit(p.limit).offset(p.offset).execute(),
      q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
    ]);
    return page(rows.map((r) => ({ user_id: r.user_id, username: r.username, role: r.role as MemberView['role'], updated_at: iso(r.updated_at) })), count.n, p);
  },
});

export type ProjectQueries = ReturnType<typeof projectQueries>;

const SlugParams = z.object({ slug: Slug });

export const projectReadRoutes = (routes: Routes, deps: { db: Kysely<Tables>; epoch?: () => number }): ProjectQueries => {
  const q = projectQueries(deps.db, deps.epoch ? createEpochCache({ epoch: deps.epoch }) : noCache());

  routes.get({
    path: '/projects', summary: 'List the projects you can see', tags: ['projects'], auth: true,
    description: 'A global admin sees every project; everybody else the projects they are a member of.',
    query: Pagination, responses: { 200: PageOf(ProjectView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.visibleProjects(requirePrincipal(res), query));
  });

  routes.get({
    path: '/projects/:slug', summary: 'A project', tags: ['projects'], auth: true,
    params: SlugParams, responses: { 200: { body: ProjectView, headers: { ETag: 'the project’s revision' } }, 404: 'no such project (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const principal = requireProjectAccess(res, params.slug);
    const found = await q.project(params.slug, principal);
    if (!found) throw projectNotFound(params.slug);
    setEtag(res, found.revision);
    res.json(found.view);
  });

  routes.get({
    path: '/projects/:slug/members', summary: 'The members of a project', tags: ['projects'], auth: true,
    params: SlugParams, query: Pagination,
    responses: { 200: { body: PageOf(MemberView), headers: { ETag: 'the project’s revision' } }, 404: 'no such project (or not visible to you)' },
  }, async ({ params, query }, _req, res) => {
    requireProjectAccess(res, params.slug);
    const found = await q.project(params.slug, null);
    if (!found) throw projectNotFound(params.slug);
    setEtag(res, found.revision);
    res.json(await q.members(params.slug, query));
  });

  return q;
};
