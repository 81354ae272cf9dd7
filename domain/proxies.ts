// Proxies and certificates (SPEC §7). Pure.
//
// One stream per proxy, `proxy-<name>` (the name is also the nginx file name, so it is
// unique across projects). It holds three lives side by side:
// - the definition the user asked for (ProxyConfigured, whole each time);
// - what the applier did with it (ProxyApplied / ProxyApplyFailed, naming the config
//   revision and certificate serial they tried), so the status is what nginx really runs;
// - the certificate (requested → issued | failed), its key in the vault by reference.
// The applier reconciles "desired" (config revision, certificate serial) with "handled"
// (the same pair of the last outcome): see workers/proxyApplier.ts.
import { DomainError } from './domainError.ts';
import type { Decider } from './decider.ts';

export type UpstreamScheme = 'http' | 'https';
export type ProxyDefinition = {
  domain: string; upstreamHost: string; upstreamPort: number; upstreamScheme: UpstreamScheme;
  requireHealthy: boolean; enableSsl: boolean; websockets: boolean;
};
export const PROXY_ERROR_CODES = ['UPSTREAM_UNHEALTHY', 'CONFIG_WRITE_FAILED', 'NGINX_TEST_FAILED', 'NGINX_RELOAD_FAILED'] as const;
export type ProxyErrorCode = (typeof PROXY_ERROR_CODES)[number];
export type CertificateReason = 'requested' | 'renewal';

export type ProxyConfigured = { type: 'ProxyConfigured'; data: { name: string; project: string } & ProxyDefinition };
export type ProxyApplied = { type: 'ProxyApplied'; data: {
  name: string; configRevision: number; definition: ProxyDefinition; tlsSerial: string | null; appliedAt: string;
} };
export type ProxyApplyFailed = { type: 'ProxyApplyFailed'; data: {
  name: string; configRevision: number; tlsSerial: string | null; code: ProxyErrorCode; message: string; at: string;
} };
export type ProxyDeleted = { type: 'ProxyDeleted'; data: { name: string; project: string; keyRefs: string[] } };
export type ProxySiteRemoved = { type: 'ProxySiteRemoved'; data: { name: string; at: string } };
export type CertificateRequested = { type: 'CertificateRequested'; data: {
  name: string; domain: string; email: string | null; reason: CertificateReason; force: boolean; requestedAt: string;
} };
export type CertificateIssued = { type: 'CertificateIssued'; data: {
  name: string; domain: string; notBefore: string; expiry: string; issuer: string; serial: string;
  /** Public: the leaf and its intermediates, as nginx reads them. */
  chainPem: string;
  /** The private key's vault reference (the key itself is never in an event). */
  keyRef: string; issuedAt: string;
} };
export type CertificateFailed = { type: 'CertificateFailed'; data: {
  name: string; domain: string; reason: CertificateReason; code: string; message: string; acmeType: string | null; at: string;
} };
export type ProxyEvent =
  | ProxyConfigured | ProxyApplied | ProxyApplyFailed | ProxyDeleted | ProxySiteRemoved
  | CertificateRequested | CertificateIssued | CertificateFailed;

export type ProxyCommand =
  | { type: 'ConfigureProxy'; data: ProxyConfigured['data'] }
  | { type: 'RecordProxyApplied'; data: ProxyApplied['data'] }
  | { type: 'RecordProxyApplyFailed'; data: ProxyApplyFailed['data'] }
  | { type: 'DeleteProxy'; data: { name: string } }
  | { type: 'RecordSiteRemoved'; data: ProxySiteRemoved['data'] }
  /**
   * `requestedAt` and `renewBeforeDays` decide whether a valid certificate is due (the
   * command carries the clock); the certificate is for the proxy's own domain.
   */
  | { type: 'RequestCertificate'; data: Omit<CertificateRequested['data'], 'domain'> & { renewBeforeDays: number } }
  | { type: 'RecordCertificateIssued'; data: CertificateIssued['data'] }
  | { type: 'RecordCertificateFailed'; data: CertificateFailed['data'] };

export type CertificateState = {
  /** The certificate in force (null: none yet). */
  current: { serial: string; expiry: string; keyRef: string } | null;
  /** An order the ACME worker has yet to finish. */
  pending: { reason: CertificateReason; requestedAt: string } | null;
  /** Key references no longer in force, to shred with the proxy. */
  oldKeyRefs: string[];
};

export type ProxyState =
  | { status: 'none'; events: number }
  | {
    status: 'live' | 'deleted';
    /** Events folded so far: the next event's stream revision. */
    events: number;
    name: string; project: string; definition: ProxyDefinition;
    configRevision: number;
    /** The last apply outcome: what it tried and whether it worked. */
    outcome: { configRevision: number; tlsSerial: string | null; ok: boolean } | null;
    certificate: CertificateState;
    siteRemoved: boolean;
  };

export const proxyStream = (name: string): string => `proxy-${name}`;

const DEFINITION_KEYS: readonly (keyof ProxyDefinition)[] = [
  'domain', 'upstreamHost', 'upstreamPort', 'upstreamScheme', 'requireHealthy', 'enableSsl', 'websockets',
];
export const definitionOf = (d: ProxyDefinition): ProxyDefinition =>
  Object.fromEntries(DEFINITION_KEYS.map((k) => [k, d[k]])) as ProxyDefinition;
export const sameDefinition = (a: ProxyDefinition, b: ProxyDefinition): boolean => DEFINITION_KEYS.every((k) => a[k] === b[k]);

export const proxyNotFound = (name: string) => new DomainError('PROXY_NOT_FOUND', `proxy ${name} not found`);

const live = (state: ProxyState, name: string) => {
  if (state.status !== 'live') throw proxyNotFound(name);
  return state;
};

const MS_PER_DAY = 86_400_000;

/** A certificate is due when it expires within `renewBeforeDays` of `now`. */
export const certificateDue = (expiry: string, now: string, renewBeforeDays: number): boolean =>
  Date.parse(expiry) - Date.parse(now) <= renewBeforeDays * MS_PER_DAY;

const noCertificate = (): CertificateState => ({ current: null, pending: null, oldKeyRefs: [] });
const retire = (c: CertificateState): CertificateState =>
  ({ current: null, pending: null, oldKeyRefs: c.current ? [...c.oldKeyRefs, c.current.keyRef] : c.oldKeyRefs });

export const proxyDecider: Decider<ProxyState, ProxyCommand, ProxyEvent> = {
  initialState: () => ({ status: 'none', events: 0 }),
  evolve(state, event) {
    const events = state.events + 1;
    switch (event.type) {
      case 'ProxyConfigured': {
        const { name, project } = event.data;
        let certificate = state.status === 'live' ? state.certificate : noCertificate();
        // A certificate names its domain: for a new domain it is no longer in force.
        if (state.status === 'live' && state.definition.domain !== event.data.domain) certificate = retire(certificate);
        const outcome = state.status === 'live' ? state.outcome : null;
        return {
          status: 'live', events, name, project, definition: definitionOf(event.data), configRevision: state.events,
          outcome, certificate, siteRemoved: false,
        };
      }
      case 'ProxyApplied':
      case 'ProxyApplyFailed':
        if (state.status === 'none') return { ...state, events };
        return { ...state, events, outcome: { configRevision: event.data.configRevision, tlsSerial: event.data.tlsSerial, ok: event.type === 'ProxyApplied' } };
      case 'ProxyDeleted':
        if (state.status === 'none') return { ...state, events };
        // The keys are shredded with the proxy: a proxy made again under this name starts afresh.
        return { ...state, events, status: 'deleted', outcome: null, certificate: noCertificate() };
      case 'ProxySiteRemoved':
        return state.status === 'none' ? { ...state, events } : { ...state, events, siteRemoved: true };
      case 'CertificateRequested':
        if (state.status === 'none') return { ...state, events };
        return { ...state, events, certificate: { ...state.certificate, pending: { reason: event.data.reason, requestedAt: event.data.requestedAt } } };
      case 'CertificateIssued': {
        if (state.status === 'none') return { ...state, events };
        const previous = state.certificate.current;
        return { ...state, events, certificate: {
          current: { serial: event.data.serial, expiry: event.data.expiry, keyRef: event.data.keyRef },
          pending: null,
          oldKeyRefs: previous ? [...state.certificate.oldKeyRefs, previous.keyRef] : state.certificate.oldKeyRefs,
        } };
      }
      case 'CertificateFailed':
        return state.status === 'none' ? { ...state, events } : { ...state, events, certificate: { ...state.certificate, pending: null } };
      default: { const _never: never = event; return _never; }
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'ConfigureProxy': {
        const { name, project } = command.data;
        if (state.status === 'live') {
          // The name is the file name: one proxy per name, whichever project asks.
          if (state.project !== project) throw new DomainError('CONFLICT', `the proxy name ${name} is in use`);
          const settled = state.outcome?.ok === true && state.outcome.configRevision === state.configRevision;
          if (settled && sameDefinition(state.definition, command.data)) return [];
        }
        return [{ type: 'ProxyConfigured', data: { name, project, ...definitionOf(command.data) } }];
      }
      case 'RecordProxyApplied':
      case 'RecordProxyApplyFailed': {
        // An outcome that arrives after a delete is history nobody acts on.
        if (state.status !== 'live') return [];
        return [command.type === 'RecordProxyApplied'
          ? { type: 'ProxyApplied', data: command.data }
          : { type: 'ProxyApplyFailed', data: command.data }];
      }
      case 'DeleteProxy': {
        const proxy = live(state, command.data.name);
        const c = proxy.certificate;
        return [{ type: 'ProxyDeleted', data: { name: proxy.name, project: proxy.project, keyRefs: [...(c.current ? [c.current.keyRef] : []), ...c.oldKeyRefs] } }];
      }
      case 'RecordSiteRemoved':
        return state.status === 'deleted' && !state.siteRemoved ? [{ type: 'ProxySiteRemoved', data: command.data }] : [];
      case 'RequestCertificate': {
        const proxy = live(state, command.data.name);
        const { renewBeforeDays, ...request } = command.data;
        const c = proxy.certificate;
        // One order at a time; asking again while one runs is the same request.
        if (c.pending && !request.force) return [];
        if (c.current && !request.force && !certificateDue(c.current.expiry, request.requestedAt, renewBeforeDays)) return [];
        return [{ type: 'CertificateRequested', data: { ...request, domain: proxy.definition.domain } }];
      }
      case 'RecordCertificateIssued':
      case 'RecordCertificateFailed': {
        if (state.status !== 'live' || !state.certificate.pending) return [];
        return [command.type === 'RecordCertificateIssued'
          ? { type: 'CertificateIssued', data: command.data }
          : { type: 'CertificateFailed', data: command.data }];
      }
      default: { const _never: never = command; return _never; }
    }
  },
};
