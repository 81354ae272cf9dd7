// One proxy's nginx configuration, as text, from validated values only: every field is
// checked again here and anything that did not pass the validators throws
// VALIDATION_FAILED before a line is produced (DESIGN §6, defence in depth).
//
// Without TLS: one HTTP server that serves ACME HTTP-01 challenges from the webroot and
// proxies everything else. With TLS: the HTTP server keeps the challenge location and
// redirects the rest to HTTPS; a TLS server proxies.
import {
  check, isDomainName, isIpAddress, isPort, isProxyName, isSafePath, isUpstreamHost, isUpstreamScheme, type UpstreamScheme,
} from './validateNames.ts';

export type ServerBlockInput = {
  name: string;
  domains: string[];
  upstream: { host: string; port: number; scheme: UpstreamScheme };
  websockets: boolean;
  listen: { address: string; httpPort: number; httpsPort: number };
  acmeWebroot: string;
  tls: { certPath: string; keyPath: string } | null;
};

export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/';

const validate = (p: ServerBlockInput): void => {
  check(isProxyName(p.name), 'name', p.name, 'a slug ([a-z0-9][a-z0-9-]{0,62})');
  check(Array.isArray(p.domains) && p.domains.length > 0 && p.domains.length <= 100, 'domains', p.domains, 'a list of 1 to 100 domains');
  for (const d of p.domains) check(isDomainName(d), 'domain', d, 'a host name (RFC 1123, optionally *.)');
  check(isUpstreamHost(p.upstream?.host), 'upstream.host', p.upstream?.host, 'a host name or an IP address');
  check(isPort(p.upstream?.port), 'upstream.port', p.upstream?.port, 'a port (1-65535)');
  check(isUpstreamScheme(p.upstream?.scheme), 'upstream.scheme', p.upstream?.scheme, 'http or https');
  check(typeof p.websockets === 'boolean', 'websockets', p.websockets, 'a boolean');
  check(p.listen?.address === '*' || isIpAddress(p.listen?.address), 'listen.address', p.listen?.address, 'an IP address or *');
  check(isPort(p.listen?.httpPort), 'listen.httpPort', p.listen?.httpPort, 'a port (1-65535)');
  check(isPort(p.listen?.httpsPort), 'listen.httpsPort', p.listen?.httpsPort, 'a port (1-65535)');
  check(isSafePath(p.acmeWebroot), 'acmeWebroot', p.acmeWebroot, 'a safe absolute path');
  if (p.tls !== null) {
    check(typeof p.tls === 'object' && isSafePath(p.tls.certPath), 'tls.certPath', p.tls?.certPath, 'a safe absolute path');
    check(isSafePath(p.tls.keyPath), 'tls.keyPath', p.tls.keyPath, 'a safe absolute path');
  }
};

/** `[::1]` for IPv6, as nginx wants it in `listen` and in URLs. */
const hostPart = (host: string) => (isIpAddress(host) && host.includes(':') ? `[${host}]` : host);

/** The map variable is per proxy: two sites defining the same variable would silently share one map. */
const upgradeVariable = (name: string) => `$opl_connection_upgrade_${name.replace(/-/g, '_')}`;

const acmeLocation = (webroot: string): string[] => [
  `    location ^~ ${ACME_CHALLENGE_PREFIX} {`,
  `        root ${webroot};`,
  '        default_type text/plain;',
  '        try_files $uri =404;',
  '    }',
];

const proxyLocation = (p: ServerBlockInput): string[] => [
  '    location / {',
  `        proxy_pass ${p.upstream.scheme}://${hostPart(p.upstream.host)}:${p.upstream.port};`,
  '        proxy_http_version 1.1;',
  '        proxy_set_header Host $host;',
  '        proxy_set_header X-Real-IP $remote_addr;',
  '        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
  '        proxy_set_header X-Forwarded-Proto $scheme;',
  '        proxy_set_header X-Forwarded-Host $host;',
  ...(p.websockets
    ? [
        '        proxy_set_header Upgrade $http_upgrade;',
        `        proxy_set_header Connection ${upgradeVariable(p.name)};`,
        // An idle WebSocket is not a hung upstream.
        '        proxy_read_timeout 1h;',
        '        proxy_send_timeout 1h;',
      ]
    : []),
  '    }',
];

export const renderServerBlock = (p: ServerBlockInput): string => {
  validate(p);
  const domains = p.domains.map((d) => d.toLowerCase());
  const serverName = `    server_name ${domains.join(' ')};`;
  const listenAddr = hostPart(p.listen.address);
  const lines: string[] = [`# Opsledger proxy ${p.name}: rendered whole on every apply; edits here are overwritten.`];
  if (p.websockets) {
    lines.push(`map $http_upgrade ${upgradeVariable(p.name)} {`, '    default upgrade;', "    ''      close;", '}', '');
  }
  if (p.tls === null) {
    lines.push('server {', `    listen ${listenAddr}:${p.listen.httpPort};`, serverName, '', ...acmeLocation(p.acmeWebroot), '',
      ...proxyLocation(p), '}');
  } else {
    const httpsAuthority = p.listen.httpsPort === 443 ? '$host' : `$host:${p.listen.httpsPort}`;
    lines.push(
      'server {', `    listen ${listenAddr}:${p.listen.httpPort};`, serverName, '', ...acmeLocation(p.acmeWebroot), '',
      '    location / {', `        return 301 https://${httpsAuthority}$request_uri;`, '    }', '}', '',
      'server {', `    listen ${listenAddr}:${p.listen.httpsPort} ssl;`, serverName,
      `    ssl_certificate ${p.tls.certPath};`, `    ssl_certificate_key ${p.tls.keyPath};`,
      '    ssl_protocols TLSv1.2 TLSv1.3;', '', ...acmeLocation(p.acmeWebroot), '', ...proxyLocation(p), '}',
    );
  }
  return `${lines.join('\n')}\n`;
};
