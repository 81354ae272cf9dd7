// What a proxies event must look like before it is appended. The validators are the
// nginx adapter's own (infra/nginx/validateNames.ts): nothing that could become nginx
// syntax or leave a path gets into the log either.
import { z } from 'zod';
import { PROXY_ERROR_CODES } from '../domain/proxies.ts';
import { isDomainName, isPort, isProxyName, isUpstreamHost } from '../infra/nginx/validateNames.ts';
import type { EventSchemas } from './handleCommand.ts';

const Name = z.string().refine(isProxyName);
const Slug = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/);
const Iso = z.iso.datetime({ offset: true });
const Uuid = z.uuid();
const Serial = z.string().regex(/^[0-9a-f]{1,64}$/);
const Message = z.string().max(4000);

const Definition = z.object({
  domain: z.string().refine(isDomainName), upstreamHost: z.string().refine(isUpstreamHost), upstreamPort: z.number().refine(isPort),
  upstreamScheme: z.enum(['http', 'https']), requireHealthy: z.boolean(), enableSsl: z.boolean(), websockets: z.boolean(),
}).strict();
const Reason = z.enum(['requested', 'renewal']);

export const proxyEventSchemas: EventSchemas = {
  ProxyConfigured: Definition.extend({ name: Name, project: Slug }).strict(),
  ProxyApplied: z.object({
    name: Name, configRevision: z.number().int().min(0), definition: Definition, tlsSerial: Serial.nullable(), appliedAt: Iso,
  }).strict(),
  ProxyApplyFailed: z.object({
    name: Name, configRevision: z.number().int().min(0), tlsSerial: Serial.nullable(), code: z.enum(PROXY_ERROR_CODES), message: Message, at: Iso,
  }).strict(),
  ProxyDeleted: z.object({ name: Name, project: Slug, keyRefs: z.array(Uuid).max(1000) }).strict(),
  ProxySiteRemoved: z.object({ name: Name, at: Iso }).strict(),
  CertificateRequested: z.object({
    name: Name, domain: z.string().refine(isDomainName), email: z.email().nullable(), reason: Reason, force: z.boolean(), requestedAt: Iso,
  }).strict(),
  CertificateIssued: z.object({
    name: Name, domain: z.string().refine(isDomainName), notBefore: Iso, expiry: Iso, issuer: z.string().max(500), serial: Serial,
    chainPem: z.string().max(64 * 1024).regex(/^-----BEGIN CERTIFICATE-----[\s\S]*-----END CERTIFICATE-----\s*$/), keyRef: Uuid, issuedAt: Iso,
  }).strict(),
  CertificateFailed: z.object({
    name: Name, domain: z.string().refine(isDomainName), reason: Reason, code: z.string().max(64), message: Message,
    acmeType: z.string().max(200).nullable(), at: Iso,
  }).strict(),
};
