// Projects and members over real HTTP: visibility, the last admin, If-Match,
// Idempotency-Key and read-your-writes.
import { expect } from 'chai';
import { sql } from 'kysely';
import { expectProblem, startApi, unique, type TestApi, type TestUser } from '../support/apiClient.ts';

const BILLING = { company_name: 'ACME GmbH', company_address: 'Hauptstr. 1, Berlin', tax_number_type: 'vat', tax_number: 'DE123456789', country: 'DE' };

describe('projects API', function () {
  this.timeout(60_000);
  let api: TestApi;
  let owner: TestUser;
  let stranger: TestUser;

  const eventCount = async () => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from events`.execute(api.running.kernel.database.db);
    return rows[0]!.n;
  };

  before(async () => {
    api = await startApi();
    [owner, stranger] = await Promise.all([api.createUser(), api.createUser()]);
  });
  after(async () => api?.close());

  it('the default project exists and cannot be deleted', async () => {
    const r = await api.admin.get('/projects/default');
    expect(r.status).to.equal(200);
    expect(r.body).to.include({ slug: 'default', display_name: 'Default' });
    expectProblem(await api.admin.delete('/projects/default'), 409, 'PROJECT_PROTECTED');
  });

  it('a new project is readable right after the 201 (read-your-writes), and its creator is its admin', async () => {
    const slug = unique('web');
    const created = await owner.client.post('/projects', { slug, display_name: 'Web shop', billing_account: BILLING });
    expect(created.status, created.text).to.equal(201);
    expect(created.headers.get('x-event-position')).to.match(/^\d+\/\d+$/);
    expect(created.headers.get('etag')).to.equal('"1"');
    expect(created.headers.get('location')).to.equal(`/api/v1/projects/${slug}`);
    expect(created.body).to.deep.include({ slug, display_name: 'Web shop', billing_account: BILLING, created_by: owner.id, role: 'admin' });
    // No waiting, no retry: the very next reads see it.
    const [one, list, me, members] = await Promise.all([
      owner.client.get(`/projects/${slug}`), owner.client.get('/projects'), owner.client.get('/auth/me'), owner.client.get(`/projects/${slug}/members`),
    ]);
    expect(one.status).to.equal(200);
    expect(one.headers.get('etag')).to.equal('"1"');
    expect(list.body.items.map((p: { slug: string }) => p.slug)).to.include(slug);
    expect(me.body.memberships).to.deep.include({ project: slug, role: 'admin' });
    expect(me.body.permissions.projects[slug]).to.include('members:write');
    expect(members.body).to.deep.include({ total: 1 });
    expect(members.body.items[0]).to.include({ user_id: owner.id, username: owner.username, role: 'admin' });
    expectProblem(await stranger.client.post('/projects', { slug, display_name: 'Mine now' }), 409, 'PROJECT_EXISTS');
  });

  it('a project is 404 to non-members until they are added, and 404 again once removed', async () => {
    const slug = unique('ops');
    expect((await owner.client.post('/projects', { slug, display_name: 'Ops' })).status).to.equal(201);
    for (const path of [`/projects/${slug}`, `/projects/${slug}/members`]) expectProblem(await stranger.client.get(path), 404, 'PROJECT_NOT_FOUND');
    expectProblem(await stranger.client.patch(`/projects/${slug}`, { display_name: 'x' }), 404);
    expectProblem(await stranger.client.delete(`/projects/${slug}`), 404);
    expect((await stranger.client.get('/projects')).body.items.map((p: { slug: string }) => p.slug)).not.to.include(slug);
    // A missing project looks exactly the same.
    const missing = await stranger.client.get(`/projects/${unique('none')}`);
    expect(missing.status).to.equal(404);

    const added = await owner.client.put(`/projects/${slug}/members/${stranger.id}`, { role: 'viewer' });
    expect(added.status, added.text).to.equal(201);
    expect(added.body).to.include({ user_id: stranger.id, role: 'viewer' });
    expect((await stranger.client.get(`/projects/${slug}`)).body.role).to.equal('viewer');
    expectProblem(await stranger.client.patch(`/projects/${slug}`, { display_name: 'x' }), 403, 'FORBIDDEN');
    expect((await owner.client.put(`/projects/${slug}/members/${stranger.id}`, { role: 'operator' })).status).to.equal(200);

    expect((await owner.client.delete(`/projects/${slug}/members/${stranger.id}`)).status).to.equal(204);
    expectProblem(await stranger.client.get(`/projects/${slug}`), 404);
    expectProblem(await owner.client.delete(`/projects/${slug}/members/${stranger.id}`), 404, 'MEMBER_NOT_FOUND');
    expectProblem(await owner.client.put(`/projects/${slug}/members/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}`, { role: 'viewer' }), 404, 'USER_NOT_FOUND');
  });

  it('keeps at least one admin in a project', async () => {
    const slug = unique('solo');
    expect((await owner.client.post('/projects', { slug, display_name: 'Solo' })).status).to.equal(201);
    expectProblem(await owner.client.delete(`/projects/${slug}/members/${owner.id}`), 409, 'LAST_ADMIN');
    expectProblem(await owner.client.put(`/projects/${slug}/members/${owner.id}`, { role: 'viewer' }), 409, 'LAST_ADMIN');
    // With a second admin the first may step down.
    expect((await owner.client.put(`/projects/${slug}/members/${stranger.id}`, { role: 'admin' })).status).to.equal(201);
    expect((await owner.client.put(`/projects/${slug}/members/${owner.id}`, { role: 'viewer' })).status).to.equal(200);
    expectProblem(await owner.client.put(`/projects/${slug}/members/${stranger.id}`, { role: 'admin' }), 403);
    expectProblem(await stranger.client.delete(`/projects/${slug}/members/${stranger.id}`), 409, 'LAST_ADMIN');
  });

  it('honours If-Match: a stale ETag is 412 and changes nothing', async () => {
    const slug = unique('etag');
    const created = await owner.client.post('/projects', { slug, display_name: 'One' });
    const etag = created.headers.get('etag')!;
    const first = await owner.client.patch(`/projects/${slug}`, { display_name: 'Two' }, { headers: { 'if-match': etag } });
    expect(first.status, first.text).to.equal(200);
    expect(first.body.display_name).to.equal('Two');
    const next = first.headers.get('etag')!;
    expect(next).to.not.equal(etag);
    const before = await eventCount();
    expectProblem(await owner.client.patch(`/projects/${slug}`, { display_name: 'Three' }, { headers: { 'if-match': etag } }), 412, 'PRECONDITION_FAILED');
    expectProblem(await owner.client.put(`/projects/${slug}/members/${stranger.id}`, { role: 'viewer' }, { headers: { 'if-match': etag } }), 412);
    expectProblem(await owner.client.delete(`/projects/${slug}`, { headers: { 'if-match': etag } }), 412);
    expectProblem(await owner.client.patch(`/projects/${slug}`, {}, { headers: { 'if-match': etag } }), 412);
    expectProblem(await owner.client.patch(`/projects/${slug}`, { display_name: 'x' }, { headers: { 'if-match': 'garbage' } }), 412);
    expect(await eventCount()).to.equal(before);
    expect((await owner.client.get(`/projects/${slug}`)).body.display_name).to.equal('Two');
    // Two writers holding the same ETag: exactly one wins.
    const race = await Promise.all(['A', 'B', 'C'].map((n) => owner.client.patch(`/projects/${slug}`, { display_name: n }, { headers: { 'if-match': next } })));
    expect(race.map((r) => r.status).sort()).to.deep.equal([200, 412, 412]);
    expect((await owner.client.delete(`/projects/${slug}`, { headers: { 'if-match': (await owner.client.get(`/projects/${slug}`)).headers.get('etag')! } })).status).to.equal(204);
    expectProblem(await owner.client.get(`/projects/${slug}`), 404);
    expectProblem(await owner.client.post('/projects', { slug, display_name: 'Again' }), 409, 'PROJECT_EXISTS');
  });

  it('replays a POST with the same Idempotency-Key and appends nothing', async () => {
    const slug = unique('idem');
    const key = unique('key');
    const first = await owner.client.post('/projects', { slug, display_name: 'Once' }, { headers: { 'idempotency-key': key } });
    expect(first.status, first.text).to.equal(201);
    const before = await eventCount();
    const again = await owner.client.post('/projects', { display_name: 'Once', slug }, { headers: { 'idempotency-key': key } });
    expect(again.status).to.equal(201);
    expect(again.headers.get('idempotent-replayed')).to.equal('true');
    expect(again.body).to.deep.equal(first.body);
    expect(again.headers.get('x-event-position')).to.equal(first.headers.get('x-event-position'));
    expect(await eventCount()).to.equal(before);
    expectProblem(await owner.client.post('/projects', { slug, display_name: 'Other' }, { headers: { 'idempotency-key': key } }), 422, 'IDEMPOTENCY_KEY_REUSED');
    // Keys are per caller: the same key from someone else is their own request.
    expectProblem(await stranger.client.post('/projects', { slug, display_name: 'Once' }, { headers: { 'idempotency-key': key } }), 409, 'PROJECT_EXISTS');
  });

  it('pages lists with limit and offset', async () => {
    const pager = await api.createUser();
    const slugs = [];
    for (let i = 0; i < 3; i++) {
      const slug = `${unique('pg')}-${i}`;
      slugs.push(slug);
      expect((await pager.client.post('/projects', { slug, display_name: `P${i}` })).status).to.equal(201);
    }
    const pageOne = await pager.client.get('/projects?limit=2&offset=0');
    expect(pageOne.body).to.include({ total: 3, limit: 2, offset: 0 });
    expect(pageOne.body.items).to.have.length(2);
    const pageTwo = await pager.client.get('/projects?limit=2&offset=2');
    expect(pageTwo.body.items).to.have.length(1);
    expect([...pageOne.body.items, ...pageTwo.body.items].map((p: { slug: string }) => p.slug)).to.deep.equal([...slugs].sort());
    expectProblem(await pager.client.get('/projects?limit=501'), 400, 'VALIDATION_FAILED');
    expectProblem(await pager.client.get('/projects?colour=red'), 400, 'VALIDATION_FAILED');
  });

  it('updates and clears the billing account; nested unknown fields are refused', async () => {
    const slug = unique('bill');
    expect((await owner.client.post('/projects', { slug, display_name: 'Bill' })).status).to.equal(201);
    const set = await owner.client.patch(`/projects/${slug}`, { billing_account: BILLING });
    expect(set.body.billing_account).to.deep.equal(BILLING);
    const bad = await owner.client.patch(`/projects/${slug}`, { billing_account: { ...BILLING, iban: 'x' } });
    expectProblem(bad, 400, 'VALIDATION_FAILED');
    expect(bad.body.errors[0].path).to.equal('body.billing_account.iban');
    const cleared = await owner.client.patch(`/projects/${slug}`, { billing_account: null });
    expect(cleared.body.billing_account).to.equal(null);
  });

  it('records who did it in every event: actor, request id, ip, project', async () => {
    const slug = unique('meta');
    const r = await owner.client.post('/projects', { slug, display_name: 'Meta' }, { headers: { 'x-request-id': 'req-meta-1' } });
    expect(r.status).to.equal(201);
    const events = await api.running.kernel.store.readStream(`project-${slug}`);
    expect(events.map((e) => e.type)).to.deep.equal(['ProjectCreated', 'MemberSet']);
    for (const e of events) {
      expect(e.metadata.actor).to.deep.equal({ user_id: owner.id, username: owner.username, token_id: null });
      expect(e.metadata).to.include({ request_id: 'req-meta-1', project: slug });
      expect(e.metadata.ip).to.match(/127\.0\.0\.1/);
    }
  });
});
