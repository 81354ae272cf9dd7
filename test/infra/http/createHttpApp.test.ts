import { expect } from 'chai';
import express from 'express';
import { z } from 'zod';
import { DomainError } from '../../../domain/domainError.ts';
import { AppError, ConcurrencyError, NotFoundError, TimeoutError } from '../../../infra/errors.ts';
import { redactUrl } from '../../../infra/http/accessLog.ts';
import { acceptBodyTypes, createHttpApp, finish } from '../../../infra/http/createHttpApp.ts';
import { INTERNAL_DETAIL } from '../../../infra/http/errorHandler.ts';
import { validated } from '../../../infra/http/validate.ts';
import { call, listen, memoryLogger, type Listening } from './httpHarness.ts';

const PROBLEM_KEYS = ['type', 'title', 'status', 'detail', 'code', 'request_id'];

describe('HTTP kit: createHttpApp, request ids and the error handler', () => {
  let server: Listening;
  let log: ReturnType<typeof memoryLogger>;
  let url: string;

  const CreateThing = validated({
    params: z.object({ slug: z.string() }),
    body: z.object({ name: z.string().min(1), size: z.number().int().positive(), tags: z.array(z.string()).optional() }),
  });

  before(async () => {
    log = memoryLogger();
    const app = createHttpApp({ logger: log.logger });
    app.post('/things/:slug', (req, res) => {
      const { params, body } = CreateThing.parse(req);
      res.status(201).json({ slug: params.slug, ...body });
    });
    app.get('/ok', (_req, res) => {
      res.json({ request_id: res.locals.requestId });
    });
    app.get('/as/:user', (req, res) => {
      res.locals['principal'] = { userId: req.params['user'] };
      res.json({ ok: true });
    });
    app.get('/boom', () => {
      throw new Error('secret-internal-detail: password=hunter2');
    });
    app.get('/boom-async', async () => {
      await Promise.resolve();
      throw new TypeError('async secret-internal-detail');
    });
    app.get('/domain/:code', (req) => {
      throw new DomainError(req.params['code']!, `the domain refuses: ${req.params['code']}`);
    });
    app.get('/conflict', () => {
      throw new ConcurrencyError('job-1', '3', 4n);
    });
    app.get('/not-found', () => {
      throw new NotFoundError('job j-1 not found');
    });
    app.get('/timeout', () => {
      throw new TimeoutError('projections did not catch up within 5000 ms');
    });
    app.get('/internal-app-error', () => {
      throw new AppError('INTERNAL', 'secret-internal-detail in an AppError');
    });
    app.get('/foreign-coded', () => {
      // A pg error: a string code that is not ours.
      throw Object.assign(new Error('duplicate key value violates unique constraint "secret_idx"'), { code: '23505' });
    });
    app.get('/zod', () => {
      z.object({ n: z.number() }).parse({ n: 'x' });
    });
    app.post('/echo', (req, res) => {
      res.json({ got: req.body });
    });
    app.post('/yaml', express.text({ type: 'application/yaml' }), (req, res) => {
      res.json({ yaml: req.body });
    });
    acceptBodyTypes(app, '/yaml', ['application/yaml']);
    finish(app);
    server = await listen(app);
    url = server.url;
  });

  after(() => server.close());

  describe('request ids', () => {
    it('echoes a sane X-Request-Id in the header and res.locals', async () => {
      const r = await call(`${url}/ok`, { headers: { 'X-Request-Id': 'abc.DEF_1:2-3' } });
      expect(r.headers.get('x-request-id')).to.equal('abc.DEF_1:2-3');
      expect(r.body).to.deep.equal({ request_id: 'abc.DEF_1:2-3' });
    });

    it('generates a UUID when there is none', async () => {
      const r = await call(`${url}/ok`);
      expect(r.headers.get('x-request-id')).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(r.body.request_id).to.equal(r.headers.get('x-request-id'));
    });

    it('replaces an id that is too long or has other characters', async () => {
      for (const bad of ['a'.repeat(129), 'has space', 'semi;colon', '<script>']) {
        const r = await call(`${url}/ok`, { headers: { 'X-Request-Id': bad } });
        expect(r.headers.get('x-request-id'), bad).to.not.equal(bad);
        expect(r.headers.get('x-request-id'), bad).to.match(/^[0-9a-f-]{36}$/);
      }
      const ok = 'a'.repeat(128);
      expect((await call(`${url}/ok`, { headers: { 'X-Request-Id': ok } })).headers.get('x-request-id')).to.equal(ok);
    });

    it('carries the id on error responses too, in the header and the problem body', async () => {
      const r = await call(`${url}/nowhere`, { headers: { 'X-Request-Id': 'req-404' } });
      expect(r.headers.get('x-request-id')).to.equal('req-404');
      expect(r.body.request_id).to.equal('req-404');
    });
  });

  describe('problem+json', () => {
    it('has exactly type, title, status, detail, code and request_id (404 fallback)', async () => {
      const r = await call(`${url}/nowhere`, { headers: { 'X-Request-Id': 'r-1' } });
      expect(r.status).to.equal(404);
      expect(r.headers.get('content-type')).to.match(/^application\/problem\+json/);
      expect(r.body).to.deep.equal({
        type: 'https://opsledger.dev/problems/not-found',
        title: 'Not Found',
        status: 404,
        detail: 'no such endpoint',
        code: 'NOT_FOUND',
        request_id: 'r-1',
      });
    });

    it('adds errors [{path, message}] for validation failures, naming an unknown field', async () => {
      const r = await call(`${url}/things/a`, { method: 'POST', json: { name: 'n', size: 1, colour: 'red' } });
      expect(r.status).to.equal(400);
      expect(Object.keys(r.body).sort()).to.deep.equal([...PROBLEM_KEYS, 'errors'].sort());
      expect(r.body.code).to.equal('VALIDATION_FAILED');
      expect(r.body.type).to.equal('https://opsledger.dev/problems/validation-failed');
      expect(r.body.errors).to.deep.equal([{ path: 'body.colour', message: 'unknown field' }]);
    });

    it('reports every wrong type at once, with its path', async () => {
      const r = await call(`${url}/things/a`, { method: 'POST', json: { name: 5, size: 'big', tags: ['ok', 3] } });
      expect(r.status).to.equal(400);
      expect(r.body.errors.map((e: { path: string }) => e.path)).to.deep.equal(['body.name', 'body.size', 'body.tags[1]']);
      for (const e of r.body.errors) expect(e.message).to.be.a('string').and.match(/expected/);
    });

    it('accepts a valid body', async () => {
      const r = await call(`${url}/things/a`, { method: 'POST', json: { name: 'n', size: 2 } });
      expect(r.status).to.equal(201);
      expect(r.body).to.deep.equal({ slug: 'a', name: 'n', size: 2 });
    });

    it('a missing body reads as {} and names the missing fields', async () => {
      const r = await call(`${url}/things/a`, { method: 'POST' });
      expect(r.status).to.equal(400);
      expect(r.body.errors.map((e: { path: string }) => e.path)).to.deep.equal(['body.name', 'body.size']);
    });

    it('a ZodError thrown anywhere is a 400 VALIDATION_FAILED', async () => {
      const r = await call(`${url}/zod`);
      expect(r.status).to.equal(400);
      expect(r.body).to.include({ code: 'VALIDATION_FAILED' });
      expect(r.body.errors).to.deep.equal([{ path: 'n', message: 'Invalid input: expected number, received string' }]);
    });

    it('bad JSON is 400 BAD_JSON', async () => {
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a": 1,' });
      expect(r.status).to.equal(400);
      expect(r.body).to.deep.include({ code: 'BAD_JSON', detail: 'the request body is not valid JSON' });
      expect(r.text).to.not.match(/Unexpected|position|SyntaxError/);
    });

    it('a JSON body that is not an object or array is BAD_JSON (strict)', async () => {
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '"just a string"' });
      expect(r.status).to.equal(400);
      expect(r.body.code).to.equal('BAD_JSON');
    });

    it('a body of 1 MiB is accepted; 1 MiB + 1 byte is 413 PAYLOAD_TOO_LARGE', async () => {
      const wrap = '{"s":""}'.length;
      const exact = JSON.stringify({ s: 'x'.repeat(1024 * 1024 - wrap) });
      expect(Buffer.byteLength(exact)).to.equal(1024 * 1024);
      const ok = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: exact });
      expect(ok.status).to.equal(200);
      const over = JSON.stringify({ s: 'x'.repeat(1024 * 1024 - wrap + 1) });
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: over });
      expect(r.status).to.equal(413);
      expect(r.body).to.include({ code: 'PAYLOAD_TOO_LARGE', status: 413 });
    });

    it('a body that is not JSON is 415, unless its path accepts that type', async () => {
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
      expect(r.status).to.equal(415);
      expect(r.body.code).to.equal('UNSUPPORTED_MEDIA_TYPE');
      const none = await call(`${url}/echo`, { method: 'POST', body: new Uint8Array([1, 2, 3]) });
      expect(none.status).to.equal(415);
      const yaml = await call(`${url}/yaml`, { method: 'POST', headers: { 'content-type': 'application/yaml' }, body: 'a: 1' });
      expect(yaml.status).to.equal(200);
      expect(yaml.body).to.deep.equal({ yaml: 'a: 1' });
    });

    it('application/*+json is JSON too', async () => {
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/merge-patch+json' }, body: '{"a":1}' });
      expect(r.status).to.equal(200);
      expect(r.body).to.deep.equal({ got: { a: 1 } });
    });

    it('an unsupported charset is 415', async () => {
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json; charset=latin1' }, body: '{}' });
      expect(r.status).to.equal(415);
      expect(r.body.code).to.equal('UNSUPPORTED_MEDIA_TYPE');
    });

    it('an unsupported content encoding is 415', async () => {
      const r = await call(`${url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'zstd-or-whatever' }, body: '{}' });
      expect(r.status).to.equal(415);
      expect(r.body.code).to.equal('UNSUPPORTED_MEDIA_TYPE');
    });
  });

  describe('errors thrown by handlers', () => {
    it('a plain Error is a 500 INTERNAL with neither its message nor a stack, and is logged with the request id', async () => {
      for (const path of ['/boom', '/boom-async']) {
        const id = `boom-${path.length}`;
        const r = await call(`${url}${path}`, { headers: { 'X-Request-Id': id } });
        expect(r.status).to.equal(500);
        expect(r.body).to.deep.equal({
          type: 'https://opsledger.dev/problems/internal',
          title: 'Internal Server Error',
          status: 500,
          detail: INTERNAL_DETAIL,
          code: 'INTERNAL',
          request_id: id,
        });
        expect(r.text).to.not.match(/secret-internal-detail|hunter2|TypeError|\bat .*\.ts|stack/);
        const line = log.lines.find((l) => l.msg === 'unhandled error' && l['request_id'] === id);
        expect(line, 'the real error is logged').to.exist;
        expect((line!['err'] as { message: string }).message).to.contain('secret-internal-detail');
      }
    });

    it('errors with a code that is not ours, or INTERNAL itself, are generic 500s too', async () => {
      for (const path of ['/foreign-coded', '/internal-app-error']) {
        const r = await call(`${url}${path}`);
        expect(r.status, path).to.equal(500);
        expect(r.body.code).to.equal('INTERNAL');
        expect(r.text).to.not.match(/secret|duplicate key/);
      }
    });

    it('a DomainError answers its status: the table, else 409 for _EXISTS/_CONFLICT, else 400', async () => {
      const cases: Array<[string, number]> = [
        ['FORBIDDEN', 403], ['NOT_FOUND', 404], ['RATE_LIMITED', 429],
        ['WIDGET_EXISTS', 409], ['SCHEDULE_CONFLICT', 409], ['WIDGET_BROKEN', 400],
      ];
      for (const [code, status] of cases) {
        const r = await call(`${url}/domain/${code}`);
        expect(r.status, code).to.equal(status);
        expect(r.body).to.deep.include({ code, status, detail: `the domain refuses: ${code}` });
        expect(Object.keys(r.body).sort()).to.deep.equal([...PROBLEM_KEYS].sort());
      }
    });

    it('AppErrors answer their code: CONFLICT 409, NOT_FOUND 404, TIMEOUT 503 with their message', async () => {
      const c = await call(`${url}/conflict`);
      expect(c.status).to.equal(409);
      expect(c.body).to.include({ code: 'CONFLICT', detail: 'stream job-1 is at revision 4, expected 3' });
      const n = await call(`${url}/not-found`);
      expect(n.status).to.equal(404);
      expect(n.body).to.include({ code: 'NOT_FOUND', detail: 'job j-1 not found' });
      const t = await call(`${url}/timeout`);
      expect(t.status).to.equal(503);
      expect(t.body).to.include({ code: 'TIMEOUT' });
    });
  });

  describe('hardening and logging', () => {
    it('sends security headers, a CSP, and no X-Powered-By or automatic ETag', async () => {
      const r = await call(`${url}/ok`);
      expect(r.headers.get('x-powered-by')).to.equal(null);
      expect(r.headers.get('etag')).to.equal(null);
      expect(r.headers.get('x-content-type-options')).to.equal('nosniff');
      const csp = r.headers.get('content-security-policy')!;
      expect(csp).to.contain("default-src 'self'").and.contain("script-src 'self'").and.contain("frame-ancestors 'none'");
      expect(csp).to.not.contain('unsafe-eval');
    });

    it('logs one line per request with request id and user id, without credentials', async () => {
      await call(`${url}/as/u-42?token=secret-query-token&limit=5`, {
        headers: { 'X-Request-Id': 'log-1', authorization: 'Bearer secret-jwt', cookie: 'sid=secret-cookie' },
      });
      const lines = log.lines.filter((l) => l['request_id'] === 'log-1');
      expect(lines).to.have.length(1);
      const line = lines[0]!;
      expect(line).to.include({ user_id: 'u-42', msg: 'GET 200', level: 30 });
      expect((line['req'] as { url: string }).url).to.equal('/as/u-42?token=[Redacted]&limit=5');
      expect((line['res'] as { status_code: number }).status_code).to.equal(200);
      expect(JSON.stringify(lines)).to.not.match(/secret-jwt|secret-cookie|secret-query-token/);
    });

    it('never logs request bodies', async () => {
      await call(`${url}/echo`, { method: 'POST', headers: { 'X-Request-Id': 'log-2' }, json: { password: 'body-secret' } });
      expect(log.lines.some((l) => l['request_id'] === 'log-2')).to.equal(true);
      expect(log.text()).to.not.contain('body-secret');
    });

    it('redactUrl leaves other parameters alone', () => {
      expect(redactUrl('/a?b=1&access_token=x&c')).to.equal('/a?b=1&access_token=[Redacted]&c');
      expect(redactUrl('/a')).to.equal('/a');
    });

    it('finish(app) refuses an app it did not make, and a second call', () => {
      expect(() => finish(express())).to.throw(/not made by createHttpApp/);
      const app = createHttpApp({ logger: log.logger });
      finish(app);
      expect(() => finish(app)).to.throw(/twice/);
    });
  });
});
