// System command endpoints (SPEC §6): SSH hosts jobs run on. Credentials (a password, or
// a private key and its passphrase) go to the vault only: events carry a reference, no
// response or log line ever holds them, and deleting the system deletes them.
import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
// ssh2 is CommonJS: Node's ESM loader sees only its default export.
import ssh2 from 'ssh2';
import { z } from 'zod';
import { DomainError } from '../domain/domainError.ts';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { systemDecider, systemStream, type AuthKind } from '../domain/jobs.ts';
import { requirePrincipal, requireProjectAccess, requireResourceAccess } from '../infra/auth/authenticate.ts';
import type { ProjectPermission } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';
import { withIfMatch } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid, ValidationError } from '../infra/http/validate.ts';
import type { Vault } from '../infra/vault.ts';
import { commandContext, PlainText, settle, type CommandKit, answerResource } from './commandRoute.ts';
import { streamCommandRunner, type AnyCommandResult } from './handleCommand.ts';
import { jobEventSchemas } from './jobSchemas.ts';
import { Address, Labels } from './monitoringSchemas.ts';
import { requireProject } from './nodes.ts';

type Routes = ReturnType<typeof bindRoutes>;

/** The system row the commands and the runner need (read side, handed in by the composition root). */
export type SystemRow = {
  id: string; name: string; project: string; hostname: string; port: number; username: string; system_type: string;
  auth_kind: string; credential_ref: string; host_key_fingerprint: string | null; is_active: boolean;
};

export type SystemTestOutcome =
  | { success: true; responseTimeMs: number; whoami: string; hostname: string; osInfo: string; hostKeyFingerprint: string }
  | { success: false; error: string; code: string; hostKeyFingerprint: string | null };

export type SystemViews = {
  system(id: string): Promise<{ view: unknown; revision: bigint; project: string; row: SystemRow } | null>;
  projectExists(slug: string): Promise<boolean>;
  schemas: { System: z.ZodType };
};

export type SystemCommandDeps = CommandKit & {
  vault: Pick<Vault, 'put' | 'deleteOwner' | 'delete'>;
  views: SystemViews;
  /** Connects and runs whoami, hostname and an OS probe (the job engine's SSH pool). */
  testSystem(row: SystemRow): Promise<SystemTestOutcome>;
};

/** The vault owner of a system's credentials: deleting the system deletes them all. */
export const systemSecretOwner = (systemId: string) => `system:${systemId}`;

const SshUsername = z.string().regex(/^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}\$?$/, 'must be a user name: letters, digits, dots, dashes, underscores');
const Auth = z.union([
  z.strictObject({ password: z.string().min(1).max(1024) }),
  z.strictObject({ private_key: z.string().min(1).max(16_384), passphrase: z.string().max(1024).optional() }),
], { error: 'must be {password} or {private_key, passphrase?}' }).meta({ id: 'SystemAuth', description: 'write-only: never returned' });
type Auth = z.output<typeof Auth>;

const SystemBody = {
  name: PlainText(1, 100), hostname: Address, port: z.number().int().min(1, 'must be a port, 1–65535').max(65535, 'must be a port, 1–65535'),
  system_type: z.enum(['linux', 'windows']), username: SshUsername, auth: Auth, description: PlainText(0, 1000).nullable(),
  labels: Labels, is_active: z.boolean(),
};
const CreateSystem = z.strictObject({
  ...SystemBody, project: Slug.default(DEFAULT_PROJECT), port: SystemBody.port.default(22), system_type: SystemBody.system_type.default('linux'),
  description: SystemBody.description.optional(), labels: SystemBody.labels.optional(), is_active: SystemBody.is_active.optional(),
});
const UpdateSystem = z.strictObject(Object.fromEntries(Object.entries(SystemBody).map(([k, v]) => [k, v.optional()])) as {
  [K in keyof typeof SystemBody]: z.ZodOptional<(typeof SystemBody)[K]>
});
const IdParams = z.object({ id: Uuid });

const TestResult = z.union([
  z.strictObject({
    success: z.literal(true), response_time_ms: z.number(),
    system_info: z.strictObject({ whoami_output: z.string(), hostname: z.string(), os_info: z.string() }), host_key_fingerprint: z.string(),
  }),
  z.strictObject({ success: z.literal(false), error: z.string(), code: z.string(), host_key_fingerprint: z.string().nullable() }),
]).meta({ id: 'SystemTestResult' });

/** A private key must parse (and decrypt with its passphrase) now, not at the first job. */
const checkKey = (auth: Auth, at: string) => {
  if (!('private_key' in auth)) return;
  const parsed = ssh2.utils.parseKey(auth.private_key, auth.passphrase);
  if (parsed instanceof Error) {
    const msg = /passphrase|encrypt|decrypt/i.test(parsed.message)
      ? 'the private key is encrypted: the passphrase is missing or wrong' : 'is not a private key in a format SSH understands (OpenSSH, PEM)';
    throw new ValidationError([{ path: `body.${at}.${/passphrase/.test(msg) ? 'passphrase' : 'private_key'}`, message: msg }]);
  }
};

const storeCredentials = (vault: SystemCommandDeps['vault'], systemId: string, auth: Auth): Promise<string> =>
  vault.put(systemSecretOwner(systemId), 'ssh-credentials', JSON.stringify(
    'password' in auth ? { password: auth.password } : { privateKey: auth.private_key, passphrase: auth.passphrase ?? null }));

const authKindOf = (auth: Auth): AuthKind => ('password' in auth ? 'password' : 'private_key');

const systemNotFound = (id: string) => new DomainError('SYSTEM_NOT_FOUND', `system ${id} not found`);

/** The system, if visible (404 otherwise), and 403 without `permission` in its project. */
export const requireSystem = async (views: Pick<SystemViews, 'system'>, principal: Principal, id: string, permission: ProjectPermission) => {
  const found = await views.system(id);
  if (!found) throw systemNotFound(id);
  requireResourceAccess(principal, found.project, permission, () => systemNotFound(id));
  return found;
};

export const systemCommandRunner = (store: CommandKit['store']) => streamCommandRunner(store, jobEventSchemas, systemDecider, systemStream);

export const systemCommandRoutes = (routes: Routes, deps: SystemCommandDeps): void => {
  const run = systemCommandRunner(deps.store);
  const answer = async (res: Response, id: string, status: number) =>
    answerResource(res, await deps.views.system(id), { status, location: `/api/v1/systems/${id}`, notFound: () => systemNotFound(id) });

  routes.post({
    path: '/systems', summary: 'Register an SSH system', tags: ['systems'], auth: true,
    description: 'Needs systems:write. `auth` is write-only: kept in the encrypted vault, never returned, logged or put in an event.',
    body: CreateSystem, responses: { 201: { body: deps.views.schemas.System, headers: { Location: 'the new system' } } },
  }, async ({ body }, req, res) => {
    requireProjectAccess(res, body.project, 'systems:write');
    await requireProject(deps.views, body.project);
    checkKey(body.auth, 'auth');
    const systemId = randomUUID();
    const credentialRef = await storeCredentials(deps.vault, systemId, body.auth);
    let result: AnyCommandResult;
    try {
      result = await run(systemId, { type: 'RegisterSystem', data: {
        systemId, name: body.name, project: body.project, hostname: body.hostname, port: body.port, systemType: body.system_type,
        username: body.username, authKind: authKindOf(body.auth), credentialRef, description: body.description ?? null,
        labels: body.labels ?? {}, isActive: body.is_active ?? true,
      } }, commandContext(req, res, body.project));
    } catch (err) {
      await deps.vault.deleteOwner(systemSecretOwner(systemId)).catch(() => undefined);
      throw err;
    }
    await settle(deps, res, [result]);
    await answer(res, systemId, 201);
  });

  routes.patch({
    path: '/systems/:id', summary: 'Change a system', tags: ['systems'], auth: true, ifMatch: true,
    description: 'Needs systems:write. A new `auth` replaces the stored credentials; a new hostname or port forgets the pinned host key.',
    params: IdParams, body: UpdateSystem,
    responses: { 200: { body: deps.views.schemas.System, headers: { ETag: 'the system’s revision' } }, 404: 'no such system (or not visible to you)' },
  }, async ({ params, body }, req, res) => {
    const found = await requireSystem(deps.views, requirePrincipal(res), params.id, 'systems:write');
    if (body.auth) checkKey(body.auth, 'auth');
    const { auth, system_type, is_active, ...rest } = body;
    const previousRef = found.row.credential_ref;
    const credentialRef = auth ? await storeCredentials(deps.vault, params.id, auth) : undefined;
    const changes = Object.fromEntries(Object.entries({
      ...rest, systemType: system_type, isActive: is_active,
      ...(auth ? { authKind: authKindOf(auth), credentialRef } : {}),
    }).filter(([, v]) => v !== undefined));
    let result: AnyCommandResult;
    try {
      result = await withIfMatch(req, (expected) =>
        run(params.id, { type: 'UpdateSystem', data: { systemId: params.id, ...changes } }, commandContext(req, res, found.project), expected));
    } catch (err) {
      if (credentialRef) await deps.vault.delete(credentialRef).catch(() => undefined);
      throw err;
    }
    // The old credentials go once the new ones are in the log.
    if (credentialRef) await deps.vault.delete(previousRef);
    await settle(deps, res, [result]);
    await answer(res, params.id, 200);
  });

  routes.delete({
    path: '/systems/:id', summary: 'Delete a system (and its credentials)', tags: ['systems'], auth: true, ifMatch: true,
    params: IdParams, responses: { 204: 'deleted', 404: 'no such system (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const found = await requireSystem(deps.views, requirePrincipal(res), params.id, 'systems:write');
    const result = await withIfMatch(req, (expected) =>
      run(params.id, { type: 'DeleteSystem', data: { systemId: params.id } }, commandContext(req, res, found.project), expected));
    await deps.vault.deleteOwner(systemSecretOwner(params.id));
    await settle(deps, res, [result]);
    res.status(204).end();
  });

  routes.delete({
    path: '/systems/:id/host-key', summary: 'Forget a system’s pinned host key', tags: ['systems'], auth: true,
    description: 'Needs systems:write. The next connection pins whatever key the host presents: do this only once you know why the key changed.',
    params: IdParams, responses: { 200: { body: deps.views.schemas.System }, 404: 'no such system (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const found = await requireSystem(deps.views, requirePrincipal(res), params.id, 'systems:write');
    const result = await run(params.id, { type: 'ClearHostKey', data: { systemId: params.id } }, commandContext(req, res, found.project));
    await settle(deps, res, [result]);
    await answer(res, params.id, 200);
  });

  routes.post({
    path: '/systems/:id/test', summary: 'Test the connection: whoami, host name, OS', tags: ['systems'], auth: true, idempotent: false,
    description: 'Needs systems:write. Pins the host key on first contact; records the system’s health. A failure answers 200 with `success: false`.',
    params: IdParams, responses: { 200: TestResult, 404: 'no such system (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const found = await requireSystem(deps.views, requirePrincipal(res), params.id, 'systems:write');
    const outcome = await deps.testSystem(found.row);
    const ctx = commandContext(req, res, found.project);
    const results: AnyCommandResult[] = [await run(params.id, { type: 'RecordSystemCheck', data: {
      systemId: params.id, healthy: outcome.success, checkedAt: new Date().toISOString(),
      responseTimeMs: outcome.success ? outcome.responseTimeMs : null, error: outcome.success ? null : outcome.error,
    } }, ctx)];
    if (outcome.success && found.row.host_key_fingerprint === null) {
      results.push(await run(params.id, { type: 'PinHostKey', data: { systemId: params.id, fingerprint: outcome.hostKeyFingerprint } }, ctx));
    }
    await settle(deps, res, results);
    res.json(outcome.success
      ? { success: true, response_time_ms: outcome.responseTimeMs, system_info: { whoami_output: outcome.whoami, hostname: outcome.hostname, os_info: outcome.osInfo }, host_key_fingerprint: outcome.hostKeyFingerprint }
      : { success: false, error: outcome.error, code: outcome.code, host_key_fingerprint: outcome.hostKeyFingerprint });
  });
};
