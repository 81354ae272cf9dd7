import { expect } from 'chai';
import { renderServerBlock, type ServerBlockInput } from '../../../infra/nginx/renderServerBlock.ts';
import { isDomainName, isPort, isProxyName, isSafePath, isUpstreamHost } from '../../../infra/nginx/validateNames.ts';
import { AppError } from '../../../infra/errors.ts';

const baseInput = (over: Partial<ServerBlockInput> = {}): ServerBlockInput => ({
  name: 'web',
  domains: ['app.example.test'],
  upstream: { host: '127.0.0.1', port: 8080, scheme: 'http' },
  websockets: false,
  listen: { address: '127.0.0.1', httpPort: 80, httpsPort: 443 },
  acmeWebroot: '/var/lib/opsledger/acme',
  tls: null,
  ...over,
});

const refuses = (input: ServerBlockInput, field: string) => {
  let thrown: unknown;
  try {
    renderServerBlock(input);
  } catch (err) {
    thrown = err;
  }
  expect(thrown, `rendered ${JSON.stringify(input)}`).to.be.instanceOf(AppError);
  expect((thrown as AppError).code).to.equal('VALIDATION_FAILED');
  expect((thrown as AppError).details?.field).to.equal(field);
};

const BAD_NAMES = ['../x', 'a b', 'a'.repeat(64), '', '-web', 'Web', 'web.conf', 'web/x', 'web;', 'web\n', 'wéb'];
const BAD_DOMAINS = [
  'a.com; include /etc/passwd', 'a.com\nserver_name evil.com', 'a.com{', 'a.com}', 'a.com "x"', "a.com'", 'a .com', '',
  'a.com;', '$host', 'a..com', '-a.com', 'a-.com', `${'a'.repeat(64)}.com`, `${'a.'.repeat(127)}com`, 'a.com.', '*', '*.', 'a.*.com',
  '1.2.3.4', 'a_b.com', 'a.com#', 'a.com\u0000', 'a.com\r', 'a.com\\',
];
const BAD_PORTS = [0, 65536, -1, 80.5, Number.NaN, '80' as unknown as number];

describe('validateNames', () => {
  it('accepts slugs up to 63 chars', () => {
    for (const ok of ['web', 'a', '0', 'my-app-2', 'a'.repeat(63)]) expect(isProxyName(ok), ok).to.equal(true);
  });
  it('refuses names that are not slugs', () => {
    for (const bad of BAD_NAMES) expect(isProxyName(bad), JSON.stringify(bad)).to.equal(false);
  });
  it('accepts RFC 1123 host names and *. wildcards', () => {
    for (const ok of ['example.com', 'localhost', 'a-b.c-d.example', '*.example.com', 'xn--bcher-kva.example', `${'a'.repeat(63)}.com`, '1a.2b.com'])
      expect(isDomainName(ok), ok).to.equal(true);
  });
  it('refuses domains carrying nginx syntax, whitespace or bad labels', () => {
    for (const bad of BAD_DOMAINS) expect(isDomainName(bad), JSON.stringify(bad)).to.equal(false);
  });
  it('accepts host names and IP addresses as upstream hosts, nothing else', () => {
    for (const ok of ['127.0.0.1', '::1', 'backend', 'api.internal']) expect(isUpstreamHost(ok), ok).to.equal(true);
    for (const bad of ['fe80::1%eth0', '[::1]', '127.0.0.1:80', 'a b', 'x;y', 'http://x', '*.x.com', '999.1.1.1'])
      expect(isUpstreamHost(bad), bad).to.equal(false);
  });
  it('accepts ports 1–65535 only', () => {
    expect([1, 80, 65535].every(isPort)).to.equal(true);
    for (const bad of BAD_PORTS) expect(isPort(bad), String(bad)).to.equal(false);
  });
  it('accepts only plain absolute paths', () => {
    expect(isSafePath('/etc/opsledger/certs/web.pem')).to.equal(true);
    for (const bad of ['relative/x', '/a/../etc/passwd', '/a b', '/a;b', '/a\nb', '/a{b', '/$x', '/a"b']) expect(isSafePath(bad), bad).to.equal(false);
  });
});

describe('renderServerBlock', () => {
  describe('without TLS', () => {
    const out = renderServerBlock(baseInput());

    it('listens on HTTP only, for the proxy domains', () => {
      expect(out).to.include('listen 127.0.0.1:80;');
      expect(out).to.include('server_name app.example.test;');
      expect(out).not.to.include('ssl');
      expect(out).not.to.include('return 301');
    });
    it('serves ACME HTTP-01 challenges from the webroot, ahead of the proxy', () => {
      expect(out).to.match(/location \^~ \/\.well-known\/acme-challenge\/ \{\s+root \/var\/lib\/opsledger\/acme;/);
    });
    it('proxies with Host, X-Real-IP, X-Forwarded-For and X-Forwarded-Proto', () => {
      expect(out).to.include('proxy_pass http://127.0.0.1:8080;');
      for (const h of ['Host $host', 'X-Real-IP $remote_addr', 'X-Forwarded-For $proxy_add_x_forwarded_for', 'X-Forwarded-Proto $scheme'])
        expect(out).to.include(`proxy_set_header ${h};`);
    });
    it('sets no upgrade headers unless asked', () => {
      expect(out).not.to.include('Upgrade');
      expect(out).not.to.include('map ');
    });
  });

  it('renders WebSocket upgrade headers through a per-proxy map when asked', () => {
    const out = renderServerBlock(baseInput({ name: 'chat-1', websockets: true }));
    expect(out).to.include('map $http_upgrade $opl_connection_upgrade_chat_1 {');
    expect(out).to.include('proxy_set_header Upgrade $http_upgrade;');
    expect(out).to.include('proxy_set_header Connection $opl_connection_upgrade_chat_1;');
    expect(out).to.include('proxy_http_version 1.1;');
  });

  it('brackets IPv6 addresses in listen and proxy_pass', () => {
    const out = renderServerBlock(baseInput({ upstream: { host: '::1', port: 9000, scheme: 'http' }, listen: { address: '::1', httpPort: 80, httpsPort: 443 } }));
    expect(out).to.include('listen [::1]:80;');
    expect(out).to.include('proxy_pass http://[::1]:9000;');
  });

  describe('with TLS', () => {
    const out = renderServerBlock(baseInput({ tls: { certPath: '/etc/o/web.crt', keyPath: '/etc/o/web.key' }, listen: { address: '127.0.0.1', httpPort: 8080, httpsPort: 8443 } }));
    const [httpServer, tlsServer] = out.split(/\n(?=server \{)/).slice(-2) as [string, string];

    it('keeps the ACME location on HTTP and redirects the rest to HTTPS (with the port when not 443)', () => {
      expect(httpServer).to.include('listen 127.0.0.1:8080;');
      expect(httpServer).to.include('/.well-known/acme-challenge/');
      expect(httpServer).to.include('return 301 https://$host:8443$request_uri;');
      expect(httpServer).not.to.include('proxy_pass');
    });
    it('proxies on a TLS server with the certificate and key', () => {
      expect(tlsServer).to.include('listen 127.0.0.1:8443 ssl;');
      expect(tlsServer).to.include('ssl_certificate /etc/o/web.crt;');
      expect(tlsServer).to.include('ssl_certificate_key /etc/o/web.key;');
      expect(tlsServer).to.include('proxy_pass http://127.0.0.1:8080;');
    });
    it('redirects to plain https://$host on port 443', () => {
      expect(renderServerBlock(baseInput({ tls: { certPath: '/c', keyPath: '/k' } }))).to.include('return 301 https://$host$request_uri;');
    });
  });

  describe('refuses anything that did not pass the validators', () => {
    for (const name of BAD_NAMES) it(`name ${JSON.stringify(name)}`, () => refuses(baseInput({ name }), 'name'));
    for (const d of BAD_DOMAINS) it(`domain ${JSON.stringify(d)}`, () => refuses(baseInput({ domains: ['ok.example', d] }), 'domain'));
    it('no domains', () => refuses(baseInput({ domains: [] }), 'domains'));
    for (const port of BAD_PORTS) {
      it(`upstream port ${String(port)}`, () => refuses(baseInput({ upstream: { host: '127.0.0.1', port, scheme: 'http' } }), 'upstream.port'));
      it(`listen port ${String(port)}`, () => refuses(baseInput({ listen: { address: '127.0.0.1', httpPort: port, httpsPort: 443 } }), 'listen.httpPort'));
    }
    it('an upstream host with syntax in it', () => refuses(baseInput({ upstream: { host: '127.0.0.1;', port: 1, scheme: 'http' } }), 'upstream.host'));
    it('an upstream scheme other than http/https', () =>
      refuses(baseInput({ upstream: { host: 'a', port: 1, scheme: 'ftp' as 'http' } }), 'upstream.scheme'));
    it('a webroot or certificate path with syntax in it', () => {
      refuses(baseInput({ acmeWebroot: '/x; include /etc/passwd' }), 'acmeWebroot');
      refuses(baseInput({ tls: { certPath: '/a/../../etc/shadow', keyPath: '/k' } }), 'tls.certPath');
      refuses(baseInput({ tls: { certPath: '/c', keyPath: '/k\n}' } }), 'tls.keyPath');
    });
  });
});
