// GET endpoints of proxies (SPEC §7): proxies with the status nginx really runs, their
// certificates, and the engine's health. Thin queries over projections/proxies.ts; a proxy
// in a project the caller cannot read answers 404 like a missing one. No view holds a key
// or its vault reference.
import type { Kysely, Selectable } from 'kysely';
import { z } from 'zod';
import { requirePrincipal } from '../infra/auth/authenticate.ts';
import { can, visibleProjects } from '../infra/auth/authorize.ts';
import type { Principal } from '../infra/auth/principal.ts';
import { AppError } from '../infra/errors.ts';
import type { ProxiesTable, ProxyCertificatesTable, Tables } from '../infra/db/tables.ts';
import { setEtag } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { page, PageOf, Pagination, Slug } from '../infra/http/validate.ts';
import { ProxyName } from '../infra/nginx/validateNames.ts';
import { inProjects } from './monitoring.ts';
import { projectExists } from './projects.ts';

type Routes = ReturnType<typeof bindRoutes>;
type ProxyRow = Selectable<ProxiesTable>;
type CertificateRow = Selectable<ProxyCertificatesTable>;
const Time = z.iso.datetime();
const iso = (d: Date | string | null): string | null => (d === null ? null : new Date(d).toISOString());

// ---- views -----------------------------------------------------------------------------

const ApplyError = z.strictObject({ code: z.string(), message: z.string(), at: Time }).meta({ id: 'ProxyError' });
const AcmeError = z.strictObject({ code: z.string(), message: z.string(), acme_type: z.string().nullable(), at: Time });

export const CertificateView = z.strictObject({
  domain: z.string(),
  status: z.enum(['pending', 'valid', 'renewing', 'failed', 'expired']).meta({
    description: 'pending: first order running; renewing: a valid certificate is in force while a new one is ordered; failed: no certificate, the last order failed',
  }),
  not_before: Time.nullable(), expiry: Time.nullable(), issuer: z.string().nullable(), serial: z.string().nullable(),
  issued_at: Time.nullable(), requested_at: Time.nullable(), last_error: AcmeError.nullable(),
  renewal_failures: z.number().int().meta({ description: 'renewals failed in a row; at 3, channels hear cert.expiring' }),
}).meta({ id: 'Certificate' });
export type CertificateView = z.output<typeof CertificateView>;

export const ProxyView = z.strictObject({
  name: z.string(), project: z.string(), domain: z.string(), upstream_host: z.string(), upstream_port: z.number().int(),
  upstream_scheme: z.enum(['http', 'https']), require_healthy: z.boolean(), enable_ssl: z.boolean(), websockets: z.boolean(),
  status: z.enum(['pending', 'active', 'failed']).meta({
    description: 'pending: the current definition is not applied yet; active: nginx runs it; failed: it could not be applied (nginx keeps the previous configuration)',
  }),
  last_error: ApplyError.nullable(),
  ssl_active: z.boolean().meta({ description: 'nginx serves this proxy over TLS (with an HTTP→HTTPS redirect)' }),
  applied_at: Time.nullable(), certificate: CertificateView.nullable(), created_at: Time, updated_at: Time,
}).meta({ id: 'Proxy' });
export type ProxyView = z.output<typeof ProxyView>;

export const ProxyHealthView = z.strictObject({
  nginx: z.strictObject({
    present: z.boolean(), version: z.string().nullable(), config_test_ok: z.boolean().nullable(), last_test_at: Time.nullable(),
    last_reload_at: Time.nullable(), sites_dir: z.string(),
  }),
  acme: z.strictObject({
    directory_url: z.string(), last_operation: z.string().nullable(), last_operation_at: Time.nullable(), last_error: AcmeError.nullable(),
  }),
}).meta({ id: 'ProxyHealth' });
export type ProxyHealthView = z.output<typeof ProxyHealthView>;

const toCertificateView = (c: CertificateRow, now: Date): CertificateView => ({
  domain: c.domain,
  status: (c.status === 'valid' && c.expiry !== null && new Date(c.expiry) <= now ? 'expired' : c.status) as CertificateView['status'],
  not_before: iso(c.not_before), expiry: iso(c.expiry), issuer: c.issuer, serial: c.serial, issued_at: iso(c.issued_at),
  requested_at: iso(c.requested_at), last_error: c.last_error as CertificateView['last_error'], renewal_failures: c.renewal_failures,
});

const toProxyView = (r: ProxyRow, cert: CertificateRow | undefined, now: Date): ProxyView => ({
  name: r.name, project: r.project, domain: r.domain, upstream_host: r.upstream_host, upstream_port: r.upstream_port,
  upstream_scheme: r.upstream_scheme as ProxyView['upstream_scheme'], require_healthy: r.require_healthy, enable_ssl: r.enable_ssl,
  websockets: r.websockets, status: r.status as ProxyView['status'], last_error: r.last_error as ProxyView['last_error'],
  ssl_active: r.applied_tls_serial !== null, applied_at: iso(r.applied_at), certificate: cert ? toCertificateView(cert, now) : null,
  created_at: iso(r.created_at)!, updated_at: iso(r.updated_at)!,
});

// ---- queries ---------------------------------------------------------------------------

export const ProxyFilters = Pagination.extend({
  project: Slug.optional(), status: z.enum(['pending', 'active', 'failed']).optional(),
});
export type ProxyFilters = z.output<typeof ProxyFilters>;

export type ProxyFound = { view: ProxyView; revision: bigint; project: string; row: ProxyRow; certificate: CertificateRow | null };

export const proxyQueries = (db: Kysely<Tables>, opts: { now?: () => Date } = {}) => {
  const now = opts.now ?? (() => new Date());
  const certificatesOf = async (names: string[]) => {
    if (names.length === 0) return new Map<string, CertificateRow>();
    const rows = await db.selectFrom('proxy_certificates').selectAll().where('name', 'in', names).execute();
    return new Map(rows.map((c) => [c.name, c]));
  };
  return {
    schemas: { Proxy: ProxyView, Certificate: CertificateView },

    projectExists: (slug: string): Promise<boolean> => projectExists(db, slug),

    /** A live proxy; `row` and `certificate` are for the commands and workers (the certificate row holds the key's reference: never answer it). */
    async proxy(name: string): Promise<ProxyFound | null> {
      const r = await db.selectFrom('proxies').selectAll().where('name', '=', name).where('deleted', '=', false).executeTakeFirst();
      if (!r) return null;
      const cert = (await certificatesOf([name])).get(name);
      return { view: toProxyView(r, cert, now()), revision: BigInt(r.revision), project: r.project, row: r, certificate: cert ?? null };
    },

    /** The live proxy serving `domain` (case-insensitive), if any. */
    async proxyForDomain(domain: string): Promise<{ name: string; project: string } | null> {
      return (await db.selectFrom('proxies').select(['name', 'project']).where('deleted', '=', false)
        .where((eb) => eb(eb.fn('lower', ['domain']), '=', domain.toLowerCase())).executeTakeFirst()) ?? null;
    },

    async listProxies(principal: Principal, f: ProxyFilters) {
      const projects = visibleProjects(principal, 'proxies:read', f.project);
      let q = db.selectFrom('proxies').where('deleted', '=', false);
      if (projects !== 'all') q = q.where('project', 'in', inProjects(projects));
      if (f.status) q = q.where('status', '=', f.status);
      const [rows, count] = await Promise.all([
        q.selectAll().orderBy('name').limit(f.limit).offset(f.offset).execute(),
        q.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow(),
      ]);
      const certs = await certificatesOf(rows.map((r) => r.name));
      return page(rows.map((r) => toProxyView(r, certs.get(r.name), now())), count.n, f);
    },

    async engine() {
      return (await db.selectFrom('proxy_engine').selectAll().where('id', '=', 1).executeTakeFirst()) ?? null;
    },
  };
};
export type ProxyQueries = ReturnType<typeof proxyQueries>;

// ---- routes ----------------------------------------------------------------------------

export const proxyNotFound = (name: string) => new AppError('PROXY_NOT_FOUND', `proxy ${name} not found`);

export type ProxyReadDeps = {
  db: Kysely<Tables>;
  /** nginx's presence and version (cached by the caller). */
  nginx: () => Promise<{ present: boolean; version: string | null }>;
  sitesDir: string;
  acmeDirectoryUrl: string;
  now?: () => Date;
};

const NameParams = z.object({ name: ProxyName });

export const proxyReadRoutes = (routes: Routes, deps: ProxyReadDeps): ProxyQueries => {
  const q = proxyQueries(deps.db, deps.now ? { now: deps.now } : {});

  const requireRead = async (res: Parameters<typeof requirePrincipal>[0], name: string) => {
    const found = await q.proxy(name);
    if (!found || !can(requirePrincipal(res), 'proxies:read', found.project)) throw proxyNotFound(name);
    return found;
  };

  // Before /proxies/:name, which would otherwise take `health` for a name.
  routes.get({
    path: '/proxies/health', summary: 'The proxy engine: nginx and ACME', tags: ['proxies'], auth: true,
    description: 'Whether nginx is installed, how its last configuration test and reload went, and the ACME directory with its last operation and error.',
    responses: { 200: ProxyHealthView },
  }, async (_input, _req, res) => {
    requirePrincipal(res);
    const [nginx, engine] = await Promise.all([deps.nginx(), q.engine()]);
    const view: ProxyHealthView = {
      nginx: {
        present: nginx.present, version: nginx.version, config_test_ok: engine?.config_test_ok ?? null,
        last_test_at: iso(engine?.last_test_at ?? null), last_reload_at: iso(engine?.last_reload_at ?? null), sites_dir: deps.sitesDir,
      },
      acme: {
        directory_url: deps.acmeDirectoryUrl, last_operation: engine?.acme_last_operation ?? null,
        last_operation_at: iso(engine?.acme_last_operation_at ?? null), last_error: (engine?.acme_last_error ?? null) as ProxyHealthView['acme']['last_error'],
      },
    };
    res.json(view);
  });

  routes.get({
    path: '/proxies', summary: 'List reverse proxies', tags: ['proxies'], auth: true,
    description: 'The proxies of the projects where you have proxies:read, by name. Filters: `project`, `status`.',
    query: ProxyFilters, responses: { 200: PageOf(ProxyView) },
  }, async ({ query }, _req, res) => {
    res.json(await q.listProxies(requirePrincipal(res), query));
  });

  routes.get({
    path: '/proxies/:name', summary: 'A reverse proxy', tags: ['proxies'], auth: true,
    params: NameParams, responses: { 200: { body: ProxyView, headers: { ETag: 'the proxy’s revision' } }, 404: 'no such proxy (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await requireRead(res, params.name);
    setEtag(res, found.revision);
    res.json(found.view);
  });

  routes.get({
    path: '/proxies/:name/certificate', summary: 'A proxy’s certificate', tags: ['proxies'], auth: true,
    params: NameParams, responses: { 200: CertificateView, 404: 'no such proxy, or it has no certificate (or not visible to you)' },
  }, async ({ params }, _req, res) => {
    const found = await requireRead(res, params.name);
    if (!found.view.certificate) throw new AppError('NOT_FOUND', `proxy ${params.name} has no certificate; POST /proxies/${params.name}/ssl orders one`);
    res.json(found.view.certificate);
  });

  return q;
};
