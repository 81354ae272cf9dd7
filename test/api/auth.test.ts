// Sessions, API tokens, users and registration over real HTTP against the running app,
// on PGlite and on a PostgreSQL server.
import { createHmac, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { waitFor } from '../support/waitFor.ts';
import { sql } from 'kysely';
import { signSession } from '../../infra/auth/jwt.ts';
import { FLAVOURS, freshDatabaseUrl } from '../support/databases.ts';
import { startRedisServer, type RedisServer } from '../support/redisServer.ts';
import { ADMIN_PASSWORD, expectProblem, PASSWORD, startApi, unique, type TestApi } from '../support/apiClient.ts';

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

for (const flavour of FLAVOURS) {
  describe(`identity API (${flavour})`, function () {
    this.timeout(60_000);
    let api: TestApi;
    const secrets: string[] = [ADMIN_PASSWORD, PASSWORD];

    before(async () => {
      api = await startApi({ flavour });
    });
    after(async () => api?.close());

    describe('sessions', () => {
      it('logs in, reads /auth/me with memberships and permissions, and refreshes', async () => {
        const login = await api.anonymous.post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD });
        expect(login.status, login.text).to.equal(200);
        expect(login.body).to.have.keys('access_token', 'token_type', 'expires_in');
        expect(login.body).to.include({ token_type: 'bearer', expires_in: 1800 });
        expect(login.headers.get('cache-control')).to.equal('no-store');

        const me = await api.as(login.body.access_token).get('/auth/me');
        expect(me.status, me.text).to.equal(200);
        expect(me.body).to.include({ username: 'admin', role: 'admin', active: true });
        expect(me.body.permissions.global).to.deep.equal(['users:admin', 'system:admin']);
        expect(me.body.authenticated_by).to.include({ method: 'session', token_id: null });
        expect(me.headers.get('etag')).to.match(/^"\d+"$/);
        expect(me.text).not.to.match(/password/i);

        const refreshed = await api.as(login.body.access_token).post('/auth/refresh');
        expect(refreshed.status, refreshed.text).to.equal(200);
        expect(refreshed.body.access_token).to.be.a('string').and.not.equal(login.body.access_token);
        expect((await api.as(refreshed.body.access_token).get('/auth/me')).status).to.equal(200);
      });

      it('answers 401 to a wrong password and to an unknown user alike', async () => {
        const wrong = await api.anonymous.post('/auth/login', { username: 'admin', password: 'not the password' });
        const unknown = await api.anonymous.post('/auth/login', { username: unique('nobody'), password: 'not the password' });
        for (const r of [wrong, unknown]) expectProblem(r, 401, 'INVALID_CREDENTIALS');
        expect(wrong.body.detail).to.equal(unknown.body.detail);
        // Usernames are case-insensitive.
        expect((await api.anonymous.post('/auth/login', { username: 'ADMIN', password: ADMIN_PASSWORD })).status).to.equal(200);
      });

      it('refuses alg:none, a forged signature, garbage, another scheme and an expired session', async () => {
        const me = (await api.admin.get('/auth/me')).body;
        const now = Math.floor(Date.now() / 1000);
        const claims = { sub: me.id, sv: 0, iat: now, exp: now + 600, jti: 'x', typ: 'session', iss: 'opsledger' };
        const none = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`;
        const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
        const forged = `${body}.${createHmac('sha256', 'a-guessed-key-that-is-long-enough-0123456789').update(body).digest('base64url')}`;
        const otherKey = signSession({ userId: me.id, sessionVersion: 0 }, { secret: 'k'.repeat(40), expiresInSeconds: 600 });
        const expired = signSession({ userId: me.id, sessionVersion: 0 }, { secret: api.config.secretKey!, expiresInSeconds: 60, now: Date.now() - 3_600_000 });
        for (const token of [none, forged, otherKey, 'garbage', 'opl_short', `opl_${'A'.repeat(38)}`, `${body}.`]) {
          const r = await api.as(token).get('/auth/me');
          expectProblem(r, 401, 'UNAUTHORIZED');
          expect(r.headers.get('www-authenticate')).to.match(/^Bearer/);
        }
        expectProblem(await api.as(expired).get('/auth/me'), 401, 'TOKEN_EXPIRED');
        expectProblem(await api.anonymous.get('/auth/me', { headers: { authorization: `Basic ${Buffer.from('admin:x').toString('base64')}` } }), 401, 'UNAUTHORIZED');
        expectProblem(await api.anonymous.get('/auth/me'), 401, 'UNAUTHORIZED');
        // A bad token is refused even where no token is needed.
        expectProblem(await api.as('garbage').post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD }), 401);
      });
    });

    describe('API tokens', () => {
      it('are shown once, listed without secret, used, and dead on the very next request after revocation', async () => {
        const user = await api.createUser();
        const created = await user.client.post('/auth/tokens', { name: 'ci deploy' });
        expect(created.status, created.text).to.equal(201);
        const token: string = created.body.token;
        secrets.push(token);
        expect(token).to.match(/^opl_[0-9A-Za-z]{46}$/);
        expect(created.body).to.include({ name: 'ci deploy', scopes: null, project: null, revoked_at: null });
        expect(token.startsWith(created.body.prefix)).to.equal(true);

        const list = await user.client.get('/auth/tokens');
        expect(list.status).to.equal(200);
        expect(list.body).to.include({ total: 1, limit: 50, offset: 0 });
        expect(list.body.items[0]).to.not.have.any.keys('token', 'token_hash', 'hash');
        expect(list.text).not.to.include(token.slice(12));

        const viaToken = await api.as(token).get('/auth/me');
        expect(viaToken.status, viaToken.text).to.equal(200);
        expect(viaToken.body.authenticated_by).to.include({ method: 'api_token', token_id: created.body.id });
        const used = await user.client.get('/auth/tokens');
        expect(used.body.items[0].last_used_at).to.be.a('string');

        const revoked = await user.client.delete(`/auth/tokens/${created.body.id}`);
        expect(revoked.status, revoked.text).to.equal(204);
        expectProblem(await api.as(token).get('/auth/me'), 401, 'UNAUTHORIZED');
        expect((await user.client.get('/auth/tokens')).body.items[0].revoked_at).to.be.a('string');
        // Somebody else's token is not found, and revoking twice is harmless.
        const other = await api.createUser();
        expectProblem(await other.client.delete(`/auth/tokens/${created.body.id}`), 404, 'TOKEN_NOT_FOUND');
        expect((await user.client.delete(`/auth/tokens/${created.body.id}`)).status).to.equal(204);
      });

      it('hold only scopes the owner holds, and act within them and their project pin', async () => {
        const user = await api.createUser();
        const beyond = await user.client.post('/auth/tokens', { name: 'x', scopes: ['users:admin'] });
        expectProblem(beyond, 400, 'VALIDATION_FAILED');
        expect(beyond.body.errors[0].path).to.equal('body.scopes');
        expectProblem(await user.client.post('/auth/tokens', { name: 'x', scopes: ['nope:read'] }), 400, 'VALIDATION_FAILED');

        // The admin's token scoped to reading nodes cannot administer users.
        const scoped = await api.admin.post('/auth/tokens', { name: 'reader', scopes: ['nodes:read'] });
        expect(scoped.status, scoped.text).to.equal(201);
        secrets.push(scoped.body.token);
        expectProblem(await api.as(scoped.body.token).get('/users'), 403, 'FORBIDDEN');
        // …nor mint any token (one that outlived its expiry or revocation), nor list or
        // revoke its owner's other tokens; it may revoke itself.
        expectProblem(await api.as(scoped.body.token).post('/auth/tokens', { name: 'wider', scopes: ['users:admin'] }), 403, 'FORBIDDEN');
        expectProblem(await api.as(scoped.body.token).post('/auth/tokens', { name: 'same' }), 403, 'FORBIDDEN');
        const sibling = await api.admin.post('/auth/tokens', { name: 'sibling' });
        expect(sibling.status, sibling.text).to.equal(201);
        secrets.push(sibling.body.token);
        expectProblem(await api.as(scoped.body.token).delete(`/auth/tokens/${sibling.body.id}`), 403, 'FORBIDDEN');
        expect((await api.as(sibling.body.token).get('/auth/me')).status).to.equal(200);
        expect((await api.as(sibling.body.token).delete(`/auth/tokens/${sibling.body.id}`)).status).to.equal(204);
        expectProblem(await api.as(sibling.body.token).get('/auth/me'), 401, 'UNAUTHORIZED');
        // Nor, even unscoped, set its owner's password behind PATCH /auth/me's back.
        const full = await api.admin.post('/auth/tokens', { name: 'full' });
        secrets.push(full.body.token);
        const adminId = (await api.admin.get('/auth/me')).body.id as string;
        expectProblem(await api.as(full.body.token).patch(`/users/${adminId}`, { password: 'another long password' }), 403, 'FORBIDDEN');

        // Pinned to one project: sees that one only.
        const slug = unique('pin');
        expect((await api.admin.post('/projects', { slug, display_name: 'Pinned' })).status).to.equal(201);
        const pinned = await api.admin.post('/auth/tokens', { name: 'pinned', project: slug });
        expect(pinned.status, pinned.text).to.equal(201);
        const projects = await api.as(pinned.body.token).get('/projects');
        expect(projects.body.items.map((p: { slug: string }) => p.slug)).to.deep.equal([slug]);
        expectProblem(await api.as(pinned.body.token).get('/projects/default'), 404, 'PROJECT_NOT_FOUND');
        expectProblem(await api.as(pinned.body.token).post('/projects', { slug: unique('p'), display_name: 'x' }), 403, 'FORBIDDEN');
        expectProblem(await api.admin.post('/auth/tokens', { name: 'x', project: unique('nothere') }), 400, 'VALIDATION_FAILED');
      });

      it('expire', async () => {
        const user = await api.createUser();
        const soon = new Date(Date.now() + 1500).toISOString();
        const created = await user.client.post('/auth/tokens', { name: 'short', expires_at: soon });
        expect(created.status, created.text).to.equal(201);
        expect((await api.as(created.body.token).get('/auth/me')).status).to.equal(200);
        await waitFor(async () => (await api.as(created.body.token).get('/auth/me')).status === 401, 'the token to expire', 5000);
        expect(Date.now()).to.be.at.least(Date.parse(soon));
        expectProblem(await api.as(created.body.token).get('/auth/me'), 401, 'UNAUTHORIZED');
        expectProblem(await user.client.post('/auth/tokens', { name: 'past', expires_at: '2000-01-01T00:00:00Z' }), 400);
      });
    });

    describe('users', () => {
      it('deactivation ends the user’s sessions and tokens at once; reactivation needs a new login', async () => {
        const user = await api.createUser();
        const token = (await user.client.post('/auth/tokens', { name: 't' })).body.token as string;
        expect((await api.as(token).get('/auth/me')).status).to.equal(200);

        const off = await api.admin.delete(`/users/${user.id}`);
        expect(off.status, off.text).to.equal(204);
        expectProblem(await user.client.get('/auth/me'), 401, 'UNAUTHORIZED');
        expectProblem(await api.as(token).get('/auth/me'), 401, 'UNAUTHORIZED');
        expectProblem(await api.anonymous.post('/auth/login', { username: user.username, password: user.password }), 401, 'INVALID_CREDENTIALS');
        expect((await api.admin.get(`/users/${user.id}`)).body.active).to.equal(false);

        const on = await api.admin.patch(`/users/${user.id}`, { active: true });
        expect(on.status, on.text).to.equal(200);
        expect(on.body.active).to.equal(true);
        expectProblem(await user.client.get('/auth/me'), 401); // the old session stays ended
        expectProblem(await api.as(token).get('/auth/me'), 401); // and its tokens were revoked, not suspended
        expect((await api.as(await api.login(user.username)).get('/auth/me')).status).to.equal(200);
      });

      it('a password change needs the current password and ends every session', async () => {
        const user = await api.createUser();
        const second = await api.login(user.username);
        const bad = await user.client.patch('/auth/me', { password: 'a brand new password' });
        expectProblem(bad, 400, 'VALIDATION_FAILED');
        expectProblem(await user.client.patch('/auth/me', { password: 'a brand new password', current_password: 'wrong one' }), 400, 'VALIDATION_FAILED');
        expectProblem(await user.client.patch('/auth/me', { password: 'short', current_password: user.password }), 400, 'VALIDATION_FAILED');
        const changed = await user.client.patch('/auth/me', { password: 'a brand new password', current_password: user.password, email: 'me@example.test' });
        expect(changed.status, changed.text).to.equal(200);
        expect(changed.body.email).to.equal('me@example.test');
        secrets.push('a brand new password');
        expectProblem(await user.client.get('/auth/me'), 401);
        expectProblem(await api.as(second).get('/auth/me'), 401);
        expectProblem(await api.as(second).post('/auth/refresh'), 401); // no fresh token for an ended session
        expectProblem(await api.anonymous.post('/auth/login', { username: user.username, password: user.password }), 401);
        expect((await api.as(await api.login(user.username, 'a brand new password')).get('/auth/me')).body.email).to.equal('me@example.test');
      });

      it('an admin creates, lists, reads and changes users; usernames are unique ignoring case', async () => {
        const username = unique('Carol');
        const created = await api.admin.post('/users', { username, password: PASSWORD, email: 'carol@example.test', rate_limit_per_second: 5, rate_limit_burst: 9 });
        expect(created.status, created.text).to.equal(201);
        expect(created.headers.get('location')).to.equal(`/api/v1/users/${created.body.id}`);
        expect(created.headers.get('x-event-position')).to.match(/^\d+\/\d+$/);
        expect(created.body).to.include({ username, email: 'carol@example.test', role: 'user', active: true, rate_limit_per_second: 5, rate_limit_burst: 9 });
        expect(created.body).to.not.have.any.keys('password', 'password_ref', 'passwordRef');
        expectProblem(await api.admin.post('/users', { username: username.toUpperCase(), password: PASSWORD }), 409, 'USERNAME_EXISTS');

        // Read your writes: the list has it at once.
        const list = await api.admin.get('/users?limit=500');
        expect(list.body.items.map((u: { id: string }) => u.id)).to.include(created.body.id);
        expect(list.body.total).to.equal(list.body.items.length);

        const etag = (await api.admin.get(`/users/${created.body.id}`)).headers.get('etag')!;
        const patched = await api.admin.patch(`/users/${created.body.id}`, { role: 'admin', rate_limit_burst: null }, { headers: { 'if-match': etag } });
        expect(patched.status, patched.text).to.equal(200);
        expect(patched.body).to.include({ role: 'admin', rate_limit_burst: null });
        expectProblem(await api.admin.patch(`/users/${created.body.id}`, { email: null }, { headers: { 'if-match': etag } }), 412, 'PRECONDITION_FAILED');
        expectProblem(await api.admin.get(`/users/${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}`), 404, 'USER_NOT_FOUND');
      });

      it('an API token event moves the user’s ETag, so If-Match stays exact', async () => {
        const user = await api.createUser();
        const before = (await api.admin.get(`/users/${user.id}`)).headers.get('etag')!;
        expect((await user.client.post('/auth/tokens', { name: 't' })).status).to.equal(201);
        const after = (await api.admin.get(`/users/${user.id}`)).headers.get('etag')!;
        expect(after).to.not.equal(before);
        expectProblem(await api.admin.patch(`/users/${user.id}`, { email: 'a@example.test' }, { headers: { 'if-match': before } }), 412);
        expect((await api.admin.patch(`/users/${user.id}`, { email: 'a@example.test' }, { headers: { 'if-match': after } })).status).to.equal(200);
      });

      it('keeps the last active global admin', async () => {
        const admins = await api.admin.get('/users?role=admin&active=true');
        const me = (await api.admin.get('/auth/me')).body;
        const others = admins.body.items.filter((u: { id: string }) => u.id !== me.id);
        for (const o of others) expect((await api.admin.delete(`/users/${o.id}`)).status).to.equal(204);
        expectProblem(await api.admin.delete(`/users/${me.id}`), 409, 'LAST_GLOBAL_ADMIN');
        expectProblem(await api.admin.patch(`/users/${me.id}`, { role: 'user' }), 409, 'LAST_GLOBAL_ADMIN');
        const second = await api.createUser({ role: 'admin' });
        expect((await second.client.delete(`/users/${second.id}`)).status).to.equal(204);
      });

      it('registration is off by default', async () => {
        expectProblem(await api.anonymous.post('/auth/register', { username: unique('reg'), password: PASSWORD }), 403, 'REGISTRATION_DISABLED');
        // Whatever the body: disabled is not a validation error.
        expectProblem(await api.anonymous.post('/auth/register', { username: 'a b', unknown: 1 }), 403, 'REGISTRATION_DISABLED');
      });
    });

    // Last: after the tests above have used every kind of secret.
    describe('secrets', () => it('never writes a password or a token into the log, the events, or a read model', async () => {
      const db = api.running.kernel.database.db;
      const { rows } = await sql<{ t: string }>`select string_agg(data::text || metadata::text, ' ') as t from events`.execute(db);
      const users = await sql<{ t: string }>`select string_agg(u::text, ' ') as t from users u`.execute(db);
      const tokens = await sql<{ t: string }>`select string_agg(t::text, ' ') as t from api_tokens t`.execute(db);
      const idem = await sql<{ t: string }>`select coalesce(string_agg(i::text, ' '), '') as t from idempotency_keys i`.execute(db);
      const vault = await sql<{ t: string }>`select string_agg(encode(ciphertext, 'escape'), ' ') as t from vault_secrets`.execute(db);
      const log = api.logText();
      expect(log).to.include('POST 200'); // the log did record requests
      for (const secret of secrets) {
        for (const [where, text] of [['log', log], ['events', rows[0]!.t], ['users', users.rows[0]!.t], ['api_tokens', tokens.rows[0]!.t],
          ['idempotency_keys', idem.rows[0]!.t], ['vault (ciphertext)', vault.rows[0]!.t]] as const) {
          expect(text, `${where} holds a secret`).not.to.include(secret);
        }
      }
      expect(log).not.to.match(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/); // no session JWT either
      expect(rows[0]!.t).not.to.match(/scrypt\$/);
    }));
  });
}

describe('identity API with registration enabled', function () {
  this.timeout(60_000);
  let api: TestApi;
  before(async () => {
    api = await startApi({ env: { ALLOW_REGISTRATION: 'true' } });
  });
  after(async () => api?.close());

  it('registers a user who can then log in; a taken username is 409', async () => {
    const username = unique('Dora');
    const r = await api.anonymous.post('/auth/register', { username, password: PASSWORD, email: 'dora@example.test' });
    expect(r.status, r.text).to.equal(201);
    expect(r.body).to.include({ username, role: 'user', active: true });
    const token = await api.login(username.toLowerCase());
    const me = await api.as(token).get('/auth/me');
    expect(me.body).to.include({ id: r.body.id, email: 'dora@example.test' });
    expect(me.body.memberships).to.deep.equal([]);
    expectProblem(await api.anonymous.post('/auth/register', { username: username.toUpperCase(), password: PASSWORD }), 409, 'USERNAME_EXISTS');
    expectProblem(await api.anonymous.post('/auth/register', { username: 'admin', password: PASSWORD }), 409, 'USERNAME_EXISTS');
  });

  it('limits registrations per client address in a bucket of their own (each costs a scrypt hash)', async () => {
    const limited = await startApi({ env: { ALLOW_REGISTRATION: 'true' }, server: { loginLimits: { perIp: { ratePerSecond: 0.01, burst: 2 } } } });
    try {
      for (let i = 0; i < 2; i++) {
        const ok = await limited.anonymous.post('/auth/register', { username: unique('reg'), password: PASSWORD });
        expect(ok.status, ok.text).to.equal(201);
        expect(ok.headers.get('x-ratelimit-limit')).to.equal('2');
      }
      const refused = await limited.anonymous.post('/auth/register', { username: unique('reg'), password: PASSWORD });
      expectProblem(refused, 429, 'RATE_LIMITED');
      expect(Number(refused.headers.get('retry-after'))).to.be.greaterThan(0);
      expect(refused.body.detail).to.match(/registrations from this address/);
      // Logging in from the same address draws on another bucket.
      expect((await limited.anonymous.post('/auth/login', { username: 'admin', password: limited.config.adminPassword })).status).to.equal(200);
    } finally {
      await limited.close();
    }
  });

  it('lets exactly one of many racing registrations of one username through', async () => {
    const username = unique('race');
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) =>
      api.anonymous.post('/auth/register', { username: i % 2 ? username : username.toUpperCase(), password: `${PASSWORD} ${i}` })));
    expect(answers.map((a) => a.status).sort()).to.deep.equal([201, 409, 409, 409, 409, 409]);
    const users = await api.admin.get('/users?limit=500');
    expect(users.body.items.filter((u: { username: string }) => u.username.toLowerCase() === username)).to.have.length(1);
  });

  it('takes over a reservation left behind by a registration that never finished, once it is old', async () => {
    const store = api.running.kernel.store;
    const reserve = async (username: string, reservedAt: string) => store.append(`username-${username}`, [{
      id: randomUUID(), type: 'UsernameReserved', data: { username, userId: randomUUID(), reservedAt },
      metadata: { occurred_at: reservedAt, schema_version: 1 },
    }], { expectedRevision: 'no_stream' });
    const old = unique('ghost');
    await reserve(old, new Date(Date.now() - 3_600_000).toISOString());
    const fresh = unique('inflight');
    await reserve(fresh, new Date().toISOString());
    const taken = await api.anonymous.post('/auth/register', { username: old, password: PASSWORD });
    expect(taken.status, taken.text).to.equal(201);
    expectProblem(await api.anonymous.post('/auth/register', { username: fresh, password: PASSWORD }), 409, 'USERNAME_EXISTS');
  });

  it('validates the request: username pattern, password policy, unknown fields', async () => {
    const r = await api.anonymous.post('/auth/register', { username: 'a b', password: 'short', role: 'admin' });
    expectProblem(r, 400, 'VALIDATION_FAILED');
    expect(r.body.errors.map((e: { path: string }) => e.path).sort()).to.deep.equal(['body.role', 'body.username']);
    expectProblem(await api.anonymous.post('/auth/register', { username: unique('ok'), password: 'short' }), 400, 'VALIDATION_FAILED');
  });
});

describe('rate limits over HTTP', function () {
  this.timeout(60_000);
  let api: TestApi;
  before(async () => {
    api = await startApi({
      server: { loginLimits: { perUser: { ratePerSecond: 0.01, burst: 3 }, perIp: { ratePerSecond: 1000, burst: 1000 } } },
    });
  });
  after(async () => api?.close());

  it('limits login attempts per address and username, with Retry-After', async () => {
    const user = await api.createUser();
    const statuses = [];
    // createUser logged in once already: two more attempts, then the bucket of 3 is empty.
    for (let i = 0; i < 3; i++) statuses.push(await api.anonymous.post('/auth/login', { username: user.username, password: `wrong ${i}` }));
    expect(statuses.map((s) => s.status)).to.deep.equal([401, 401, 429]);
    const limited = statuses[2]!;
    expectProblem(limited, 429, 'RATE_LIMITED');
    expect(Number(limited.headers.get('retry-after'))).to.be.greaterThan(0);
    // Even the right password waits; another username does not.
    expectProblem(await api.anonymous.post('/auth/login', { username: user.username, password: user.password }), 429);
    expect((await api.anonymous.post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD })).status).to.equal(200);
  });

  it('puts X-RateLimit-* on API responses and limits a user by their own settings', async () => {
    const username = unique('slow');
    expect((await api.admin.post('/users', { username, password: PASSWORD, rate_limit_per_second: 1, rate_limit_burst: 5 })).status).to.equal(201);
    const user = { client: api.as(await api.login(username)) };
    const r = await user.client.get('/auth/me');
    expect(r.headers.get('x-ratelimit-limit')).to.equal('5');
    expect(Number(r.headers.get('x-ratelimit-remaining'))).to.be.within(0, 4);
    expect(Number(r.headers.get('x-ratelimit-reset'))).to.be.at.least(Math.floor(Date.now() / 1000));
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await user.client.get('/auth/me'));
    const limited = answers.find((a) => a.status === 429);
    expect(limited, 'the burst of 5 ran out').to.not.equal(undefined);
    expectProblem(limited!, 429, 'RATE_LIMITED');
    // The admin's limits are the admin defaults, not the user's.
    expect((await api.admin.get('/auth/me')).headers.get('x-ratelimit-limit')).to.equal('100000');
    // A problem response carries the headers too.
    expect((await api.admin.get('/nope')).headers.get('x-ratelimit-limit')).to.equal('100000');
  });
});

describe('rate limits shared through Redis by two instances (REDIS_URL)', function () {
  this.timeout(60_000);
  let redis: RedisServer;
  let a: TestApi;
  let b: TestApi;
  before(async () => {
    redis = await startRedisServer();
    const env = { DATABASE_URL: await freshDatabaseUrl(), REDIS_URL: redis.url, SECRET_KEY: 's'.repeat(40), SECRETS_KEY: 'k'.repeat(40) };
    const server = { loginLimits: { perUser: { ratePerSecond: 0.01, burst: 4 }, perIp: { ratePerSecond: 1000, burst: 1000 } } };
    a = await startApi({ flavour: 'postgres', env, server });
    b = await startApi({ flavour: 'postgres', env, server });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    redis?.stop();
  });

  it('reports Redis in /health/ready and counts login attempts on either instance in one bucket', async () => {
    const ready = await a.anonymous.get('//health/ready');
    expect(ready.status, ready.text).to.equal(200);
    expect(ready.body.checks.redis.status).to.equal('ok');
    const username = unique('target');
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await (i % 2 ? a : b).anonymous.post('/auth/login', { username, password: 'guess' })).status);
    expect(statuses).to.deep.equal([401, 401, 401, 401, 429, 429]);
  });
});
