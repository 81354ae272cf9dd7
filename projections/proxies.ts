// Proxies read models (SPEC §7): each proxy with the status nginx really has (pending
// until the applier's outcome for the current definition arrives), its certificate, and
// the engine's recent history for /proxies/health; cert.failed and cert.expiring alerts
// go to the outbox in the same transaction. Idempotent: rows are guarded by stream
// revision and alert rows are keyed by the event that caused them.
import { sql, type Transaction } from 'kysely';
import type { ProxyEvent } from '../domain/proxies.ts';
import type { Tables } from '../infra/db/tables.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import { queueAlert } from './alertOutbox.ts';
import type { Emit, Projector } from './projector.ts';

export const PROXY_EVENT_TYPES: ProxyEvent['type'][] = [
  'ProxyConfigured', 'ProxyApplied', 'ProxyApplyFailed', 'ProxyDeleted', 'ProxySiteRemoved',
  'CertificateRequested', 'CertificateIssued', 'CertificateFailed',
];

/** After this many renewals in a row fail, the certificate's channels hear `cert.expiring` (once per certificate). */
export const RENEWAL_FAILURES_BEFORE_ALERT = 3;

type Trx = Transaction<Tables>;

type EngineChanges = {
  config_test_ok?: boolean; last_test_at?: string; last_reload_at?: string;
  acme_last_operation?: string; acme_last_operation_at?: string; acme_last_error?: string | null;
};
const engine = (trx: Trx, changes: EngineChanges) =>
  trx.insertInto('proxy_engine').values({ id: 1, ...changes } as never)
    .onConflict((oc) => oc.column('id').doUpdateSet(changes as never)).execute();

const apply = async (trx: Trx, recorded: RecordedEvent, emit: Emit) => {
  const e = recorded as RecordedEvent & ProxyEvent;
  const at = recorded.createdAt.toISOString();
  const revision = recorded.revision.toString();
  const { position } = recorded;
  const proxyRow = (name: string) => trx.updateTable('proxies').where('name', '=', name).where('revision', '<', revision);
  const certRow = (name: string) => trx.updateTable('proxy_certificates').where('name', '=', name).where('revision', '<', revision);
  const project = async (name: string) =>
    (await trx.selectFrom('proxies').select('project').where('name', '=', name).executeTakeFirst())?.project ?? null;
  const announce = async (name: string, data: object, topic = 'proxies') =>
    emit({ topic, kind: e.type, id: name, project: await project(name), position, data });

  switch (e.type) {
    case 'ProxyConfigured': {
      const d = e.data;
      const definition = {
        project: d.project, domain: d.domain, upstream_host: d.upstreamHost, upstream_port: d.upstreamPort, upstream_scheme: d.upstreamScheme,
        require_healthy: d.requireHealthy, enable_ssl: d.enableSsl, websockets: d.websockets,
      };
      const before = await trx.selectFrom('proxies').select(['domain', 'deleted', 'revision']).where('name', '=', d.name).executeTakeFirst();
      if (before && BigInt(before.revision) >= recorded.revision) return;
      await trx.insertInto('proxies').values({
        name: d.name, ...definition, status: 'pending', config_revision: revision, created_at: at, updated_at: at, revision,
      }).onConflict((oc) => oc.column('name').doUpdateSet({
        ...definition, status: 'pending', last_error: null, config_revision: revision, deleted: false, updated_at: at, revision,
        ...(before?.deleted ? { created_at: at } : {}),
      })).execute();
      // A certificate names its domain: one for another domain is no longer the proxy's.
      if (before && !before.deleted && before.domain !== d.domain) await trx.deleteFrom('proxy_certificates').where('name', '=', d.name).execute();
      emit({ topic: 'proxies', kind: e.type, id: d.name, project: d.project, position, data: { status: 'pending', domain: d.domain } });
      return;
    }
    case 'ProxyApplied':
    case 'ProxyApplyFailed': {
      const d = e.data;
      const current = await trx.selectFrom('proxies').select(['config_revision']).where('name', '=', d.name).executeTakeFirst();
      if (!current) return;
      // An outcome for an older definition tells what nginx runs, not the proxy's status.
      const forCurrent = BigInt(current.config_revision) === BigInt(d.configRevision);
      const ok = e.type === 'ProxyApplied';
      const lastError = ok ? null : { code: e.data.code, message: e.data.message, at: e.data.at };
      const updated = await proxyRow(d.name).set({
        handled_revision: String(d.configRevision), handled_tls_serial: d.tlsSerial,
        ...(ok ? { applied_definition: JSON.stringify(e.data.definition), applied_tls_serial: d.tlsSerial, applied_at: e.data.appliedAt } : {}),
        ...(forCurrent ? { status: ok ? 'active' : 'failed', last_error: lastError === null ? null : JSON.stringify(lastError) } : {}),
        updated_at: at, revision,
      }).executeTakeFirst();
      if (updated.numUpdatedRows === 0n) return;
      const when = ok ? e.data.appliedAt : e.data.at;
      const failedTest = !ok && e.data.code === 'NGINX_TEST_FAILED';
      // An upstream found unhealthy never got to nginx: the engine's history is untouched.
      if (ok || e.data.code !== 'UPSTREAM_UNHEALTHY') {
        await engine(trx, {
          ...(ok || e.data.code !== 'CONFIG_WRITE_FAILED' ? { config_test_ok: !failedTest, last_test_at: when } : {}),
          ...(ok ? { last_reload_at: when } : {}),
        });
      }
      await announce(d.name, { status: forCurrent ? (ok ? 'active' : 'failed') : 'pending', last_error: lastError, tls: d.tlsSerial !== null });
      return;
    }
    case 'ProxyDeleted': {
      const updated = await proxyRow(e.data.name).set({ deleted: true, status: 'deleted', updated_at: at, revision }).executeTakeFirst();
      if (updated.numUpdatedRows === 0n) return;
      await trx.deleteFrom('proxy_certificates').where('name', '=', e.data.name).execute();
      emit({ topic: 'proxies', kind: e.type, id: e.data.name, project: e.data.project, position, data: { status: 'deleted' } });
      return;
    }
    case 'ProxySiteRemoved': {
      const updated = await proxyRow(e.data.name).set({
        site_removed: true, applied_definition: null, applied_tls_serial: null, updated_at: at, revision,
      }).executeTakeFirst();
      if (updated.numUpdatedRows > 0n) await engine(trx, { config_test_ok: true, last_test_at: e.data.at, last_reload_at: e.data.at });
      return;
    }
    case 'CertificateRequested': {
      const d = e.data;
      const owner = await trx.selectFrom('proxies').select('project').where('name', '=', d.name).executeTakeFirst();
      if (!owner) return;
      const before = await trx.selectFrom('proxy_certificates').select(['revision', 'serial']).where('name', '=', d.name).executeTakeFirst();
      if (before && BigInt(before.revision) >= recorded.revision) return;
      const status = before?.serial ? 'renewing' : 'pending';
      await trx.insertInto('proxy_certificates').values({
        name: d.name, project: owner.project, domain: d.domain, status, request_reason: d.reason, requested_at: d.requestedAt, email: d.email, revision,
      }).onConflict((oc) => oc.column('name').doUpdateSet({ status, request_reason: d.reason, requested_at: d.requestedAt, email: d.email, revision })).execute();
      await engine(trx, { acme_last_operation: d.reason === 'renewal' ? 'renew' : 'order', acme_last_operation_at: d.requestedAt });
      await announce(d.name, { certificate: status, reason: d.reason });
      return;
    }
    case 'CertificateIssued': {
      const d = e.data;
      const updated = await certRow(d.name).set({
        status: 'valid', domain: d.domain, not_before: d.notBefore, expiry: d.expiry, issuer: d.issuer, serial: d.serial,
        chain_pem: d.chainPem, key_ref: d.keyRef, issued_at: d.issuedAt, last_error: null, renewal_failures: 0, revision,
      }).executeTakeFirst();
      if (updated.numUpdatedRows === 0n) return;
      await engine(trx, { acme_last_operation: 'issued', acme_last_operation_at: d.issuedAt, acme_last_error: null });
      await announce(d.name, { certificate: 'valid', serial: d.serial, expiry: d.expiry });
      return;
    }
    case 'CertificateFailed': {
      const d = e.data;
      const error = { code: d.code, message: d.message, acme_type: d.acmeType, at: d.at };
      const renewal = d.reason === 'renewal';
      const updated = await certRow(d.name).set({
        status: sql<string>`case when serial is null then 'failed' else 'valid' end`,
        last_error: JSON.stringify(error),
        ...(renewal ? { renewal_failures: sql<number>`renewal_failures + 1` } : {}),
        revision,
      }).returning(['project', 'renewal_failures', 'expiry', 'serial']).executeTakeFirst();
      if (!updated) return;
      await engine(trx, { acme_last_operation: 'failed', acme_last_operation_at: d.at, acme_last_error: JSON.stringify(error) });
      const atMs = Date.parse(d.at);
      const alert = { proxy: d.name, domain: d.domain, reason: d.reason, error: d.message, acme_type: d.acmeType,
        expiry: updated.expiry ? new Date(updated.expiry).toISOString() : null };
      await queueAlert(trx, recorded.id, updated.project, 'cert.failed', atMs, alert);
      if (renewal && updated.renewal_failures === RENEWAL_FAILURES_BEFORE_ALERT) {
        await queueAlert(trx, `${recorded.id}:expiring`, updated.project, 'cert.expiring', atMs, { ...alert, renewal_failures: updated.renewal_failures });
      }
      await announce(d.name, { certificate: updated.serial ? 'valid' : 'failed', last_error: error });
      return;
    }
    default: { const _never: never = e; return _never; }
  }
};

export const proxiesProjection: Projector = {
  name: 'proxies',
  version: 1,
  handles: PROXY_EVENT_TYPES,
  tables: ['proxies', 'proxy_certificates', 'proxy_engine'],
  async apply(trx, events, emit) {
    for (const e of events) await apply(trx, e, emit);
  },
};
