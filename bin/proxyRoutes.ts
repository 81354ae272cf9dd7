// The proxies module (SPEC §7) put together: its routes, the nginx applier and the ACME
// worker, both on one instance at a time.
import { readFileSync } from 'node:fs';
import { proxyCommandRoutes, proxyCommandRunner, proxySecretOwner } from '../commands/proxies.ts';
import { asLeader } from '../infra/leaderWorker.ts';
import { reloadSettled } from '../infra/nginx/nginxApplier.ts';
import { programRunner } from '../infra/programRunner.ts';
import { proxyReadRoutes } from '../read-api/proxies.ts';
import { createCertificateWorker } from '../workers/certificateWorker.ts';
import { createProxyApplier, type ProxyRef } from '../workers/proxyApplier.ts';
import type { RouteInstaller } from './app.ts';

/** Test and benchmark knobs (ServerOptions.proxies). */
export type ProxyOptions = {
  /** How long PUT/DELETE/sync wait for nginx before answering 202. */
  applyWaitMs?: number;
  applierTickMs?: number;
  renewTickMs?: number;
  renewRetryMs?: number;
  /** The ACME server's CA (PEM), instead of ACME_CA_FILE. */
  acmeCaPem?: string;
  /** The renewal worker's clock. */
  now?: () => Date;
};

const NGINX_PROBE_TTL_MS = 30_000;

/** `nginx -v`, remembered for a while: /proxies/health should not fork on every probe. */
const nginxProbe = (bin: string) => {
  let cached: { at: number; value: Promise<{ present: boolean; version: string | null }> } | null = null;
  return () => {
    if (cached && Date.now() - cached.at < NGINX_PROBE_TTL_MS) return cached.value;
    const value = programRunner.run(bin, ['-v'], 5000)
      .then((r) => ({ present: r.ok, version: /nginx\/(\S+)/.exec(`${r.stderr}${r.stdout}`)?.[1] ?? null }));
    cached = { at: Date.now(), value };
    return value;
  };
};

export const proxyRoutes: RouteInstaller = {
  name: 'proxies',
  install(ctx) {
    const db = ctx.kernel.database.db;
    const { config, logger } = ctx;
    const opts = ctx.options.proxies ?? {};
    const changes$ = ctx.kernel.runtime.changes$;
    const reads = proxyReadRoutes(ctx.routes, {
      db, nginx: nginxProbe(config.nginxBin), sitesDir: config.nginxSitesDir, acmeDirectoryUrl: config.acmeDirectoryUrl,
    });
    proxyCommandRoutes(ctx.routes, {
      ...ctx.commandKit, views: reads, vault: ctx.vault, changes$, renewBeforeDays: config.renewBeforeDays,
      acmeEmail: config.acmeEmail, registryUrl: config.registryUrl, ...(opts.applyWaitMs ? { applyWaitMs: opts.applyWaitMs } : {}),
    });

    const run = proxyCommandRunner(ctx.commandKit.store);
    const engine = { actor: { user_id: null, username: 'proxy-engine', token_id: null } };
    const by = (proxy: ProxyRef) => ({ ...engine, project: proxy.project });
    const requestCertificate = async (proxy: ProxyRef, reason: 'requested' | 'renewal', requestedAt: string) => {
      await run(proxy.name, { type: 'RequestCertificate', data: {
        name: proxy.name, email: config.acmeEmail ?? null, reason, force: false, requestedAt, renewBeforeDays: config.renewBeforeDays,
      } }, by(proxy));
    };

    const nginxTarget = { nginxBin: config.nginxBin, confPath: config.nginxConf, sitesDir: config.nginxSitesDir };
    const applier = createProxyApplier({
      db, logger, vault: ctx.vault, changes$,
      nginx: nginxTarget,
      listen: { address: config.proxyListenAddress, httpPort: config.proxyHttpPort, httpsPort: config.proxyHttpsPort },
      acmeWebroot: config.acmeWebroot, certsDir: config.certsDir,
      healthCheck: { path: config.healthCheckPath, timeoutMs: config.healthCheckTimeoutMs },
      ...(opts.applierTickMs ? { tickMs: opts.applierTickMs } : {}),
      async record(proxy, o) {
        const { name } = proxy;
        if (o.ok) {
          await run(name, { type: 'RecordProxyApplied', data: {
            name, configRevision: o.configRevision, definition: o.definition, tlsSerial: o.tlsSerial, appliedAt: o.appliedAt,
          } }, by(proxy));
        } else {
          await run(name, { type: 'RecordProxyApplyFailed', data: {
            name, configRevision: o.configRevision, tlsSerial: o.tlsSerial, code: o.code, message: o.message, at: o.at,
          } }, by(proxy));
        }
      },
      recordSiteRemoved: async (proxy, at) => void (await run(proxy.name, { type: 'RecordSiteRemoved', data: { name: proxy.name, at } }, by(proxy))),
      requestCertificate: (proxy) => requestCertificate(proxy, 'requested', new Date().toISOString()),
    });

    const acmeCaPem = opts.acmeCaPem ?? (config.acmeCaFile ? readFileSync(config.acmeCaFile, 'utf8') : undefined);
    const certificates = createCertificateWorker({
      db, logger, vault: ctx.vault, changes$, secretOwner: proxySecretOwner, renewBeforeDays: config.renewBeforeDays,
      acme: { directoryUrl: config.acmeDirectoryUrl, webroot: config.acmeWebroot, ...(acmeCaPem ? { caPem: acmeCaPem } : {}) },
      nginxSettled: async () => void (await reloadSettled(nginxTarget)),
      ...(opts.renewTickMs ? { renewTickMs: opts.renewTickMs } : {}),
      ...(opts.renewRetryMs ? { renewRetryMs: opts.renewRetryMs } : {}),
      ...(opts.now ? { now: opts.now } : {}),
      recordIssued: async (proxy, data) => !!(await run(proxy.name, { type: 'RecordCertificateIssued', data }, by(proxy))).append,
      recordFailed: async (proxy, data) => void (await run(proxy.name, { type: 'RecordCertificateFailed', data }, by(proxy))),
      requestRenewal: (proxy, at) => requestCertificate(proxy, 'renewal', at),
    });

    const lock = (name: string) => () => ctx.kernel.database.tryAdvisoryLock(`opsledger:worker:${name}`);
    ctx.workers.register(asLeader(applier, { tryLock: lock(applier.name), logger }));
    ctx.workers.register(asLeader(certificates, { tryLock: lock(certificates.name), logger }));
  },
};
