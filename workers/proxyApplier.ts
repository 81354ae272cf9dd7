// The nginx applier (SPEC §7): makes nginx run what the proxies read model asks for, one
// proxy at a time, and records each outcome as an event.
//
// It reconciles instead of replaying: a proxy needs work when its desired pair (config
// revision, certificate serial) differs from the pair of its last recorded outcome, or
// when it was deleted and its site is still on disk. So a restart in the middle of an
// apply simply finds the proxy still pending and applies it again; and the content to
// restore on failure is rendered from what was last applied (the read model), never taken
// from disk, where the crash may have left an untested file. On start it also re-renders
// every applied proxy and re-applies those whose file differs (a crash, or new listen
// ports), and sweeps temp files left by an interrupted write.
import { access, mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import { filter, type Observable, type Subscription } from 'rxjs';
import { sameDefinition, type ProxyDefinition, type ProxyErrorCode } from '../domain/proxies.ts';
import type { Tables } from '../infra/db/tables.ts';
import { runCheck } from '../infra/healthCheck.ts';
import type { Logger } from 'pino';
import { applySite, removeSite, type NginxTarget } from '../infra/nginx/nginxApplier.ts';
import { NginxError } from '../infra/nginx/nginxError.ts';
import { renderServerBlock, type ServerBlockInput } from '../infra/nginx/renderServerBlock.ts';
import { isIpAddress } from '../infra/nginx/validateNames.ts';
import type { Vault } from '../infra/vault.ts';
import { repeatingPass } from '../infra/repeatingPass.ts';
import type { Worker } from '../infra/workers.ts';

/** Which proxy, and its project (for the outcome's event metadata). */
export type ProxyRef = { name: string; project: string };

export type ApplyOutcome =
  | { ok: true; configRevision: number; definition: ProxyDefinition; tlsSerial: string | null; appliedAt: string }
  | { ok: false; configRevision: number; tlsSerial: string | null; code: ProxyErrorCode; message: string; at: string };

export type ProxyApplierDeps = {
  db: Kysely<Tables>;
  nginx: NginxTarget;
  listen: ServerBlockInput['listen'];
  acmeWebroot: string;
  certsDir: string;
  healthCheck: { path: string; timeoutMs: number };
  vault: Pick<Vault, 'getText'>;
  /** Records an outcome (a command on the proxy's stream). */
  record(proxy: ProxyRef, outcome: ApplyOutcome): Promise<void>;
  recordSiteRemoved(proxy: ProxyRef, at: string): Promise<void>;
  /** Asks for a first certificate for a proxy with enable_ssl that has none. */
  requestCertificate(proxy: ProxyRef): Promise<void>;
  /** Read-model changes that may mean work (any; the applier filters). */
  changes$: Observable<{ topic: string; kind: string }>;
  logger: Logger;
  /** A safety net besides the wake-ups (default 30 s). */
  tickMs?: number;
};

const WAKE_KINDS = new Set(['ProxyConfigured', 'ProxyDeleted', 'CertificateIssued']);
const MAX_MESSAGE = 3000;

type Work = ProxyRef & {
  deleted: boolean; siteRemoved: boolean; configRevision: number; definition: ProxyDefinition;
  handled: string | null; applied: ProxyDefinition | null; appliedSerial: string | null;
  cert: { serial: string; keyRef: string; chainPem: string } | null; hasCertificate: boolean;
};

const pairKey = (revision: number, serial: string | null) => `${revision}/${serial ?? '-'}`;

/** `[::1]` for IPv6 in URLs. */
const urlHost = (host: string) => (isIpAddress(host) && host.includes(':') ? `[${host}]` : host);

export const certFiles = (certsDir: string, name: string, serial: string) => ({
  dir: join(certsDir, name), certPath: join(certsDir, name, `${serial}.crt`), keyPath: join(certsDir, name, `${serial}.key`),
});

const exists = (path: string) => access(path).then(() => true, () => false);

export const createProxyApplier = (deps: ProxyApplierDeps): Worker & { reconcile(): Promise<void> } => {
  const { db, logger } = deps;
  const log = logger.child({ worker: 'proxy-applier' });
  /** Outcomes this process recorded, by proxy: the read model may not show them yet. */
  const handled = new Map<string, string>();
  /** Proxies to re-apply whatever their pair says (found different on disk at start). */
  const forced = new Set<string>();
  let stopped = true;
  let subscription: Subscription | null = null;
  let timer: NodeJS.Timeout | null = null;
  let lastError: string | null = null;

  const render = (name: string, d: ProxyDefinition, serial: string | null) => renderServerBlock({
    name, domains: [d.domain], upstream: { host: d.upstreamHost, port: d.upstreamPort, scheme: d.upstreamScheme }, websockets: d.websockets,
    listen: deps.listen, acmeWebroot: deps.acmeWebroot,
    tls: serial === null ? null : (({ certPath, keyPath }) => ({ certPath, keyPath }))(certFiles(deps.certsDir, name, serial)),
  });

  const load = async (): Promise<Work[]> => {
    const rows = await db.selectFrom('proxies as p').leftJoin('proxy_certificates as c', 'c.name', 'p.name')
      .select([
        'p.name', 'p.project', 'p.deleted', 'p.site_removed', 'p.config_revision', 'p.domain', 'p.upstream_host', 'p.upstream_port', 'p.upstream_scheme',
        'p.require_healthy', 'p.enable_ssl', 'p.websockets', 'p.handled_revision', 'p.handled_tls_serial', 'p.applied_definition',
        'p.applied_tls_serial', 'c.serial', 'c.key_ref', 'c.chain_pem', 'c.status as cert_status',
      ]).where((eb) => eb.or([eb('p.deleted', '=', false), eb('p.site_removed', '=', false)])).orderBy('p.name').execute();
    return rows.map((r) => {
      const cert = r.serial && r.key_ref && r.chain_pem ? { serial: r.serial, keyRef: r.key_ref, chainPem: r.chain_pem } : null;
      return {
        name: r.name, project: r.project, deleted: r.deleted, siteRemoved: r.site_removed, configRevision: Number(r.config_revision),
        definition: {
          domain: r.domain, upstreamHost: r.upstream_host, upstreamPort: r.upstream_port, upstreamScheme: r.upstream_scheme as ProxyDefinition['upstreamScheme'],
          requireHealthy: r.require_healthy, enableSsl: r.enable_ssl, websockets: r.websockets,
        },
        handled: r.handled_revision === null ? null : pairKey(Number(r.handled_revision), r.handled_tls_serial),
        applied: (r.applied_definition as ProxyDefinition | null) ?? null, appliedSerial: r.applied_tls_serial,
        cert, hasCertificate: r.cert_status !== null,
      };
    });
  };

  const needsWork = (w: Work): boolean => {
    if (w.deleted) return !w.siteRemoved && handled.get(w.name) !== 'removed';
    const desired = pairKey(w.configRevision, w.cert?.serial ?? null);
    return forced.has(w.name) || (w.handled !== desired && handled.get(w.name) !== desired);
  };

  /** Writes the certificate's files for nginx if they are not there (key 0600), from the read model and the vault. */
  const materialize = async (name: string, cert: NonNullable<Work['cert']>) => {
    const files = certFiles(deps.certsDir, name, cert.serial);
    await mkdir(files.dir, { recursive: true, mode: 0o755 });
    if (!(await exists(files.keyPath))) {
      const key = await deps.vault.getText(cert.keyRef);
      if (key === null) throw new NginxError('CONFIG_WRITE_FAILED', `the key of certificate ${cert.serial} is missing from the vault`, '');
      await writeFile(files.keyPath, key, { mode: 0o600 });
    }
    if (!(await exists(files.certPath))) await writeFile(files.certPath, cert.chainPem, { mode: 0o644 });
  };

  /** Certificate files of the proxy other than those of `keep` (after nginx stopped using them). */
  const pruneCertFiles = async (name: string, keep: string | null) => {
    const dir = join(deps.certsDir, name);
    if (keep === null) return rm(dir, { recursive: true, force: true });
    const entries = await readdir(dir).catch(() => [] as string[]);
    await Promise.all(entries.filter((f) => !f.startsWith(`${keep}.`)).map((f) => unlink(join(dir, f)).catch(() => undefined)));
  };

  const healthy = async (d: ProxyDefinition): Promise<string | null> => {
    const url = `${d.upstreamScheme}://${urlHost(d.upstreamHost)}:${d.upstreamPort}${deps.healthCheck.path}`;
    const outcome = await runCheck({ type: 'http', url, expectStatus: null, timeoutMs: deps.healthCheck.timeoutMs });
    return outcome.status === 'up' ? null : `the upstream ${url} is unhealthy: ${outcome.error ?? 'no answer'}`;
  };

  const applyOne = async (w: Work): Promise<void> => {
    const at = () => new Date().toISOString();
    if (w.deleted) {
      try {
        await removeSite({ ...deps.nginx, name: w.name, reloadIfAbsent: true });
        await pruneCertFiles(w.name, null);
        await deps.recordSiteRemoved(w, at());
        handled.set(w.name, 'removed');
      } catch (err) {
        // Retried on the next tick; the proxy is gone from the API already.
        lastError = (err as Error).message;
        log.error({ proxy: w.name, code: (err as { code?: string }).code, err: lastError }, 'could not remove a deleted proxy’s site');
        handled.set(w.name, 'removed');
        setTimeout(() => handled.delete(w.name), deps.tickMs ?? 30_000).unref();
      }
      return;
    }
    const serial = w.cert?.serial ?? null;
    const fail = async (code: ProxyErrorCode, message: string) => {
      lastError = message;
      await deps.record(w, { ok: false, configRevision: w.configRevision, tlsSerial: serial, code, message: message.slice(0, MAX_MESSAGE), at: at() });
    };
    // A certificate change of a definition nginx already routes needs no new health check.
    const routedAlready = w.applied !== null && sameDefinition(w.applied, w.definition);
    if (w.definition.requireHealthy && !routedAlready) {
      const unhealthy = await healthy(w.definition);
      if (unhealthy) return fail('UPSTREAM_UNHEALTHY', unhealthy);
    }
    try {
      if (w.cert) await materialize(w.name, w.cert);
      const previous = w.applied === null ? null : render(w.name, w.applied, w.appliedSerial);
      await applySite({ ...deps.nginx, name: w.name, content: render(w.name, w.definition, serial), previous });
    } catch (err) {
      if (err instanceof NginxError) {
        const stderr = err.stderr ? `: ${err.stderr}` : '';
        return fail(err.code, `${err.message}${stderr}`);
      }
      return fail('CONFIG_WRITE_FAILED', (err as Error).message);
    }
    lastError = null;
    await deps.record(w, { ok: true, configRevision: w.configRevision, definition: w.definition, tlsSerial: serial, appliedAt: at() });
    await pruneCertFiles(w.name, serial).catch(() => undefined);
    if (w.definition.enableSsl && !w.hasCertificate) await deps.requestCertificate(w);
  };

  const pass = async (): Promise<void> => {
    for (const w of await load()) {
      if (stopped) return;
      if (!needsWork(w)) continue;
      forced.delete(w.name);
      if (!w.deleted) handled.set(w.name, pairKey(w.configRevision, w.cert?.serial ?? null));
      try {
        await applyOne(w);
      } catch (err) {
        // Recording failed (the store is away): forget the pair so the next pass tries again.
        handled.delete(w.name);
        lastError = (err as Error).message;
        log.error({ proxy: w.name, err: lastError }, 'could not record a proxy’s apply');
      }
    }
  };

  const passes = repeatingPass(pass, {
    stopped: () => stopped,
    onError(err) {
      lastError = err.message;
      log.error({ err: lastError }, 'proxy reconcile failed; retrying on the next tick');
    },
  });
  const reconcile = passes.run;

  /** Start: temp files of an interrupted write go; applied proxies whose file differs from their rendering are applied again. */
  const checkDisk = async () => {
    const entries = await readdir(deps.nginx.sitesDir).catch(() => [] as string[]);
    await Promise.all(entries.filter((f) => f.startsWith('.') && f.endsWith('.tmp')).map((f) => unlink(join(deps.nginx.sitesDir, f)).catch(() => undefined)));
    for (const w of await load()) {
      if (w.deleted || w.applied === null) continue;
      const onDisk = await readFile(join(deps.nginx.sitesDir, `${w.name}.conf`), 'utf8').catch(() => null);
      if (onDisk !== render(w.name, w.applied, w.appliedSerial)) forced.add(w.name);
    }
  };

  return {
    name: 'proxy-applier',
    reconcile,
    details: () => ({ busy: passes.busy(), last_error: lastError }),
    async start() {
      stopped = false;
      await mkdir(deps.nginx.sitesDir, { recursive: true });
      await mkdir(deps.acmeWebroot, { recursive: true, mode: 0o755 });
      await checkDisk();
      subscription = deps.changes$.pipe(filter((c) => c.topic === 'proxies' && WAKE_KINDS.has(c.kind))).subscribe(() => void reconcile());
      timer = setInterval(() => void reconcile(), deps.tickMs ?? 30_000);
      timer.unref();
      void reconcile();
    },
    async stop() {
      stopped = true;
      subscription?.unsubscribe();
      if (timer) clearInterval(timer);
      await passes.settled();
    },
  };
};
