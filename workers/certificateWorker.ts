// The ACME worker (SPEC §7): orders the certificates the proxies read model asks for, one
// at a time, and renews those within RENEW_BEFORE_DAYS of expiry.
//
// Orders: a certificate row `pending` or `renewing` is a request not yet answered; the
// worker orders it (HTTP-01, served by the proxy's own server block), puts the new key in
// the vault and records CertificateIssued with the key's reference, or records
// CertificateFailed with the ACME error. The applier then writes the files and applies
// the proxy with TLS. A restart finds unanswered requests still pending and orders again.
//
// Renewals: on a timer, each valid certificate that is due gets a renewal request; after a
// failed renewal the next waits (doubling from `renewRetryMs`, at most a day), and the
// projection alerts cert.expiring when renewals keep failing.
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { filter, type Observable, type Subscription } from 'rxjs';
import type { CertificateFailed, CertificateIssued } from '../domain/proxies.ts';
import { createAccountKey, issueCertificate } from '../infra/acme/acmeIssuer.ts';
import type { Tables } from '../infra/db/tables.ts';
import { nameUuid } from '../infra/ids.ts';
import type { Vault } from '../infra/vault.ts';
import { repeatingPass } from '../infra/repeatingPass.ts';
import type { Worker } from '../infra/workers.ts';
import type { ProxyRef } from './proxyApplier.ts';

export type CertificateWorkerDeps = {
  db: Kysely<Tables>;
  vault: Pick<Vault, 'put' | 'getText' | 'delete'>;
  /** Where a proxy's keys live in the vault (deleting the proxy shreds them). */
  secretOwner(name: string): string;
  acme: { directoryUrl: string; caPem?: string; webroot: string; timeoutMs?: number };
  /**
   * Resolves once nginx serves with its last reloaded configuration: an apply is recorded
   * when the reload is signalled, and until nginx's new workers take over, a CA fetching the
   * challenge of a proxy just applied would get the previous configuration's answer.
   */
  nginxSettled(): Promise<void>;
  recordIssued(proxy: ProxyRef, data: CertificateIssued['data']): Promise<boolean>;
  recordFailed(proxy: ProxyRef, data: CertificateFailed['data']): Promise<void>;
  requestRenewal(proxy: ProxyRef, requestedAt: string): Promise<void>;
  changes$: Observable<{ topic: string; kind: string }>;
  renewBeforeDays: number;
  logger: Logger;
  /** How often due certificates are looked for (default 1 h). */
  renewTickMs?: number;
  /** The first wait after a failed renewal (default 1 h). */
  renewRetryMs?: number;
  now?: () => Date;
};

const ACCOUNT_NAMESPACE = '8f5b2c1e-7d4a-4b3e-9a6f-2e1d0c9b8a71';
const ACCOUNT_OWNER = 'acme-account';
const DAY_MS = 86_400_000;
export const createCertificateWorker = (deps: CertificateWorkerDeps): Worker & { orderPending(): Promise<void>; renewDue(): Promise<void> } => {
  const { db } = deps;
  const log = deps.logger.child({ worker: 'acme' });
  const now = deps.now ?? (() => new Date());
  const retryMs = deps.renewRetryMs ?? 60 * 60 * 1000;
  /** Requests this process answered (name → requested_at): the read model may not show it yet. */
  const answered = new Map<string, string>();
  let stopped = true;
  let subscription: Subscription | null = null;
  let timer: NodeJS.Timeout | null = null;
  let lastError: string | null = null;
  let current: string | null = null;

  /** One ACME account per directory, its key in the vault under an id derived from the URL. */
  const accountKey = async (): Promise<string> => {
    const id = nameUuid(ACCOUNT_NAMESPACE, deps.acme.directoryUrl);
    const stored = await deps.vault.getText(id);
    if (stored) return stored;
    const key = await createAccountKey();
    await deps.vault.put(ACCOUNT_OWNER, 'acme-account-key', key, id);
    return key;
  };

  const order = async (r: ProxyRef & { domain: string; reason: 'requested' | 'renewal'; email: string | null }) => {
    const at = () => now().toISOString();
    current = r.name;
    try {
      await deps.nginxSettled();
      const cert = await issueCertificate({
        directoryUrl: deps.acme.directoryUrl, accountKeyPem: await accountKey(), domain: r.domain, webroot: deps.acme.webroot,
        ...(r.email ? { email: r.email } : {}), ...(deps.acme.caPem ? { caPem: deps.acme.caPem } : {}),
        ...(deps.acme.timeoutMs ? { timeoutMs: deps.acme.timeoutMs } : {}),
      });
      const keyRef = await deps.vault.put(deps.secretOwner(r.name), 'tls-key', cert.keyPem);
      const recorded = await deps.recordIssued(r, {
        name: r.name, domain: r.domain, notBefore: cert.notBefore, expiry: cert.expiry, issuer: cert.issuer.slice(0, 500),
        serial: cert.serial.toLowerCase(), chainPem: cert.chainPem, keyRef, issuedAt: at(),
      });
      // Deleted (or answered) meanwhile: nobody will use this key.
      if (!recorded) await deps.vault.delete(keyRef);
      lastError = null;
      log.info({ proxy: r.name, domain: r.domain, serial: cert.serial, expiry: cert.expiry }, 'certificate issued');
    } catch (err) {
      const e = err as { code?: string; message?: string; details?: { acme_type?: string } };
      lastError = e.message ?? String(err);
      log.warn({ proxy: r.name, domain: r.domain, code: e.code, err: lastError }, 'certificate order failed');
      await deps.recordFailed(r, {
        name: r.name, domain: r.domain, reason: r.reason, code: e.code ?? 'SSL_ISSUANCE_FAILED', message: lastError.slice(0, 3000),
        acmeType: e.details?.acme_type ?? null, at: at(),
      });
    } finally {
      current = null;
    }
  };

  const pass = async () => {
    const rows = await db.selectFrom('proxy_certificates as c').innerJoin('proxies as p', 'p.name', 'c.name')
      .select(['c.name', 'c.project', 'c.domain', 'c.request_reason', 'c.requested_at', 'c.email'])
      .where('c.status', 'in', ['pending', 'renewing']).where('p.deleted', '=', false).orderBy('c.requested_at').execute();
    for (const r of rows) {
      if (stopped) return;
      const requested = r.requested_at ? new Date(r.requested_at).toISOString() : '';
      if (answered.get(r.name) === requested) continue;
      answered.set(r.name, requested);
      try {
        await order({ name: r.name, project: r.project, domain: r.domain, reason: r.request_reason === 'renewal' ? 'renewal' : 'requested', email: r.email });
      } catch (err) {
        // The outcome could not be recorded: forget it so the next pass orders again.
        answered.delete(r.name);
        log.error({ proxy: r.name, err: (err as Error).message }, 'could not record a certificate order');
      }
    }
  };

  const passes = repeatingPass(pass, {
    stopped: () => stopped,
    onError(err) {
      lastError = err.message;
      log.error({ err: lastError }, 'certificate pass failed; retrying on the next tick');
    },
  });
  const orderPending = passes.run;

  /** Asks for a renewal of every valid certificate within RENEW_BEFORE_DAYS of expiry whose last failure has been waited out. */
  const renewDue = async (): Promise<void> => {
    const t = now();
    const rows = await db.selectFrom('proxy_certificates as c').innerJoin('proxies as p', 'p.name', 'c.name')
      .select(['c.name', 'c.project', 'c.expiry', 'c.renewal_failures', 'c.last_error'])
      .where('c.status', '=', 'valid').where('p.deleted', '=', false)
      .where('c.expiry', '<=', new Date(t.getTime() + deps.renewBeforeDays * DAY_MS)).execute();
    for (const r of rows) {
      if (r.renewal_failures > 0) {
        const failedAt = Date.parse((r.last_error as { at?: string } | null)?.at ?? '');
        const wait = Math.min(retryMs * 2 ** (r.renewal_failures - 1), DAY_MS);
        if (Number.isFinite(failedAt) && t.getTime() - failedAt < wait) continue;
      }
      try {
        await deps.requestRenewal(r, t.toISOString());
      } catch (err) {
        log.error({ proxy: r.name, err: (err as Error).message }, 'could not request a renewal');
      }
    }
  };

  return {
    name: 'acme',
    orderPending,
    renewDue,
    details: () => ({ directory_url: deps.acme.directoryUrl, ordering: current, last_error: lastError }),
    async start() {
      stopped = false;
      subscription = deps.changes$.pipe(filter((c) => c.topic === 'proxies' && c.kind === 'CertificateRequested')).subscribe(() => void orderPending());
      timer = setInterval(() => {
        void renewDue().catch((err) => log.error({ err: (err as Error).message }, 'renewal check failed')).then(orderPending);
      }, deps.renewTickMs ?? 60 * 60 * 1000);
      timer.unref();
      void renewDue().catch(() => undefined).then(orderPending);
    },
    async stop() {
      stopped = true;
      subscription?.unsubscribe();
      if (timer) clearInterval(timer);
      await passes.settled();
    },
  };
};
