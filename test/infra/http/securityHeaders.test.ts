import { expect } from 'chai';
import express from 'express';
import { notFoundHandler } from '../../../infra/http/errorHandler.ts';
import { helmetHeaders, securityHeaders } from '../../../infra/http/securityHeaders.ts';
import { call, listen, type Listening } from './httpHarness.ts';

const recorded = () => new Map(helmetHeaders().map(([name, value]) => [name.toLowerCase(), value]));

describe('HTTP kit: security headers', () => {
  describe('helmetHeaders', () => {
    it('records a Content-Security-Policy that is tight for an API', () => {
      const csp = recorded().get('content-security-policy');
      expect(csp, 'no Content-Security-Policy recorded').to.be.a('string');
      const directives = csp!.split(';').map((d) => d.trim());
      expect(directives).to.include("default-src 'self'");
      expect(directives).to.include("frame-ancestors 'none'");
      expect(directives).to.include("object-src 'none'");
      expect(directives).to.include("script-src 'self'");
    });

    it('records nosniff, HSTS and X-Frame-Options', () => {
      const headers = recorded();
      expect(headers.get('x-content-type-options')).to.equal('nosniff');
      expect(headers.get('strict-transport-security')).to.match(/^max-age=\d+/);
      expect(headers.get('x-frame-options')).to.be.a('string').and.not.equal('');
    });

    it('records each header once, and the same headers every time', () => {
      const names = helmetHeaders().map(([name]) => name.toLowerCase());
      expect(new Set(names).size, names.join(', ')).to.equal(names.length);
      expect(helmetHeaders()).to.deep.equal(helmetHeaders());
    });
  });

  describe('securityHeaders() on a real app', () => {
    let server: Listening;

    before(async () => {
      const app = express();
      app.use(securityHeaders());
      app.get('/ok', (_req, res) => {
        res.json({ ok: true });
      });
      app.use(notFoundHandler());
      server = await listen(app);
    });

    after(() => server.close());

    const expectEveryRecordedHeader = (headers: Headers) => {
      const expected = helmetHeaders();
      expect(expected.length).to.be.greaterThan(5);
      for (const [name, value] of expected) expect(headers.get(name), name).to.equal(value);
    };

    it('sends every recorded header with its recorded value', async () => {
      const res = await call(`${server.url}/ok`);
      expect(res.status).to.equal(200);
      expectEveryRecordedHeader(res.headers);
    });

    it('sends them on a 404 too', async () => {
      const res = await call(`${server.url}/no/such/path`);
      expect(res.status).to.equal(404);
      expectEveryRecordedHeader(res.headers);
    });

    it('sends them on express’s own 404 too (whose handler replaces the CSP with a stricter one)', async () => {
      const app = express();
      app.use(securityHeaders());
      const bare = await listen(app);
      try {
        const res = await fetch(`${bare.url}/missing`);
        await res.text();
        expect(res.status).to.equal(404);
        for (const [name, value] of helmetHeaders()) {
          // express's final handler sets `default-src 'none'` on the pages it writes itself.
          if (name.toLowerCase() === 'content-security-policy') expect(res.headers.get(name)).to.match(/default-src '(none|self)'/);
          else expect(res.headers.get(name), name).to.equal(value);
        }
      } finally {
        await bare.close();
      }
    });
  });
});
