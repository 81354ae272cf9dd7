// GET /auth/me, /auth/tokens, /users, /users/{id} (SPEC §4): thin queries over the users
// and api_tokens read models. The views here are also what the identity commands answer
// with (handed to them by the composition root), so a write and a read look the same.
import type { Kysely, Selectable } from 'kysely';
import { z } from 'zod';
import type { Caller } from '../infra/auth/authenticate.ts';
import { callerOf, forbidden, requirePermission, requirePrincipal } from '../infra/auth/authenticate.ts';
import { can, effectivePermissions } from '../infra/auth/authorize.ts';
import { GLOBAL_PERMISSIONS, PROJECT_PERMISSIONS, PROJECT_ROLES, USER_ROLES } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { ApiTokensTable, Tables, UsersTable } from '../infra/db/tables.ts';
import { createEpochCache, noCache, type EpochCache } from '../infra/epochCache.ts';
import { AppError } from '../infra/errors.ts';
import { setEtag } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { page, PageOf, Pagination, Uuid, type Page } from '../infra/http/validate.ts';

type Routes = ReturnType<typeof bindRoutes>;

const Time = z.iso.datetime();
const PermissionName = z.enum([...PROJECT_PERMISSIONS, ...GLOBAL_PERMISSIONS]);

export const UserView = z.strictObject({
  id: z.uuid(),
  username: z.string(),
  email: z.string().nullable(),
  role: z.enum(USER_ROLES).meta({ description: '`admin` is a global admin' }),
  active: z.boolean(),
  rate_limit_per_second: z.number().int().nullable().meta({ description: 'null: the role’s default' }),
  rate_limit_burst: z.number().int().nullable().meta({ description: 'null: the role’s default' }),
  created_at: Time,
  updated_at: Time,
}).meta({ id: 'User', description: 'A user account (never its password)' });
export type UserView = z.output<typeof UserView>;

export const MeView = UserView.extend({
  memberships: z.array(z.strictObject({ project: z.string(), role: z.enum(PROJECT_ROLES) })),
  permissions: z.strictObject({
    global: z.array(PermissionName),
    projects: z.record(z.string(), z.array(PermissionName)),
  }).meta({ description: 'what this request’s credentials may do (a token: within its scopes and project pin)' }),
  authenticated_by: z.strictObject({
    method: z.enum(['session', 'api_token']),
    token_id: z.uuid().nullable(),
    scopes: z.array(PermissionName).nullable(),
    project: z.string().nullable(),
    session_expires_at: Time.nullable(),
  }),
}).meta({ id: 'Me', description: 'The caller: profile, memberships and effective permissions' });
export type MeView = z.output<typeof MeView>;

export const TokenView = z.strictObject({
  id: z.uuid(),
  name: z.string(),
  prefix: z.string().meta({ description: 'the first characters of the token, to tell tokens apart' }),
  scopes: z.array(PermissionName).nullable().meta({ description: 'null: every permission of its owner' }),
  project: z.string().nullable().meta({ description: 'the one project it may act in, or null' }),
  expires_at: Time.nullable(),
  created_at: Time,
  last_used_at: Time.nullable().meta({ description: 'updated at most once a minute' }),
  revoked_at: Time.nullable(),
}).meta({ id: 'ApiToken', description: 'An API token (never the token itself, nor its hash)' });
export type TokenView = z.output<typeof TokenView>;

export const CreatedTokenView = TokenView.extend({
  token: z.string().meta({ description: 'the token: shown this once, never again' }),
}).meta({ id: 'CreatedApiToken', description: 'A new API token, with the secret shown once' });

const iso = (d: Date | string): string => new Date(d).toISOString();
const isoOrNull = (d: Date | string | null): string | null => (d === null ? null : iso(d));

export const toUserView = (u: Selectable<UsersTable>): UserView => ({
  id: u.id, username: u.username, email: u.email, role: u.role as UserView['role'], active: u.active,
  rate_limit_per_second: u.rate_limit_per_second, rate_limit_burst: u.rate_limit_burst,
  created_at: iso(u.created_at), updated_at: iso(u.updated_at),
});

export const toTokenView = (t: Selectable<ApiTokensTable>): TokenView => ({
  id: t.id, name: t.name, prefix: t.prefix,
  scopes: Array.isArray(t.scopes) ? (t.scopes as TokenView['scopes']) : null,
  project: t.project, expires_at: isoOrNull(t.expires_at), created_at: iso(t.created_at),
  last_used_at: isoOrNull(t.last_used_at), revoked_at: isoOrNull(t.revoked_at),
});

const USER_COLUMNS = ['id', 'username', 'email', 'role', 'active', 'rate_limit_per_second', 'rate_limit_burst', 'created_at', 'updated_at', 'revision'] as const;
const TOKEN_COLUMNS = ['id', 'user_id', 'name', 'prefix', 'scopes', 'project', 'expires_at', 'created_at', 'last_used_at', 'revoked_at'] as const;

export type UserFilter = { active?: boolean | undefined; role?: 'admin' | 'user' | undefined };

// The authenticator hands out the same caller object, and `user` the same row, until the
// read models move: the view built from the two is kept beside the caller and reused
// while the row is the same object.
const meViews = new WeakMap<object, { row: object; view: MeView }>();

/** `cache`: single users by id, exact while the identity read model stands still (infra/epochCache.ts). */
export const identityQueries = (db: Kysely<Tables>, cache: EpochCache<{ view: UserView; revision: bigint } | null> = noCache()) => {
  const user = (id: string): Promise<{ view: UserView; revision: bigint } | null> =>
    cache.through(id, async () => {
      const row = await db.selectFrom('users').select(USER_COLUMNS).where('id', '=', id).executeTakeFirst();
      return row ? { view: toUserView(row as Selectable<UsersTable>), revision: BigInt(row.revision) } : null;
    });
  return {
    user,
    async listUsers(filter: UserFilter, p: Pagination): Promise<Page<UserView>> {
      let q = db.selectFrom('users');
      if (filter.active !== undefined) q = q.where('active', '=', filter.active);
      if (filter.role !== undefined) q = q.where('role', '=', filter.role);
      const [rows, count] = await Promise.all([
        q.select(USER_COLUMNS).orderBy('username').orderBy('id').limit(p.limit).offset(p.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      return page(rows.map((r) => toUserView(r as Selectable<UsersTable>)), count.n, p);
    },
    async token(id: string): Promise<{ view: TokenView; userId: string } | null> {
      const row = await db.selectFrom('api_tokens').select(TOKEN_COLUMNS).where('id', '=', id).executeTakeFirst();
      return row ? { view: toTokenView(row as Selectable<ApiTokensTable>), userId: row.user_id } : null;
    },
    async tokensOf(userId: string, p: Pagination): Promise<Page<TokenView>> {
      const q = db.selectFrom('api_tokens').where('user_id', '=', userId);
      const [rows, count] = await Promise.all([
        q.select(TOKEN_COLUMNS).orderBy('created_at', 'desc').orderBy('id').limit(p.limit).offset(p.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      return page(rows.map((r) => toTokenView(r as Selectable<ApiTokensTable>)), count.n, p);
    },
    /** The caller's profile with memberships and what these credentials may do. */
    async me(principal: Principal, caller: Caller | null): Promise<{ view: MeView; revision: bigint } | null> {
      const found = await user(principal.userId);
      if (!found) return null;
      const kept = meViews.get(caller ?? principal);
      if (kept?.row === found) return { view: kept.view, revision: found.revision };
      const memberships = Object.entries(principal.memberships)
        .map(([project, role]) => ({ project, role }))
        .sort((a, b) => a.project.localeCompare(b.project));
      const view: MeView = {
        ...found.view,
        memberships,
        permissions: effectivePermissions(principal),
        authenticated_by: {
          method: principal.tokenId ? 'api_token' : 'session',
          token_id: principal.tokenId,
          scopes: principal.scopes ? [...principal.scopes].sort() : null,
          project: principal.projectPin,
          session_expires_at: caller?.sessionExpiresAt ? new Date(caller.sessionExpiresAt * 1000).toISOString() : null,
        },
      };
      meViews.set(caller ?? principal, { row: found, view });
      return { view, revision: found.revision };
    },
  };
};

export type IdentityQueries = ReturnType<typeof identityQueries>;

export const userNotFound = (id: string) => new AppError('USER_NOT_FOUND', `user ${id} not found`);

/** A user may read their own account; reading anybody else's takes users:admin. */
export const requireSelfOrUsersAdmin = (principal: Principal, userId: string): void => {
  if (principal.userId !== userId && !can(principal, 'users:admin')) throw forbidden('this needs the permission users:admin');
};

const UserParams = z.object({ id: Uuid });
const BoolText = z.enum(['true', 'false']).transform((v) => v === 'true');

export const identityReadRoutes = (routes: Routes, deps: { db: Kysely<Tables>; epoch?: () => number }): IdentityQueries => {
  const q = identityQueries(deps.db, deps.epoch ? createEpochCache({ epoch: deps.epoch }) : noCache());

  routes.get({
    path: '/auth/me', summary: 'The caller: profile, memberships and effective permissions', tags: ['auth'], auth: true,
    responses: { 200: { body: MeView, headers: { ETag: 'the user’s revision' } } },
  }, async (_input, _req, res) => {
    const principal = requirePrincipal(res);
    const me = await q.me(principal, callerOf(res));
    if (!me) throw new AppError('UNAUTHORIZED', 'invalid token');
    setEtag(res, me.revision);
    res.json(me.view);
  });

  routes.get({
    path: '/auth/tokens', summary: 'List your API tokens (never the secret)', tags: ['auth'], auth: true,
    query: Pagination, responses: { 200: PageOf(TokenView) },
  }, async ({ query }, _req, res) => {
    const principal = requirePrincipal(res);
    res.json(await q.tokensOf(principal.userId, query));
  });

  routes.get({
    path: '/users', summary: 'List users', tags: ['users'], auth: true,
    description: 'Needs users:admin.',
    query: Pagination.extend({ active: BoolText.optional(), role: z.enum(USER_ROLES).optional() }),
    responses: { 200: PageOf(UserView) },
  }, async ({ query }, _req, res) => {
    requirePermission(res, 'users:admin');
    const { limit, offset, ...filter } = query;
    res.json(await q.listUsers(filter, { limit, offset }));
  });

  routes.get({
    path: '/users/:id', summary: 'A user', tags: ['users'], auth: true,
    description: 'Your own account, or anybody’s with users:admin.',
    params: UserParams, responses: { 200: { body: UserView, headers: { ETag: 'the user’s revision' } }, 404: 'no such user' },
  }, async ({ params }, _req, res) => {
    requireSelfOrUsersAdmin(requirePrincipal(res), params.id);
    const found = await q.user(params.id);
    if (!found) throw userNotFound(params.id);
    setEtag(res, found.revision);
    res.json(found.view);
  });

  return q;
};
