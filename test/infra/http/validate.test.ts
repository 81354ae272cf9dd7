import { expect } from 'chai';
import { z } from 'zod';
import { createHttpApp, finish } from '../../../infra/http/createHttpApp.ts';
import {
  CursorPagination, cursorPage, page, Pagination, parse, Slug, Uuid, validated, ValidationError,
} from '../../../infra/http/validate.ts';
import { call, listen, memoryLogger, type Listening } from './httpHarness.ts';

const fieldsOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ValidationError);
    return (err as ValidationError).errors;
  }
  throw new Error('expected a ValidationError');
};

describe('HTTP kit: validation', () => {
  describe('shared pieces', () => {
    it('Slug takes [a-z0-9][a-z0-9-]{0,62} and nothing else', () => {
      for (const ok of ['a', 'web-1', '0', 'a'.repeat(63), 'a-']) expect(Slug.safeParse(ok).success, ok).to.equal(true);
      for (const bad of ['', '-a', 'A', 'a_b', 'a.b', 'a'.repeat(64), 'a b', '../x', 'é']) expect(Slug.safeParse(bad).success, bad).to.equal(false);
    });

    it('Uuid takes UUIDs and lower-cases them', () => {
      expect(Uuid.parse('6F9619FF-8B86-4011-B42D-00C04FC964FF')).to.equal('6f9619ff-8b86-4011-b42d-00c04fc964ff');
      expect(Uuid.safeParse('not-a-uuid').success).to.equal(false);
    });

    it('Pagination coerces query strings, defaults to 50/0 and bounds limit to 1..500', () => {
      expect(Pagination.parse({})).to.deep.equal({ limit: 50, offset: 0 });
      expect(Pagination.parse({ limit: '500', offset: '20' })).to.deep.equal({ limit: 500, offset: 20 });
      for (const bad of [{ limit: '501' }, { limit: '0' }, { limit: '1.5' }, { offset: '-1' }, { limit: 'ten' }, { page: '2' }]) {
        expect(Pagination.safeParse(bad).success, JSON.stringify(bad)).to.equal(false);
      }
    });

    it('Pagination extends with filters and stays strict', () => {
      const ListJobs = Pagination.extend({ status: z.enum(['pending', 'done']).optional() });
      expect(ListJobs.parse({ status: 'done', limit: '5' })).to.deep.equal({ status: 'done', limit: 5, offset: 0 });
      expect(ListJobs.safeParse({ other: 'x' }).success).to.equal(false);
    });

    it('CursorPagination takes an opaque cursor', () => {
      expect(CursorPagination.parse({ cursor: 'abc' })).to.deep.equal({ limit: 50, cursor: 'abc' });
      expect(CursorPagination.parse({})).to.deep.equal({ limit: 50 });
    });

    it('page and cursorPage shape list answers', () => {
      expect(page(['a'], 7n, { limit: 1, offset: 3 })).to.deep.equal({ items: ['a'], total: 7, limit: 1, offset: 3 });
      expect(cursorPage(['a'], 1, 'next')).to.deep.equal({ items: ['a'], limit: 1, next_cursor: 'next' });
    });
  });

  describe('parse', () => {
    it('returns the typed value or throws a ValidationError whose paths start at `at`', () => {
      expect(parse(z.object({ n: z.number() }), { n: 1 })).to.deep.equal({ n: 1 });
      expect(fieldsOf(() => parse(z.strictObject({ a: z.object({ n: z.number() }) }), { a: { n: '1' }, b: 1 }, 'body'))).to.deep.equal([
        { path: 'body.a.n', message: 'Invalid input: expected number, received string' },
        { path: 'body.b', message: 'unknown field' },
      ]);
    });
  });

  describe('validated over HTTP', () => {
    let server: Listening;
    const ListThings = validated({ params: z.object({ project: Slug }), query: Pagination.extend({ q: z.string().optional() }) });
    const Cancel = validated({ params: z.object({ id: Uuid }) });
    const Nested = validated({ body: z.object({ spec: z.strictObject({ image: z.string() }) }) });

    before(async () => {
      const app = createHttpApp({ logger: memoryLogger().logger });
      app.get('/projects/:project/things', (req, res) => {
        const { params, query } = ListThings.parse(req);
        res.json(page([params.project], 1, query));
      });
      app.post('/things/:id/cancel', (req, res) => {
        const { params, body } = Cancel.parse(req);
        res.json({ id: params.id, body: body ?? null });
      });
      app.post('/nested', (req, res) => {
        res.json(Nested.parse(req).body);
      });
      finish(app);
      server = await listen(app);
    });

    after(() => server.close());

    it('parses params and coerced query', async () => {
      const r = await call(`${server.url}/projects/web/things?limit=2&offset=4`);
      expect(r.status).to.equal(200);
      expect(r.body).to.deep.equal({ items: ['web'], total: 1, limit: 2, offset: 4 });
    });

    it('an unknown query parameter, a bad param and a bad limit are all named', async () => {
      const r = await call(`${server.url}/projects/Web_1/things?limit=9999&colour=red`);
      expect(r.status).to.equal(400);
      expect(r.body.errors.map((e: { path: string }) => e.path)).to.deep.equal(['params.project', 'query.limit', 'query.colour']);
    });

    it('a route without a body schema takes no body or {} but refuses fields', async () => {
      const id = '6f9619ff-8b86-4011-b42d-00c04fc964ff';
      expect((await call(`${server.url}/things/${id}/cancel`, { method: 'POST' })).status).to.equal(200);
      expect((await call(`${server.url}/things/${id}/cancel`, { method: 'POST', json: {} })).status).to.equal(200);
      const r = await call(`${server.url}/things/${id}/cancel`, { method: 'POST', json: { force: true } });
      expect(r.status).to.equal(400);
      expect(r.body.errors).to.deep.equal([{ path: 'body', message: 'this endpoint takes no body' }]);
      const q = await call(`${server.url}/things/${id}/cancel?x=1`, { method: 'POST' });
      expect(q.body.errors).to.deep.equal([{ path: 'query.x', message: 'unknown field' }]);
    });

    it('rejects unknown fields in nested strict objects, by path', async () => {
      const r = await call(`${server.url}/nested`, { method: 'POST', json: { spec: { image: 'nginx', privileged: true } } });
      expect(r.status).to.equal(400);
      expect(r.body.errors).to.deep.equal([{ path: 'body.spec.privileged', message: 'unknown field' }]);
    });

    it('a body of the wrong JSON type is named as `body`', async () => {
      const r = await call(`${server.url}/nested`, { method: 'POST', json: [1, 2] });
      expect(r.status).to.equal(400);
      expect(r.body.errors).to.deep.equal([{ path: 'body', message: 'Invalid input: expected object, received array' }]);
    });
  });
});
