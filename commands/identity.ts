// Identity command endpoints (SPEC §4): login, refresh, registration, the caller's own
// profile and API tokens, and user administration. Every write goes through the command
// handler and the identity decider, and answers once the read models show it.
//
// Secrets: passwords arrive in bodies and leave as scrypt hashes in the vault; an API
// token is shown once in the response that created it and kept only as its SHA-256.
// Routes whose body holds a password, or whose response holds a token, do not take
// Idempotency-Key: the idempotency store keeps a fast hash of the request body and the
// response itself, which would put a guessable password hash or a usable token at rest.
import type { Request, Response } from 'express';
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { z } from 'zod';
import { randomUUID } from 'node:crypto';
import { identityDecider, userStream, type IdentityCommand } from '../domain/identity.ts';
import { generateApiToken } from '../infra/auth/apiToken.ts';
import { callerOf, canSeeProject, forbidden, grantablePermissions, requirePermission, requirePrincipal } from '../infra/auth/authenticate.ts';
import type { Caller } from '../infra/auth/authenticate.ts';
import { can } from '../infra/auth/authorize.ts';
import { signSession, type SessionSecret } from '../infra/auth/jwt.ts';
import { dummyVerify, MAX_PASSWORD_LENGTH, verifyPassword } from '../infra/auth/password.ts';
import { GLOBAL_PERMISSIONS, PROJECT_PERMISSIONS, USER_ROLES, type Permission } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { Tables } from '../infra/db/tables.ts';
import { AppError, ConcurrencyError } from '../infra/errors.ts';
import { setEtag, withIfMatch } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid, ValidationError } from '../infra/http/validate.ts';
import type { RateLimiter, RateLimits } from '../infra/rateLimit.ts';
import { DEFAULT_LOGIN_LIMITS, loginAttemptKey, takeFromBuckets } from '../infra/rateLimitHttp.ts';
import type { Vault } from '../infra/vault.ts';
import { commandContext, PlainText, settle, type CommandKit } from './commandRoute.ts';
import { createCommandHandler, type CommandContext, type CommandResult } from './handleCommand.ts';
import { checkPasswordPolicy, registerUser, storePassword } from './identityAccounts.ts';
import { identityEventSchemas, USERNAME_PATTERN } from './identitySchemas.ts';

type Routes = ReturnType<typeof bindRoutes>;
type Found<V> = { view: V; revision: bigint } | null;

/** The read side, handed in by the composition root (commands may not import read-api). */
export type IdentityViews = {
  user(id: string): Promise<Found<unknown>>;
  me(principal: Principal, caller: Caller | null): Promise<Found<unknown>>;
  token(id: string): Promise<{ view: Record<string, unknown>; userId: string } | null>;
  /** Response schemas for the OpenAPI document. */
  schemas: { User: z.ZodType; Me: z.ZodType; CreatedToken: z.ZodType };
};

export type LoginLimits = {
  /** Per client address + username (default 5 a minute). */
  perUser?: RateLimits;
  /** Per client address over all usernames, against password spraying (default 30 at once, then 1 a second). */
  perIp?: RateLimits;
};

export type IdentityCommandDeps = CommandKit & {
  db: Kysely<Tables>;
  vault: Vault;
  secretKey: SessionSecret;
  sessionSeconds: number;
  allowRegistration: boolean;
  limiter: RateLimiter;
  loginLimits?: LoginLimits;
  views: IdentityViews;
  logger?: Logger;
};

const DEFAULT_LOGIN_PER_IP: RateLimits = { ratePerSecond: 1, burst: 30 };

// ---- request schemas ---------------------------------------------------------------

const Username = z.string().regex(USERNAME_PATTERN, 'must be 2–63 letters, digits, dots, dashes or underscores, starting with a letter or digit');
// Length is checked by the password policy (in characters, with a clear message); this only bounds the input.
const Password = z.string().min(1).max(MAX_PASSWORD_LENGTH * 4);
const Email = z.email().max(254);
const Rate = z.number().int().min(1).max(100_000).nullable();
const PermissionName = z.enum([...PROJECT_PERMISSIONS, ...GLOBAL_PERMISSIONS]);

const Login = z.strictObject({ username: PlainText(1, 256), password: z.string().min(1).max(MAX_PASSWORD_LENGTH * 4) });
const SessionToken = z.strictObject({
  access_token: z.string(), token_type: z.literal('bearer'), expires_in: z.number().int().meta({ description: 'seconds' }),
}).meta({ id: 'SessionToken' });
const Register = z.strictObject({ username: Username, password: Password, email: Email.nullable().optional() });
const CreateUser = z.strictObject({
  username: Username, password: Password, email: Email.nullable().optional(), role: z.enum(USER_ROLES).default('user'),
  rate_limit_per_second: Rate.optional(), rate_limit_burst: Rate.optional(),
});
const UpdateUser = z.strictObject({
  email: Email.nullable().optional(), role: z.enum(USER_ROLES).optional(), active: z.boolean().optional(),
  rate_limit_per_second: Rate.optional(), rate_limit_burst: Rate.optional(),
  password: Password.optional().meta({ description: 'sets a new password and ends every session of the user' }),
});
const UpdateMe = z.strictObject({
  email: Email.nullable().optional(),
  password: Password.optional().meta({ description: 'a new password; needs current_password; ends every session, this one included' }),
  current_password: Password.optional(),
});
const CreateToken = z.strictObject({
  name: PlainText(1, 100),
  scopes: z.array(PermissionName).min(1).max(PROJECT_PERMISSIONS.length + GLOBAL_PERMISSIONS.length).optional()
    .meta({ description: 'a subset of your permissions; default: all of them' }),
  project: Slug.optional().meta({ description: 'pin the token to this one project' }),
  expires_at: z.iso.datetime({ offset: true }).optional().meta({ description: 'default: never' }),
});
const UserParams = z.object({ id: Uuid });
const TokenParams = z.object({ id: Uuid });

// ---- helpers -----------------------------------------------------------------------

const invalidCredentials = () => new AppError('INVALID_CREDENTIALS', 'wrong username or password');

const clientIp = (res: Response): string => {
  const req = res.req;
  return req.ip ?? req.socket.remoteAddress ?? 'unknown';
};

/** Runs `commands` on one user stream in order, chaining revisions (the first honours If-Match). */
const runOnUser = async (
  deps: IdentityCommandDeps, userId: string, commands: IdentityCommand[], ctx: CommandContext, expected: bigint | undefined,
) => {
  const handle = createCommandHandler(deps.store, identityEventSchemas);
  const results: CommandResult<unknown, { type: string; data: Record<string, unknown> }>[] = [];
  if (commands.length === 0 && expected !== undefined) {
    // Nothing to change, yet a stale If-Match is still a failed precondition.
    const actual = await deps.store.streamRevision(userStream(userId));
    if (actual !== expected) throw new ConcurrencyError(userStream(userId), `revision ${expected}`, actual);
  }
  let next = expected;
  for (const command of commands) {
    const r = await handle(identityDecider, userStream(userId), command, ctx, next === undefined ? {} : { expectedRevision: next });
    results.push(r as never);
    if (next !== undefined && r.append) next = r.append.nextExpectedRevision;
  }
  return results;
};

const sessionFor = (deps: IdentityCommandDeps, user: { id: string; session_version: number }) => ({
  access_token: signSession({ userId: user.id, sessionVersion: user.session_version }, { secret: deps.secretKey, expiresInSeconds: deps.sessionSeconds }),
  token_type: 'bearer' as const,
  expires_in: deps.sessionSeconds,
});

const noStore = (res: Response) => {
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Pragma', 'no-cache');
};

export const identityCommandRoutes = (routes: Routes, deps: IdentityCommandDeps): void => {
  const { db, vault, views } = deps;
  const perUser = deps.loginLimits?.perUser ?? DEFAULT_LOGIN_LIMITS;
  const perIp = deps.loginLimits?.perIp ?? DEFAULT_LOGIN_PER_IP;

  /** Takes one attempt from the login buckets; false (429 sent) when one of them is empty. */
  const loginAttempt = (res: Response, username: string): Promise<boolean> => {
    const ip = clientIp(res);
    return takeFromBuckets(deps.limiter, res, [
      [`login-ip:${ip}`, perIp, 'login attempts from this address'],
      [loginAttemptKey(ip, username), perUser, 'login attempts for this user from this address'],
    ]);
  };

  // Each registration costs a scrypt hash (32 MiB, tens of ms): limited per address like
  // login attempts, in a bucket of its own.
  const registrationAttempt = (res: Response): Promise<boolean> =>
    takeFromBuckets(deps.limiter, res, [[`register-ip:${clientIp(res)}`, perIp, 'registrations from this address']]);

  const userRow = (where: { id: string } | { username: string }) => {
    const q = db.selectFrom('users').select(['id', 'username', 'role', 'active', 'password_ref', 'session_version', 'revision']);
    return ('id' in where ? q.where('id', '=', where.id) : q.where(sql<string>`lower(username)`, '=', where.username.toLowerCase())).executeTakeFirst();
  };

  /** Whether `password` is the user's; always spends one scrypt verification. */
  const passwordMatches = async (passwordRef: string | null, password: string): Promise<boolean> => {
    const hash = passwordRef === null ? null : await vault.getText(passwordRef);
    if (hash === null) return dummyVerify(password);
    return verifyPassword(password, hash);
  };

  const answerUser = async (res: Response, userId: string, status: number) => {
    const found = await views.user(userId);
    if (!found) throw new AppError('USER_NOT_FOUND', `user ${userId} not found`);
    setEtag(res, found.revision);
    if (status === 201) res.setHeader('Location', `/api/v1/users/${userId}`);
    res.status(status).json(found.view);
  };

  /**
   * Runs `commands` on the user's stream (If-Match honoured) and waits for the read models
   * (`strict`: see settle). A new password (`newRef`, already in the vault) is dropped
   * again if the commands fail; once they are stored, the replaced one is dropped.
   */
  const runAndSettle = async (
    req: Request, res: Response, user: { id: string; password_ref: string }, commands: IdentityCommand[], newRef: string | null, strict: boolean,
  ) => {
    let results;
    try {
      results = await withIfMatch(req, (expected) => runOnUser(deps, user.id, commands, commandContext(req, res), expected));
    } catch (err) {
      if (newRef) await vault.delete(newRef).catch(() => undefined);
      throw err;
    }
    if (newRef && results.at(-1)?.append) await vault.delete(user.password_ref).catch(() => undefined);
    await settle(deps, res, results, { strict });
  };

  /** A global admin may not demote or deactivate the last active global admin. */
  const guardLastAdmin = async (userId: string) => {
    const admins = await db.selectFrom('users').select('id').where('role', '=', 'admin').where('active', '=', true).limit(2).execute();
    if (admins.length === 1 && admins[0]!.id === userId) {
      throw new AppError('LAST_GLOBAL_ADMIN', 'this is the last active global admin: make another user admin first');
    }
  };

  // ---- sessions ----

  routes.post({
    path: '/auth/login', summary: 'Log in: a session token for a username and password', tags: ['auth'], auth: false, idempotent: false,
    description: 'Limited per client address and per address + username against password guessing (429 with Retry-After).',
    body: Login, responses: { 200: SessionToken, 401: 'wrong username or password' },
  }, async ({ body }, _req, res) => {
    if (!(await loginAttempt(res, body.username))) return;
    const user = await userRow({ username: body.username });
    // Unknown users cost one verification too, so the response time does not tell which usernames exist.
    const ok = await passwordMatches(user?.password_ref ?? null, body.password);
    if (!user || !ok || !user.active) throw invalidCredentials();
    noStore(res);
    res.json(sessionFor(deps, user));
  });

  routes.post({
    path: '/auth/refresh', summary: 'A fresh session token for a valid one', tags: ['auth'], auth: true, idempotent: false,
    responses: { 200: SessionToken, 403: 'API tokens are not refreshed' },
  }, async (_input, _req, res) => {
    const principal = requirePrincipal(res);
    if (principal.tokenId) throw forbidden('only a session token can be refreshed; API tokens do not expire unless given expires_at');
    const user = await userRow({ id: principal.userId });
    // The session ended (password change, deactivation) after this request authenticated:
    // no fresh token under the new session version.
    if (!user || !user.active || user.session_version !== callerOf(res)?.sessionVersion) {
      throw new AppError('UNAUTHORIZED', 'this session has ended; log in again');
    }
    noStore(res);
    res.json(sessionFor(deps, user));
  });

  routes.post({
    path: '/auth/register', summary: 'Create your own account (when ALLOW_REGISTRATION=true)', tags: ['auth'], auth: 'optional', idempotent: false,
    description: 'Limited per client address like login attempts (429 with Retry-After).',
    body: Register, responses: { 201: { body: views.schemas.User, headers: { Location: 'the new user' } }, 403: 'registration is disabled', 409: 'the username is taken' },
    // Disabled answers 403 whatever the body: not a validation error that invites a retry.
    before: [(_req, _res, next) => {
      if (!deps.allowRegistration) throw new AppError('REGISTRATION_DISABLED', 'registration is disabled on this server; ask an administrator for an account');
      next();
    }],
  }, async ({ body }, req, res) => {
    if (!(await registrationAttempt(res))) return;
    const { userId, results } = await registerUser(deps, {
      username: body.username, password: body.password, email: body.email ?? null, role: 'user',
      rateLimitPerSecond: null, rateLimitBurst: null, via: 'registration',
    }, commandContext(req, res));
    await settle(deps, res, results);
    await answerUser(res, userId, 201);
  });

  // ---- the caller's own account ----

  routes.patch({
    path: '/auth/me', summary: 'Change your email or password', tags: ['auth'], auth: true, ifMatch: true,
    description: 'Needs a session token (not an API token). A new password needs current_password and ends every session, this one included: log in again.',
    body: UpdateMe, responses: { 200: { body: views.schemas.Me, headers: { ETag: 'the user’s revision' } } },
  }, async ({ body }, req, res) => {
    const principal = requirePrincipal(res);
    if (principal.tokenId) throw forbidden('change your profile with a session token, not an API token');
    const user = await userRow({ id: principal.userId });
    if (!user) throw new AppError('UNAUTHORIZED', 'invalid token');
    const commands: IdentityCommand[] = [];
    if (body.email !== undefined) commands.push({ type: 'UpdateUser', data: { userId: user.id, email: body.email } });
    let newRef: string | null = null;
    if (body.password !== undefined) {
      if (body.current_password === undefined) throw new ValidationError([{ path: 'body.current_password', message: 'is required to set a new password' }]);
      checkPasswordPolicy(body.password);
      // Guessing the current password through here is limited like logging in.
      if (!(await loginAttempt(res, user.username))) return;
      if (!(await passwordMatches(user.password_ref, body.current_password))) {
        throw new ValidationError([{ path: 'body.current_password', message: 'is not your current password' }]);
      }
      newRef = await storePassword(vault, user.id, body.password);
      commands.push({ type: 'ChangePassword', data: { userId: user.id, passwordRef: newRef } });
    } else if (body.current_password !== undefined) {
      throw new ValidationError([{ path: 'body.current_password', message: 'is only needed with password' }]);
    }
    await runAndSettle(req, res, user, commands, newRef, newRef !== null);
    const me = await views.me({ ...principal }, callerOf(res));
    if (!me) throw new AppError('USER_NOT_FOUND', 'your account is gone');
    setEtag(res, me.revision);
    res.json(me.view);
  });

  routes.post({
    path: '/auth/tokens', summary: 'Create an API token (shown once)', tags: ['auth'], auth: true, idempotent: false,
    description: 'Needs a session token (an API token cannot mint tokens). Scopes must be a subset of your permissions (in the pinned project, when pinned). Not idempotent: a stored replay would keep the token.',
    body: CreateToken, responses: { 201: views.schemas.CreatedToken },
  }, async ({ body }, req, res) => {
    const principal = requirePrincipal(res);
    // A token that could mint tokens would outlive its own expiry and revocation.
    if (principal.tokenId) throw forbidden('create API tokens with a session token (log in), not with an API token');
    const project = body.project ?? null;
    if (project !== null) {
      const live = await db.selectFrom('projects').select('slug').where('slug', '=', project).where('deleted', '=', false).executeTakeFirst();
      if (!live || !canSeeProject(principal, project)) throw new ValidationError([{ path: 'body.project', message: 'no such project among yours' }]);
    }
    const grantable = grantablePermissions(principal, project);
    const scopes: Permission[] | null = body.scopes ? [...new Set(body.scopes)].sort() : null;
    if (scopes) {
      const beyond = scopes.filter((s) => !grantable.has(s));
      if (beyond.length > 0) {
        throw new ValidationError(beyond.map((s) => ({ path: 'body.scopes', message: `you do not hold ${s}${project ? ` in ${project}` : ''}` })));
      }
    }
    const generated = generateApiToken();
    const tokenId = randomUUID();
    const now = new Date().toISOString();
    const handle = createCommandHandler(deps.store, identityEventSchemas);
    const result = await handle(identityDecider, userStream(principal.userId), {
      type: 'IssueApiToken',
      data: {
        userId: principal.userId, tokenId, name: body.name, tokenHash: generated.tokenHash, prefix: generated.prefix,
        scopes, project, expiresAt: body.expires_at ? new Date(body.expires_at).toISOString() : null,
      },
      metadata: { now },
    }, commandContext(req, res, project));
    await settle(deps, res, [result as never]);
    const token = await views.token(tokenId);
    if (!token) throw new AppError('TIMEOUT', 'the token was created but is not readable yet; list your tokens');
    noStore(res);
    res.status(201).json({ ...token.view, token: generated.token });
  });

  routes.delete({
    path: '/auth/tokens/:id', summary: 'Revoke an API token', tags: ['auth'], auth: true, ifMatch: true,
    description: 'Your own token, or anybody’s with users:admin; with an API token, only that token itself. Effective on the next request (503 TIMEOUT if the read models lag: retry). If-Match takes the owner’s ETag (as from GET /auth/me).',
    params: TokenParams, responses: { 204: 'revoked', 404: 'no such token' },
  }, async ({ params }, req, res) => {
    const principal = requirePrincipal(res);
    // An API token may revoke itself (a CI job cleaning up); other tokens take a session.
    if (principal.tokenId && principal.tokenId !== params.id) throw forbidden('revoke other tokens with a session token; an API token may only revoke itself');
    const token = await views.token(params.id);
    if (!token || (token.userId !== principal.userId && !can(principal, 'users:admin'))) {
      throw new AppError('TOKEN_NOT_FOUND', `token ${params.id} not found`);
    }
    const results = await withIfMatch(req, (expected) =>
      runOnUser(deps, token.userId, [{ type: 'RevokeApiToken', data: { userId: token.userId, tokenId: params.id } }], commandContext(req, res), expected));
    await settle(deps, res, results, { strict: true });
    res.status(204).end();
  });

  // ---- user administration ----

  routes.post({
    path: '/users', summary: 'Create a user', tags: ['users'], auth: true, idempotent: false,
    description: 'Needs users:admin. Not idempotent: the request holds a password.',
    body: CreateUser, responses: { 201: { body: views.schemas.User, headers: { Location: 'the new user' } }, 409: 'the username is taken' },
  }, async ({ body }, req, res) => {
    requirePermission(res, 'users:admin');
    const { userId, results } = await registerUser(deps, {
      username: body.username, password: body.password, email: body.email ?? null, role: body.role,
      rateLimitPerSecond: body.rate_limit_per_second ?? null, rateLimitBurst: body.rate_limit_burst ?? null, via: 'admin',
    }, commandContext(req, res));
    await settle(deps, res, results);
    await answerUser(res, userId, 201);
  });

  routes.patch({
    path: '/users/:id', summary: 'Change a user', tags: ['users'], auth: true, ifMatch: true,
    description: 'Needs users:admin. `active: false` deactivates (every session and token of the user stops at once); a new password ends every session.',
    params: UserParams, body: UpdateUser, responses: { 200: { body: views.schemas.User, headers: { ETag: 'the user’s revision' } }, 404: 'no such user' },
  }, async ({ params, body }, req, res) => {
    const principal = requirePermission(res, 'users:admin');
    // Your own password changes through PATCH /auth/me, with the current one and a session.
    if (principal.tokenId && principal.userId === params.id && body.password !== undefined) {
      throw forbidden('change your own password with PATCH /auth/me and a session token');
    }
    const user = await userRow({ id: params.id });
    if (!user) throw new AppError('USER_NOT_FOUND', `user ${params.id} not found`);
    if ((body.role === 'user' || body.active === false) && user.role === 'admin' && user.active) await guardLastAdmin(user.id);
    const commands: IdentityCommand[] = [];
    const changes = {
      ...(body.email !== undefined ? { email: body.email } : {}),
      ...(body.role !== undefined ? { role: body.role } : {}),
      ...(body.rate_limit_per_second !== undefined ? { rateLimitPerSecond: body.rate_limit_per_second } : {}),
      ...(body.rate_limit_burst !== undefined ? { rateLimitBurst: body.rate_limit_burst } : {}),
    };
    if (Object.keys(changes).length > 0) commands.push({ type: 'UpdateUser', data: { userId: user.id, ...changes } });
    let newRef: string | null = null;
    if (body.password !== undefined) {
      checkPasswordPolicy(body.password);
      newRef = await storePassword(vault, user.id, body.password);
      commands.push({ type: 'ChangePassword', data: { userId: user.id, passwordRef: newRef } });
    }
    if (body.active === false) commands.push({ type: 'DeactivateUser', data: { userId: user.id } });
    if (body.active === true) commands.push({ type: 'ReactivateUser', data: { userId: user.id } });
    await runAndSettle(req, res, user, commands, newRef, newRef !== null || body.active === false);
    await answerUser(res, user.id, 200);
  });

  routes.delete({
    path: '/users/:id', summary: 'Deactivate a user', tags: ['users'], auth: true, ifMatch: true,
    description: 'Needs users:admin. The account is kept (the audit trail names it) but every session and token of it stops working at once.',
    params: UserParams, responses: { 204: 'deactivated', 404: 'no such user' },
  }, async ({ params }, req, res) => {
    requirePermission(res, 'users:admin');
    const user = await userRow({ id: params.id });
    if (!user) throw new AppError('USER_NOT_FOUND', `user ${params.id} not found`);
    if (user.role === 'admin' && user.active) await guardLastAdmin(user.id);
    const results = await withIfMatch(req, (expected) =>
      runOnUser(deps, user.id, [{ type: 'DeactivateUser', data: { userId: user.id } }], commandContext(req, res), expected));
    await settle(deps, res, results, { strict: true });
    const last = results.at(-1)?.append;
    if (last) setEtag(res, last.nextExpectedRevision);
    res.status(204).end();
  });

};
