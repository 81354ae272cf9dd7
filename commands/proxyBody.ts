// The body of PUT /proxies/{name} (and of each registry entry): the nginx adapter's own
// validators, so nothing that could become nginx syntax or leave a path gets past it.
import { z } from 'zod';
import { Slug } from '../infra/http/validate.ts';
import { isHostName, isUpstreamHost } from '../infra/nginx/validateNames.ts';

const Domain = z.string().max(253).refine(isHostName, 'must be a DNS host name (letters, digits, inner dashes, dot-separated; no port, path or spaces)');
const Port = z.number({ error: 'must be a port, 1–65535' }).int('must be a port, 1–65535').min(1, 'must be a port, 1–65535').max(65535, 'must be a port, 1–65535');

export const ProxyBody = z.strictObject({
  project: Slug.optional().meta({ description: 'default: the proxy’s project, or `default` for a new one; a proxy cannot move' }),
  domain: Domain,
  upstream_host: z.string().max(253).refine(isUpstreamHost, 'must be a host name or an IP address'),
  upstream_port: Port,
  upstream_scheme: z.enum(['http', 'https']).default('http'),
  require_healthy: z.boolean().default(true).meta({ description: 'the upstream’s HEALTH_CHECK_PATH must answer 2xx before nginx routes to it' }),
  enable_ssl: z.boolean().default(false).meta({ description: 'order a certificate once the proxy is applied (if it has none)' }),
  websockets: z.boolean().default(true),
});
export type ProxyBody = z.output<typeof ProxyBody>;
