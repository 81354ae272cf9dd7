// Who is calling (SPEC §3/§4): `Authorization: Bearer <token>` resolved against the read
// models on every request, so that a revoked token, a deactivated user or a changed
// password stops working on the very next request.
//
// - A session JWT: the signature and expiry (verifySession), then the user must be active
//   and the token's `sv` must equal users.session_version (bumped by deactivation and by a
//   password change: every session issued before is cut at once).
// - An API token (`opl_…`): format and checksum first (garbage never reaches the
//   database), then its SHA-256 must name a token that is not revoked, not expired, and
//   whose owner is active. Its permissions are its scopes ∩ its owner's (authorize.ts);
//   a project pin limits it to one project.
// No header at all is an anonymous caller (null). Anything else that is wrong is 401.
import type { Request, RequestHandler, Response } from 'express';
import type { Kysely } from 'kysely';
import type { Tables } from '../db/tables.ts';
import { createEpochCache, noCache, type EpochCache } from '../epochCache.ts';
import { AppError } from '../errors.ts';
import { API_TOKEN_PREFIX, hashApiToken, looksLikeApiToken, sameHash } from './apiToken.ts';
import { can } from './authorize.ts';
import { createSessionVerifier, type SessionSecret } from './jwt.ts';
import { isPermission, PROJECT_PERMISSIONS, PROJECT_ROLES, type Permission, type ProjectPermission, type ProjectRole, type UserRole } from './permissions.ts';
import type { Principal } from './principal.ts';

/** A principal with what the rate limiter needs to know about its user. */
export type Caller = {
  principal: Principal;
  /** How it authenticated. */
  method: 'session' | 'api_token';
  /** The user's own limits (null: the role's default). */
  rateLimitPerSecond: number | null;
  rateLimitBurst: number | null;
  /** Session tokens: when the JWT expires (epoch seconds). */
  sessionExpiresAt: number | null;
  /** Session tokens: the user's session version the JWT was issued under (equal to the current one, or it would not authenticate). */
  sessionVersion: number | null;
};

// res.locals keys (untyped there, like requestId's neighbours in tests): `principal`
// (Principal | null), `caller` (Caller | null) and `authError` (why credentials were refused).
type AuthLocals = { principal?: Principal | null; caller?: Caller | null; authError?: AppError };
const locals = (res: Response): AuthLocals => res.locals as AuthLocals;

/** The caller of a request (after the authentication middleware); null when anonymous. */
export const callerOf = (res: Response): Caller | null => locals(res).caller ?? null;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// A last_used_at write per request would turn every API call into a write; a minute's
// precision is what a token list needs.
const LAST_USED_EVERY_MS = 60_000;

const unauthorized = (detail: string) => new AppError('UNAUTHORIZED', detail);

export type AuthenticatorOptions = {
  db: Kysely<Tables>;
  /** The session signing key (SECRET_KEY). */
  secretKey: SessionSecret;
  /** Epoch milliseconds (tests). */
  now?: () => number;
  /** Told when the best-effort last_used_at write fails. */
  onBackgroundError?: (err: unknown) => void;
  /**
   * Changes whenever the identity or projects read models may have changed, on any
   * instance (their projections' positions). While it stays the same, a credential's
   * user, token and memberships are served from memory instead of three queries.
   */
  epoch?: () => number | string;
};

/** A caller as cached (shared between requests: never changed once made). */
type CachedCaller = Caller & { tokenExpiresAt: number | null };

const CACHE_MAX = 10_000;

export type Authenticator = ReturnType<typeof createAuthenticator>;

export const createAuthenticator = (opts: AuthenticatorOptions) => {
  const { db } = opts;
  const now = opts.now ?? Date.now;
  const lastUsedWrites = new Map<string, number>();
  const verifySession = createSessionVerifier({ secret: opts.secretKey });
  // What a credential resolved to, valid for one epoch. Expiry (JWT exp, a token's
  // expires_at) is still checked on every request; revocation, deactivation and
  // membership changes move the epoch before their command answers.
  const cache: EpochCache<CachedCaller> = opts.epoch ? createEpochCache({ epoch: opts.epoch, max: CACHE_MAX }) : noCache();

  const membershipsOf = async (userId: string): Promise<Record<string, ProjectRole>> => {
    const rows = await db.selectFrom('project_members as m')
      .innerJoin('projects as p', 'p.slug', 'm.project')
      .select(['m.project', 'm.role'])
      .where('m.user_id', '=', userId).where('p.deleted', '=', false)
      .execute();
    const out: Record<string, ProjectRole> = {};
    for (const r of rows) if ((PROJECT_ROLES as readonly string[]).includes(r.role)) out[r.project] = r.role as ProjectRole;
    return out;
  };

  const userRow = (id: string) =>
    db.selectFrom('users')
      .select(['id', 'username', 'role', 'active', 'session_version', 'rate_limit_per_second', 'rate_limit_burst'])
      .where('id', '=', id).executeTakeFirst();

  // Cached under the token itself, so that a hit needs neither the JWT check nor a copy;
  // only expiry is checked again.
  const fromSession = async (token: string): Promise<Caller> => {
    const hit = cache.get(token);
    if (hit) {
      if (now() >= hit.sessionExpiresAt! * 1000) throw new AppError('TOKEN_EXPIRED', 'token expired');
      return hit;
    }
    const claims = verifySession(token, now());
    if (!UUID.test(claims.sub)) throw unauthorized('invalid token');
    return cache.through(token, () => sessionCaller(claims));
  };

  const sessionCaller = async (claims: { sub: string; sv: number; exp: number }): Promise<CachedCaller> => {
    const user = await userRow(claims.sub);
    if (!user) throw unauthorized('invalid token');
    if (!user.active || user.session_version !== claims.sv) {
      throw unauthorized('this session has ended (the password was changed or the user deactivated); log in again');
    }
    return {
      principal: {
        userId: user.id, username: user.username, role: user.role as UserRole, memberships: await membershipsOf(user.id),
        tokenId: null, scopes: null, projectPin: null,
      },
      method: 'session',
      rateLimitPerSecond: user.rate_limit_per_second,
      rateLimitBurst: user.rate_limit_burst,
      sessionExpiresAt: claims.exp,
      sessionVersion: claims.sv,
      tokenExpiresAt: null,
    };
  };

  const touch = (tokenId: string, at: number) => {
    const last = lastUsedWrites.get(tokenId);
    if (last !== undefined && at - last < LAST_USED_EVERY_MS) return;
    if (lastUsedWrites.size > 100_000) lastUsedWrites.clear();
    lastUsedWrites.set(tokenId, at);
    const when = new Date(at);
    // Best effort and off the request's path: a failed write costs a stale "last used".
    db.updateTable('api_tokens').set({ last_used_at: when })
      .where('id', '=', tokenId)
      .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', new Date(at - LAST_USED_EVERY_MS))]))
      .execute()
      .catch((err: unknown) => opts.onBackgroundError?.(err));
  };

  const fromApiToken = async (token: string): Promise<Caller> => {
    const hash = hashApiToken(token);
    const caller = await cache.through(`t:${hash}`, () => tokenCaller(hash));
    const at = now();
    if (caller.tokenExpiresAt !== null && caller.tokenExpiresAt <= at) throw unauthorized('this API token has expired');
    touch(caller.principal.tokenId!, at);
    return caller;
  };

  // Expiry is checked by the caller of this on every use, cached or not.
  const tokenCaller = async (hash: string): Promise<CachedCaller> => {
    const row = await db.selectFrom('api_tokens as t')
      .innerJoin('users as u', 'u.id', 't.user_id')
      .select([
        't.id', 't.token_hash', 't.scopes', 't.project', 't.expires_at', 't.revoked_at',
        'u.id as user_id', 'u.username', 'u.role', 'u.active', 'u.rate_limit_per_second', 'u.rate_limit_burst',
      ])
      .where('t.token_hash', '=', hash)
      .executeTakeFirst();
    // The lookup is by the hash (an index); comparing again in constant time costs nothing.
    if (!row || !sameHash(row.token_hash, hash)) throw unauthorized('invalid token');
    if (row.revoked_at !== null) throw unauthorized('this API token was revoked');
    if (!row.active) throw unauthorized('the user of this API token is deactivated');
    const scopes = Array.isArray(row.scopes) ? new Set((row.scopes as unknown[]).filter((s): s is Permission => typeof s === 'string' && isPermission(s))) : null;
    return {
      principal: {
        userId: row.user_id, username: row.username, role: row.role as UserRole, memberships: await membershipsOf(row.user_id),
        tokenId: row.id, scopes, projectPin: row.project,
      },
      method: 'api_token',
      rateLimitPerSecond: row.rate_limit_per_second,
      rateLimitBurst: row.rate_limit_burst,
      sessionExpiresAt: null,
      sessionVersion: null,
      tokenExpiresAt: row.expires_at === null ? null : new Date(row.expires_at).getTime(),
    };
  };

  /** The caller a bearer token stands for; throws 401 (UNAUTHORIZED, or TOKEN_EXPIRED for an expired session). */
  const resolveCaller = async (token: string): Promise<Caller> => {
    if (typeof token !== 'string' || token === '' || token.length > 4096) throw unauthorized('invalid token');
    if (looksLikeApiToken(token)) return fromApiToken(token);
    if (token.startsWith(API_TOKEN_PREFIX)) throw unauthorized('invalid token');
    return fromSession(token);
  };

  /** The credentials of a request: null when there is no Authorization header; throws 401 when they are bad. */
  const callerOfRequest = async (req: Request): Promise<Caller | null> => {
    const header = req.headers.authorization;
    if (header === undefined) return null;
    const m = /^Bearer +([^\s]+) *$/i.exec(header);
    if (!m) throw unauthorized('send credentials as "Authorization: Bearer <token>"');
    return resolveCaller(m[1]!);
  };

  return {
    resolveCaller,
    /** For the Socket.IO gateway: the principal of a token (as sent in the handshake), or a 401 AppError. */
    resolvePrincipal: async (token: string): Promise<Principal> => (await resolveCaller(token)).principal,
    callerOfRequest,
    /**
     * Puts the caller on res.locals (principal: null when anonymous). Bad credentials are
     * kept in res.locals.authError for rejectInvalidCredentials, so that the rate limiter
     * in between counts them against the client's address (no free token guessing).
     */
    middleware: (): RequestHandler => async (req, res, next) => {
      locals(res).principal = null;
      locals(res).caller = null;
      try {
        const caller = await callerOfRequest(req);
        locals(res).caller = caller;
        locals(res).principal = caller?.principal ?? null;
      } catch (err) {
        if (!(err instanceof AppError) || (err.code !== 'UNAUTHORIZED' && err.code !== 'TOKEN_EXPIRED')) throw err;
        locals(res).authError = err;
      }
      next();
    },
  };
};

/** Answers 401 for requests whose credentials the authentication middleware refused. */
export const rejectInvalidCredentials = (): RequestHandler => (_req, res, next) => {
  const err = locals(res).authError;
  if (!err) return next();
  res.setHeader('WWW-Authenticate', `Bearer error="invalid_token"`);
  throw err;
};

// ---- helpers for route handlers -----------------------------------------------------

export const principalOf = (res: Response): Principal | null => locals(res).principal ?? null;

/** The caller, or 401 for an anonymous request. */
export const requirePrincipal = (res: Response): Principal => {
  const principal = principalOf(res);
  if (!principal) {
    res.setHeader('WWW-Authenticate', 'Bearer');
    throw new AppError('UNAUTHORIZED', 'authentication required: send "Authorization: Bearer <token>"');
  }
  return principal;
};

export const forbidden = (detail: string) => new AppError('FORBIDDEN', detail);

/** 401 when anonymous, 403 when the caller may not do `permission` (global, or in `project`). */
export const requirePermission = (res: Response, permission: Permission, project?: string | null): Principal => {
  const principal = requirePrincipal(res);
  if (!can(principal, permission, project)) throw forbidden(`this needs the permission ${permission}${project ? ` in project ${project}` : ''}`);
  return principal;
};

/** Whether the principal may see the project at all (any project permission in it). Existence is not checked. */
export const canSeeProject = (principal: Principal, project: string): boolean =>
  PROJECT_PERMISSIONS.some((p) => can(principal, p, project));

export const projectNotFound = (project: string) => new AppError('PROJECT_NOT_FOUND', `project ${project} not found`);

/**
 * For a route on a project: 401 when anonymous, 404 when the caller cannot see the
 * project (never 403: that would confirm it exists), 403 when it can but may not do
 * `permission` (if given).
 */
export const requireProjectAccess = (res: Response, project: string, permission?: ProjectPermission): Principal =>
  requireResourceAccess(requirePrincipal(res), project, permission, () => projectNotFound(project));

/**
 * For a resource in a project (a node, a system, a job…): `notFound()` when the caller
 * cannot see the project (a hidden resource looks missing), 403 when it can but may not do
 * `permission` there.
 */
export const requireResourceAccess = (principal: Principal, project: string, permission: ProjectPermission | undefined, notFound: () => Error): Principal => {
  if (!canSeeProject(principal, project)) throw notFound();
  if (permission && !can(principal, permission, project)) throw forbidden(`this needs the permission ${permission} in project ${project}`);
  return principal;
};

/** Every permission the principal holds somewhere (in `project` only, when given): what its new API tokens may be scoped to. */
export const grantablePermissions = (principal: Principal, project?: string | null): Set<Permission> => {
  const out = new Set<Permission>();
  const projects = project ? [project] : principal.role === 'admin' ? null : Object.keys(principal.memberships);
  for (const p of PROJECT_PERMISSIONS) {
    // A global admin holds every project permission in any project (within its own scopes and pin).
    const held = projects === null ? can(principal, p, principal.projectPin ?? '*') : projects.some((slug) => can(principal, p, slug));
    if (held) out.add(p);
  }
  if (!project) for (const g of ['users:admin', 'system:admin'] as const) if (can(principal, g)) out.add(g);
  return out;
};
