// Proxy command endpoints (SPEC §7): PUT (create or update, answering with what nginx
// made of it), DELETE, POST /ssl (issue-cert) and POST /sync (from a registry).
//
// A PUT records the definition, then waits for the applier's outcome for exactly that
// revision (workers/proxyApplier.ts) and answers with it: 200/201 with the proxy when
// nginx runs it, the problem with its code (and the proxy) when it could not, 202 with
// the proxy still pending if the applier has not finished within the wait.
import type { Response } from 'express';
import { filter, firstValueFrom, merge, timer, type Observable } from 'rxjs';
import { z } from 'zod';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { proxyDecider, proxyNotFound, proxyStream, type ProxyDefinition } from '../domain/proxies.ts';
import { requirePrincipal, requireResourceAccess } from '../infra/auth/authenticate.ts';
import { can, visibleProjects } from '../infra/auth/authorize.ts';
import type { Principal } from '../infra/auth/principal.ts';
import { AppError } from '../infra/errors.ts';
import { setEtag, withIfMatch } from '../infra/http/conditional.ts';
import { statusOf } from '../infra/http/errorStatus.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { sendProblem } from '../infra/http/problem.ts';
import { ProxyName } from '../infra/nginx/validateNames.ts';
import type { Vault } from '../infra/vault.ts';
import { commandContext, settle, type CommandKit } from './commandRoute.ts';
import { streamCommandRunner, type AnyCommandResult, type CommandContext } from './handleCommand.ts';
import { requireProject } from './nodes.ts';
import { proxyEventSchemas } from './proxySchemas.ts';
import { ProxyBody, type ProxyBody as ProxyBodyT } from './proxyBody.ts';
import { fetchRegistry } from './proxyRegistry.ts';

type Routes = ReturnType<typeof bindRoutes>;

/** A proxy as the read side shows it (handed in by the composition root). */
export type ProxyFound = {
  view: { status: 'pending' | 'active' | 'failed'; last_error: { code: string; message: string } | null; certificate: unknown | null };
  revision: bigint; project: string;
  row: { handled_revision: string | null; site_removed: boolean; applied_definition: unknown | null };
};

export type ProxyViews = {
  proxy(name: string): Promise<ProxyFound | null>;
  proxyForDomain(domain: string): Promise<{ name: string; project: string } | null>;
  projectExists(slug: string): Promise<boolean>;
  schemas: { Proxy: z.ZodType; Certificate: z.ZodType };
};

export type ProxyCommandDeps = CommandKit & {
  views: ProxyViews;
  vault: Pick<Vault, 'deleteOwner'>;
  /** Read-model changes (the projection runtime's): the applier's outcomes arrive here. */
  changes$: Observable<{ topic: string; kind: string; id: string }>;
  renewBeforeDays: number;
  acmeEmail: string | undefined;
  registryUrl: string | undefined;
  /** How long a PUT, DELETE or sync waits for nginx before answering 202 (default 30 s). */
  applyWaitMs?: number;
};

/** The vault owner of a proxy's keys: deleting the proxy shreds them. */
export const proxySecretOwner = (name: string) => `proxy:${name}`;


const NameParams = z.object({ name: ProxyName });
const SslBody = z.strictObject({
  email: z.email().optional().meta({ description: 'the ACME account’s contact; default ACME_EMAIL' }),
  force_renew: z.boolean().default(false).meta({ description: 'order a new certificate even if the current one is not due' }),
});
const SyncBody = z.strictObject({ registry_url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional() });

const SyncedItem = z.strictObject({
  name: z.string(), status: z.enum(['pending', 'active', 'failed']), changed: z.boolean(),
  error: z.strictObject({ code: z.string(), message: z.string() }).nullable(),
});
const SkippedItem = z.strictObject({ name: z.string().nullable(), reason: z.string(), code: z.string() });
const SyncResult = z.strictObject({
  registry_url: z.string(), synced: z.array(SyncedItem), synced_count: z.number().int(),
  skipped: z.array(SkippedItem), skipped_count: z.number().int(),
}).meta({ id: 'ProxySyncResult' });

const definitionFrom = (b: ProxyBodyT): ProxyDefinition => ({
  domain: b.domain.toLowerCase(), upstreamHost: b.upstream_host, upstreamPort: b.upstream_port, upstreamScheme: b.upstream_scheme,
  requireHealthy: b.require_healthy, enableSsl: b.enable_ssl, websockets: b.websockets,
});

export const proxyCommandRunner = (store: CommandKit['store']) => streamCommandRunner(store, proxyEventSchemas, proxyDecider, proxyStream);

const conflict = (message: string) => new AppError('CONFLICT', message);

export const proxyCommandRoutes = (routes: Routes, deps: ProxyCommandDeps): void => {
  const run = proxyCommandRunner(deps.store);
  const waitMs = deps.applyWaitMs ?? 30_000;

  /** The proxy, if visible (404 otherwise), and 403 without `permission` in its project. */
  const requireProxy = async (principal: Principal, name: string, permission: 'proxies:write' | 'certs:write') => {
    const found = await deps.views.proxy(name);
    if (!found) throw proxyNotFound(name);
    requireResourceAccess(principal, found.project, permission, () => proxyNotFound(name));
    return found;
  };

  /**
   * Waits until `done` holds for the proxy's read model, re-checking on each of its
   * changes; the proxy as it is then (null: gone), and whether `done` held.
   */
  const waitFor = async (name: string, done: (p: ProxyFound | null) => boolean, deadline: number) => {
    const mine = deps.changes$.pipe(filter((c) => c.topic === 'proxies' && c.id === name));
    for (;;) {
      // Subscribed before the read, so a change between the read and the wait is not missed.
      const next = firstValueFrom(merge(mine, timer(Math.max(0, deadline - Date.now()))));
      const found = await deps.views.proxy(name);
      if (done(found)) return { found, done: true };
      if (Date.now() >= deadline) return { found, done: false };
      await next;
    }
  };
  const applied = (revision: number) => (p: ProxyFound | null) =>
    p === null || (p.row.handled_revision !== null && Number(p.row.handled_revision) >= revision);

  /** Everything a PUT checks before it records: access, the project, the domain. Throws the problem. */
  const configure = async (principal: Principal, name: string, body: ProxyBodyT, ctx: CommandContext, expected?: bigint) => {
    const existing = await deps.views.proxy(name);
    const project = body.project ?? existing?.project ?? DEFAULT_PROJECT;
    if (existing) {
      if (!can(principal, 'proxies:read', existing.project)) throw conflict(`the proxy name ${name} is taken`);
      requireResourceAccess(principal, existing.project, 'proxies:write', () => proxyNotFound(name));
      if (existing.project !== project) throw conflict(`proxy ${name} belongs to project ${existing.project}; a proxy cannot move between projects`);
    } else {
      requireResourceAccess(principal, project, 'proxies:write', () => new AppError('PROJECT_NOT_FOUND', `project ${project} not found`));
      await requireProject(deps.views, project);
    }
    const definition = definitionFrom(body);
    const other = await deps.views.proxyForDomain(definition.domain);
    if (other && other.name !== name) {
      throw conflict(`the domain ${definition.domain} is served by ${can(principal, 'proxies:read', other.project) ? `proxy ${other.name}` : 'another proxy'}`);
    }
    const result = await run(name, { type: 'ConfigureProxy', data: { name, project, ...definition } }, { ...ctx, project }, expected);
    return { existed: existing !== null, result, revision: result.append ? Number(result.append.nextExpectedRevision) : null };
  };

  const answerApplied = (res: Response, found: ProxyFound | null, name: string, created: boolean, done: boolean) => {
    if (!found) throw proxyNotFound(name);
    setEtag(res, found.revision);
    if (!done) {
      res.status(202).json(found.view);
      return;
    }
    const error = found.view.status === 'failed' ? found.view.last_error : null;
    if (error) {
      sendProblem(res, { status: statusOf(error.code, 502), code: error.code, detail: error.message, extra: { proxy: found.view } });
      return;
    }
    if (created) res.setHeader('Location', `/api/v1/proxies/${name}`);
    res.status(created ? 201 : 200).json(found.view);
  };

  routes.put({
    path: '/proxies/:name', summary: 'Create or update a reverse proxy, and apply it', tags: ['proxies'], auth: true, ifMatch: true,
    description: [
      'Needs proxies:write. Records the definition, then renders its nginx server block, writes it atomically, runs `nginx -t` on the whole',
      'configuration and reloads; on any failure the previous files are restored and nginx reloaded, and the answer is the problem',
      '(UPSTREAM_UNHEALTHY, NGINX_TEST_FAILED, NGINX_RELOAD_FAILED, CONFIG_WRITE_FAILED) with the proxy in `proxy`. 202 if nginx took longer than the wait.',
      'The same definition again changes nothing (200).',
    ].join(' '),
    params: NameParams, body: ProxyBody,
    responses: {
      200: { body: deps.views.schemas.Proxy, headers: { ETag: 'the proxy’s revision' } },
      201: { body: deps.views.schemas.Proxy, headers: { Location: 'the new proxy' } },
      202: { body: deps.views.schemas.Proxy, description: 'recorded, not applied yet: GET it, or follow proxy:{name}' },
      409: 'the name is taken in another project, or the domain is served by another proxy',
      422: 'NGINX_TEST_FAILED: nginx refused the configuration; the previous one still serves',
      502: 'UPSTREAM_UNHEALTHY or NGINX_RELOAD_FAILED',
    },
  }, async ({ params, body }, req, res) => {
    const principal = requirePrincipal(res);
    const outcome = await withIfMatch(req, (expected) => configure(principal, params.name, body, commandContext(req, res), expected));
    await settle(deps, res, [outcome.result]);
    if (outcome.revision === null) {
      answerApplied(res, await deps.views.proxy(params.name), params.name, false, true);
      return;
    }
    const { found, done } = await waitFor(params.name, applied(outcome.revision), Date.now() + waitMs);
    answerApplied(res, found, params.name, !outcome.existed, done);
  });

  routes.delete({
    path: '/proxies/:name', summary: 'Delete a reverse proxy', tags: ['proxies'], auth: true, ifMatch: true,
    description: 'Needs proxies:write. Removes its server block (tested and reloaded like any change), its certificate files, and shreds its keys.',
    params: NameParams, responses: { 204: 'deleted', 404: 'no such proxy (or not visible to you)' },
  }, async ({ params }, req, res) => {
    const found = await requireProxy(requirePrincipal(res), params.name, 'proxies:write');
    const result = await withIfMatch(req, (expected) =>
      run(params.name, { type: 'DeleteProxy', data: { name: params.name } }, commandContext(req, res, found.project), expected));
    await deps.vault.deleteOwner(proxySecretOwner(params.name));
    await settle(deps, res, [result]);
    // The site goes in the applier's next pass; answer once it has (or the wait is over: it keeps trying).
    await waitFor(params.name, (p) => p === null || p.row.site_removed, Date.now() + waitMs);
    res.status(204).end();
  });

  routes.post({
    path: '/proxies/:name/ssl', summary: 'Order a certificate (issue-cert)', tags: ['proxies'], auth: true,
    description: [
      'Needs certs:write. The ACME worker orders a certificate from ACME_DIRECTORY_URL with an HTTP-01 challenge served by the proxy’s own',
      'server block, keeps its key in the vault, writes key (0600) and chain for nginx and applies the proxy with TLS and an HTTP→HTTPS redirect.',
      '202 with the certificate `pending` (or `renewing`); follow GET /proxies/{name}/certificate or proxy:{name}. A valid certificate that is not',
      'due for renewal answers 200 unchanged unless `force_renew`.',
    ].join(' '),
    params: NameParams, body: SslBody,
    responses: {
      200: deps.views.schemas.Certificate, 202: deps.views.schemas.Certificate,
      404: 'no such proxy (or not visible to you)', 409: 'the proxy has never been applied: nginx cannot serve the challenge',
    },
  }, async ({ params, body }, req, res) => {
    const found = await requireProxy(requirePrincipal(res), params.name, 'certs:write');
    if (found.row.applied_definition === null) {
      throw conflict(`proxy ${params.name} is not applied (${found.view.status}): nginx must serve it before an ACME server can validate it`);
    }
    const result = await run(params.name, { type: 'RequestCertificate', data: {
      name: params.name, email: body.email ?? deps.acmeEmail ?? null, reason: 'requested', force: body.force_renew,
      requestedAt: new Date().toISOString(), renewBeforeDays: deps.renewBeforeDays,
    } }, commandContext(req, res, found.project));
    await settle(deps, res, [result]);
    const now = await deps.views.proxy(params.name);
    if (!now?.view.certificate) throw proxyNotFound(params.name);
    res.status(result.append ? 202 : 200).json(now.view.certificate);
  });

  routes.post({
    path: '/proxies/sync', summary: 'Create or update proxies from a registry', tags: ['proxies'], auth: true,
    description: [
      'Needs proxies:write (checked per proxy in its project). Fetches REGISTRY_URL (or `registry_url`): a JSON list of proxies, each as a PUT',
      'body plus `name` (bare, or as `{proxies: [...]}`). Each is created or updated and applied like a PUT; proxies missing from the registry',
      'are left alone. Answers what was synced (with each one’s status) and what was skipped and why.',
    ].join(' '),
    body: SyncBody,
    responses: { 200: SyncResult, 400: 'REGISTRY_NOT_CONFIGURED', 502: 'REGISTRY_UNAVAILABLE: not reachable, not 2xx, or not a list' },
  }, async ({ body }, req, res) => {
    const principal = requirePrincipal(res);
    const writable = visibleProjects(principal, 'proxies:write');
    if (writable !== 'all' && writable.length === 0) throw new AppError('FORBIDDEN', 'syncing proxies needs proxies:write in some project');
    const url = body.registry_url ?? deps.registryUrl;
    if (!url) throw new AppError('REGISTRY_NOT_CONFIGURED', 'no registry: set REGISTRY_URL, or send {"registry_url": "..."}');
    const entries = await fetchRegistry(url);
    const skipped: z.output<typeof SkippedItem>[] = [];
    const recorded: { name: string; revision: number | null; result: AnyCommandResult }[] = [];
    const seen = new Set<string>();
    for (const entry of entries) {
      if (!entry.ok) {
        skipped.push({ name: entry.name, reason: entry.reason, code: 'VALIDATION_FAILED' });
        continue;
      }
      const { name, body: proxy } = entry;
      if (seen.has(name)) {
        skipped.push({ name, reason: 'listed more than once in the registry: the first one was synced', code: 'CONFLICT' });
        continue;
      }
      seen.add(name);
      try {
        const outcome = await configure(principal, name, proxy, commandContext(req, res));
        recorded.push({ name, revision: outcome.revision, result: outcome.result });
      } catch (err) {
        const e = err as { code?: string; message: string };
        if (typeof e.code !== 'string') throw err;
        skipped.push({ name, reason: e.message, code: e.code });
      }
    }
    await settle(deps, res, recorded.map((r) => r.result));
    const deadline = Date.now() + waitMs;
    const synced: z.output<typeof SyncedItem>[] = [];
    for (const r of recorded) {
      const { found } = r.revision === null ? { found: await deps.views.proxy(r.name) } : await waitFor(r.name, applied(r.revision), deadline);
      const view = found?.view;
      synced.push({
        name: r.name, status: view?.status ?? 'pending', changed: r.revision !== null,
        error: view?.status === 'failed' && view.last_error ? { code: view.last_error.code, message: view.last_error.message } : null,
      });
    }
    res.json({ registry_url: url, synced, synced_count: synced.length, skipped, skipped_count: skipped.length });
  });
};

