import { expect } from 'chai';
import { Router, type Request } from 'express';
import { z } from 'zod';
import type { Database } from '../../../infra/db/database.ts';
import { createHttpApp, finish } from '../../../infra/http/createHttpApp.ts';
import { idempotency, IDEMPOTENCY_TTL_MS, requestHash } from '../../../infra/http/idempotency.ts';
import { bindRoutes, createOpenApiRegistry } from '../../../infra/http/openapi.ts';
import { freshDatabase } from '../../support/databases.ts';
import { waitFor } from '../../support/waitFor.ts';
import { call, listen, memoryLogger, type Listening } from './httpHarness.ts';

describe('HTTP kit: Idempotency-Key (PGlite)', () => {
  let database: Database;
  let server: Listening;
  let url: string;
  let clock = Date.parse('2026-01-01T00:00:00Z');
  let calls: Array<{ name: string }> = [];
  let status = 201;
  let gate: Promise<void> | null = null;
  let entered = 0;

  const principalKey = (req: Request) => (req.headers['x-user'] as string | undefined) ?? `anonymous:${req.socket.remoteAddress}`;

  before(async () => {
    database = await freshDatabase('pglite');
    const app = createHttpApp({ logger: memoryLogger().logger });
    const router = Router();
    const registry = createOpenApiRegistry();
    const idem = idempotency({ db: database.db, principalKey, now: () => new Date(clock), inProgressTimeoutMs: 60_000 });
    const r = bindRoutes(router, registry, { idempotency: idem });
    r.post(
      { path: '/things', summary: 'Create a thing', tags: ['t'], auth: false, body: z.object({ name: z.string() }), responses: { 201: 'created' } },
      async ({ body }, _req, res) => {
        entered++;
        if (gate) await gate;
        calls.push(body);
        if (status >= 500) throw new Error('the store is down');
        if (status >= 400) {
          res.status(status).type('application/problem+json').send(JSON.stringify({ code: 'NOPE', n: calls.length }));
          return;
        }
        res.status(status).location(`/things/${calls.length}`).setHeader('ETag', `"${calls.length}"`);
        res.setHeader('X-Event-Position', `0/${calls.length}`);
        res.setHeader('X-Not-Replayed', 'x');
        res.json({ n: calls.length, name: body.name });
      },
    );
    r.post(
      { path: '/other', summary: 'Another', tags: ['t'], auth: false, body: z.object({ name: z.string() }), responses: { 201: 'created' } },
      ({ body }, _req, res) => {
        calls.push(body);
        res.status(201).json({ other: true });
      },
    );
    app.use(router);
    finish(app);
    server = await listen(app);
    url = server.url;
    expect(registry.routes.every((route) => route.idempotent)).to.equal(true);
  });

  after(async () => {
    await server.close();
    await database.close();
  });

  beforeEach(() => {
    calls = [];
    status = 201;
    gate = null;
    entered = 0;
    clock += IDEMPOTENCY_TTL_MS * 10; // every test starts far from the last one's keys
  });

  const post = (key: string | undefined, json: unknown, path = '/things', user = 'alice') =>
    call(`${url}${path}`, { method: 'POST', json, headers: { 'x-user': user, ...(key === undefined ? {} : { 'idempotency-key': key }) } });

  it('a retry replays status, selected headers and body without calling the handler again', async () => {
    const first = await post('k-1', { name: 'a' });
    expect(first.status).to.equal(201);
    const second = await post('k-1', { name: 'a' });
    expect(calls).to.have.length(1);
    expect(second.status).to.equal(201);
    expect(second.text).to.equal(first.text);
    for (const h of ['content-type', 'location', 'etag', 'x-event-position']) expect(second.headers.get(h), h).to.equal(first.headers.get(h));
    expect(second.headers.get('idempotent-replayed')).to.equal('true');
    expect(second.headers.get('x-not-replayed')).to.equal(null);
    expect(second.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/).and.not.equal(first.headers.get('x-request-id'));
  });

  it('the same body with its keys in another order is the same request', async () => {
    await post('k-order', { name: 'a' });
    const again = await call(`${url}/things`, { method: 'POST', headers: { 'x-user': 'alice', 'idempotency-key': 'k-order', 'content-type': 'application/json' }, body: ' { "name" : "a" } ' });
    expect(again.status).to.equal(201);
    expect(calls).to.have.length(1);
    expect(requestHash({ a: 1, b: [{ c: 1, d: 2 }] })).to.equal(requestHash({ b: [{ d: 2, c: 1 }], a: 1 }));
  });

  it('the same key with a different body or path is 422 IDEMPOTENCY_KEY_REUSED', async () => {
    await post('k-2', { name: 'a' });
    const otherBody = await post('k-2', { name: 'b' });
    expect(otherBody.status).to.equal(422);
    expect(otherBody.body).to.include({ code: 'IDEMPOTENCY_KEY_REUSED', status: 422 });
    const otherPath = await post('k-2', { name: 'a' }, '/other');
    expect(otherPath.status).to.equal(422);
    expect(calls).to.have.length(1);
  });

  it('keys are per principal', async () => {
    await post('k-3', { name: 'a' }, '/things', 'alice');
    const bob = await post('k-3', { name: 'b' }, '/things', 'bob');
    expect(bob.status).to.equal(201);
    expect(calls).to.have.length(2);
  });

  it('without a key every request runs', async () => {
    await post(undefined, { name: 'a' });
    await post(undefined, { name: 'a' });
    expect(calls).to.have.length(2);
  });

  it('4xx answers are kept and replayed; 5xx are not, so a retry runs again', async () => {
    status = 404;
    const a = await post('k-4', { name: 'a' });
    const b = await post('k-4', { name: 'a' });
    expect([a.status, b.status]).to.deep.equal([404, 404]);
    expect(b.text).to.equal(a.text);
    expect(calls).to.have.length(1);

    status = 500;
    const c = await post('k-5', { name: 'a' });
    expect(c.status).to.equal(500);
    status = 201;
    const d = await post('k-5', { name: 'a' });
    expect(d.status).to.equal(201);
    expect(calls).to.have.length(3);
    const e = await post('k-5', { name: 'a' });
    expect(e.text).to.equal(d.text);
    expect(calls).to.have.length(3);
  });

  it('a validation failure (400) is kept like any 4xx', async () => {
    const a = await post('k-6', { name: 1 });
    expect(a.status).to.equal(400);
    const b = await post('k-6', { name: 1 });
    expect(b.text).to.equal(a.text);
    expect(entered).to.equal(0);
  });

  it('a duplicate that arrives while the first is running is told 409 IDEMPOTENCY_IN_PROGRESS', async () => {
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    const first = post('k-7', { name: 'a' });
    await waitFor(() => entered === 1, 'the first request to reach the handler');
    const dup = await post('k-7', { name: 'a' });
    expect(dup.status).to.equal(409);
    expect(dup.body.code).to.equal('IDEMPOTENCY_IN_PROGRESS');
    expect(dup.headers.get('retry-after')).to.equal('1');
    release();
    expect((await first).status).to.equal(201);
    const replay = await post('k-7', { name: 'a' });
    expect(replay.status).to.equal(201);
    expect(calls).to.have.length(1);
  });

  it('a claim abandoned for longer than the in-progress timeout is taken over', async () => {
    await database.db
      .insertInto('idempotency_keys')
      .values({ key: 'k-8', principal: 'alice', method: 'POST', path: '/things', request_hash: requestHash({ name: 'a' }), status: null, headers: null, body: null, created_at: new Date(clock - 61_000) })
      .execute();
    const r = await post('k-8', { name: 'a' });
    expect(r.status).to.equal(201);
    expect(calls).to.have.length(1);
  });

  it('keys older than 24 h are ignored, and pruned', async () => {
    await post('k-9', { name: 'a' });
    clock += IDEMPOTENCY_TTL_MS + 1;
    const later = await post('k-9', { name: 'b' }); // a new request under the old key
    expect(later.status).to.equal(201);
    expect(calls).to.have.length(2);
    // An untouched expired key is pruned by the next request (at most every 10 minutes).
    await post('k-10', { name: 'a' });
    clock += IDEMPOTENCY_TTL_MS + 11 * 60_000;
    await post('k-11', { name: 'a' });
    await waitFor(async () => !(await database.db.selectFrom('idempotency_keys').select('key').where('key', '=', 'k-10').executeTakeFirst()), 'k-10 to be pruned');
  });

  it('a key longer than 255 characters is a 400', async () => {
    const r = await post('x'.repeat(256), { name: 'a' });
    expect(r.status).to.equal(400);
    expect(r.body.errors).to.deep.equal([{ path: 'headers.idempotency-key', message: 'must be 1 to 255 printable ASCII characters' }]);
    expect((await post('x'.repeat(255), { name: 'a' })).status).to.equal(201);
  });
});
