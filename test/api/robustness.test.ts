// A flood of bad input against every identity and project endpoint: wrong types, missing
// and unknown fields, bad JSON, oversized bodies, path traversal, odd query strings and
// headers. Never a 5xx; every error a problem+json with a code.
import { expect } from 'chai';
import { API, expectProblem, startApi, unique, type Answer, type HttpMethod, type TestApi } from '../support/apiClient.ts';

type Probe = { method: HttpMethod; path: string; json?: unknown; raw?: string | Uint8Array; headers?: Record<string, string>; as?: 'admin' | 'anonymous' };

const NASTY_VALUES: unknown[] = [
  1, -1, 1.5, 1e300, true, null, [], {}, '', ' ', 'x'.repeat(20_000), '\u0000', '../../etc/passwd', '..%2Fetc', '{"$ne":1}',
  "'; drop table users; --", '<script>alert(1)</script>', '\ud800', 'ÄÖÜ🙂', ['nodes:read', 1], { nested: { deeper: [1] } },
];

/** Every field wrong in every way, each field missing, an unknown field, and bodies that are not objects. */
const mutations = (template: Record<string, unknown>): unknown[] => [
  ...Object.keys(template).flatMap((k) => NASTY_VALUES.map((v) => ({ ...template, [k]: v }))),
  ...Object.keys(template).map((k) => Object.fromEntries(Object.entries(template).filter(([key]) => key !== k))),
  { ...template, unknown_field: 1 },
  JSON.parse(`{"__proto__": {"admin": true}, ${JSON.stringify(template).slice(1)}`),
  { ...template, constructor: { prototype: { admin: true } } },
  null, [], 'string', 42, true, [template],
];

const RAW_BODIES = ['{', '{"username":', 'nul', '{"a":1}}', '\u0000', '[' .repeat(200_000), `{"a":"${'\\u'}"}`, '{"a": NaN}', '{"a": 1e999999}'];

describe('API robustness: bad input never gives a 5xx', function () {
  this.timeout(120_000);
  let api: TestApi;
  let victimId: string;
  let slug: string;

  before(async () => {
    api = await startApi();
    victimId = (await api.createUser()).id;
    slug = unique('fuzz');
    expect((await api.admin.post('/projects', { slug, display_name: 'Fuzz' })).status).to.equal(201);
  });
  after(async () => api?.close());

  const send = async (p: Probe): Promise<Answer> => {
    const client = p.as === 'anonymous' ? api.anonymous : api.admin;
    if (p.raw !== undefined) return client.call(p.method, p.path, { body: p.raw, headers: { 'content-type': 'application/json', ...p.headers } });
    return client.call(p.method, p.path, { ...(p.json !== undefined ? { json: p.json } : {}), ...(p.headers ? { headers: p.headers } : {}) });
  };

  /** Sends the probes a few at a time and checks every answer. */
  const flood = async (probes: Probe[]) => {
    const failures: string[] = [];
    for (let i = 0; i < probes.length; i += 8) {
      await Promise.all(probes.slice(i, i + 8).map(async (p) => {
        const r = await send(p);
        const what = `${p.method} ${p.path} ${p.raw !== undefined ? `raw ${String(p.raw).slice(0, 40)}` : JSON.stringify(p.json ?? null).slice(0, 80)}`;
        if (r.status >= 500) failures.push(`${what} → ${r.status} ${r.text.slice(0, 200)}`);
        else if (r.status >= 400) {
          try {
            expectProblem(r);
          } catch (err) {
            failures.push(`${what} → ${r.status} not a problem+json with a code: ${(err as Error).message}`);
          }
        }
      }));
    }
    expect(failures, failures.join('\n')).to.deep.equal([]);
    return probes.length;
  };

  const bodies = (): Array<{ method: HttpMethod; path: string; template: Record<string, unknown> }> => [
    { method: 'POST', path: '/auth/login', template: { username: 'admin', password: 'wrong password' } },
    { method: 'POST', path: '/auth/register', template: { username: unique('r'), password: 'long enough password', email: 'a@b.test' } },
    { method: 'PATCH', path: '/auth/me', template: { email: 'a@b.test', password: 'another long password', current_password: 'not it at all' } },
    { method: 'POST', path: '/auth/tokens', template: { name: 'n', scopes: ['nodes:read'], project: slug, expires_at: '2099-01-01T00:00:00Z' } },
    { method: 'POST', path: '/users', template: { username: unique('u'), password: 'long enough password', email: 'a@b.test', role: 'user', rate_limit_per_second: 5, rate_limit_burst: 5 } },
    { method: 'PATCH', path: `/users/${victimId}`, template: { email: 'v@b.test', role: 'user', active: true, rate_limit_per_second: 3, rate_limit_burst: 3 } },
    { method: 'POST', path: '/projects', template: { slug: unique('p'), display_name: 'P', billing_account: null } },
    { method: 'PATCH', path: `/projects/${slug}`, template: { display_name: 'P', billing_account: null } },
    { method: 'PUT', path: `/projects/${slug}/members/${victimId}`, template: { role: 'viewer' } },
  ];

  it('survives wrong types, missing and unknown fields, and bodies that are not objects', async () => {
    const probes: Probe[] = bodies().flatMap(({ method, path, template }) => mutations(template).map((json) => ({ method, path, json })));
    expect(await flood(probes)).to.be.greaterThan(500);
    // The fuzzing left the admin's own account usable.
    expect((await api.admin.get('/auth/me')).status).to.equal(200);
  });

  it('answers bad JSON with 400 BAD_JSON, bodies over 1 MiB with 413, other media types with 415', async () => {
    const probes: Probe[] = bodies().flatMap(({ method, path }) => RAW_BODIES.map((raw) => ({ method, path, raw })));
    await flood(probes);
    expectProblem(await send({ method: 'POST', path: '/projects', raw: '{' }), 400, 'BAD_JSON');
    const big = JSON.stringify({ slug: 'big', display_name: 'x'.repeat(1024 * 1024) });
    expectProblem(await send({ method: 'POST', path: '/projects', raw: big }), 413, 'PAYLOAD_TOO_LARGE');
    expectProblem(await send({ method: 'POST', path: '/auth/login', raw: big, as: 'anonymous' }), 413, 'PAYLOAD_TOO_LARGE');
    expectProblem(await send({ method: 'POST', path: '/auth/login', raw: 'x'.repeat(5 * 1024 * 1024), as: 'anonymous' }), 413);
    expectProblem(await api.admin.call('POST', '/projects', { body: 'slug=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    expectProblem(await api.admin.call('POST', '/projects', { body: Buffer.from([0xff, 0xfe, 0x7b]), headers: { 'content-type': 'application/json' } }), 400);
    expectProblem(await api.admin.call('POST', '/projects', { body: '{}', headers: { 'content-type': 'application/json; charset=latin1' } }), 415);
  });

  it('refuses path traversal, bad ids and malformed paths without a 5xx', async () => {
    const segments = ['..%2Fetc', '..%2F..%2Fetc%2Fpasswd', '%2e%2e', '..', '%00', '%', '%E0%A4%A', 'UPPER', '-dash', 'a'.repeat(64), 'a'.repeat(5000),
      'not-a-uuid', `${victimId.toUpperCase()}`, "1'%20OR%20'1'%3D'1", '%F0%9F%99%82', '.', 'default%2F..', ' ', '%20'];
    const probes: Probe[] = segments.flatMap((s) => [
      { method: 'GET', path: `/projects/${s}` }, { method: 'PATCH', path: `/projects/${s}`, json: { display_name: 'x' } },
      { method: 'DELETE', path: `/projects/${s}` }, { method: 'GET', path: `/projects/${s}/members` },
      { method: 'PUT', path: `/projects/${slug}/members/${s}`, json: { role: 'viewer' } }, { method: 'DELETE', path: `/projects/${s}/members/${s}` },
      { method: 'GET', path: `/users/${s}` }, { method: 'PATCH', path: `/users/${s}`, json: { email: null } }, { method: 'DELETE', path: `/users/${s}` },
      { method: 'DELETE', path: `/auth/tokens/${s}` }, { method: 'GET', path: `/projects/${s}`, as: 'anonymous' },
    ] satisfies Probe[]);
    await flood(probes);
    const traversal = await api.admin.get('/projects/..%2Fetc');
    expectProblem(traversal, 400, 'VALIDATION_FAILED');
    expect((await api.admin.get(`/users/${victimId.toUpperCase()}`)).status).to.equal(200); // ids are case-insensitive UUIDs
  });

  it('refuses odd query strings and headers without a 5xx', async () => {
    const queries = ['limit=-1', 'limit=abc', 'limit=1e3', 'limit=0', 'limit=501', 'offset=-5', 'offset=1e20', 'limit=1&limit=2', 'limit[]=1',
      'active=maybe', 'role=root', '__proto__=x', 'constructor=y', '%=%', 'limit=%00', `q=${'x'.repeat(5000)}`];
    const probes: Probe[] = queries.flatMap((q) => ['/users', '/projects', '/auth/tokens', `/projects/${slug}/members`, '/auth/me']
      .map((path) => ({ method: 'GET' as const, path: `${path}?${q}` })));
    const headers: Record<string, string>[] = [
      { 'if-match': 'garbage' }, { 'if-match': '"1", "2"' }, { 'if-match': `"${'9'.repeat(40)}"` }, { 'if-match': 'W/"-1"' },
      { 'idempotency-key': 'x'.repeat(300) }, { 'idempotency-key': ' ' },
      { authorization: 'Bearer' }, { authorization: 'Bearer a b' }, { authorization: `Bearer ${'x'.repeat(5000)}` }, { authorization: 'Token abc' },
      { 'x-request-id': 'bad id with spaces' },
    ];
    for (const h of headers) {
      probes.push({ method: 'PATCH', path: `/projects/${slug}`, json: { display_name: 'H' }, headers: h });
      probes.push({ method: 'POST', path: '/projects', json: { slug: unique('h'), display_name: 'H' }, headers: h });
      probes.push({ method: 'DELETE', path: `/users/${victimId}`, headers: h });
    }
    await flood(probes);
    const r = await api.admin.call('GET', '/projects', { headers: { 'x-request-id': 'bad id with spaces' } });
    expect(r.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
    expect(api.logText()).to.not.include('"level":50'); // nothing reached the error log as unexpected
  });

  it('answers an unknown endpoint or method with a problem', async () => {
    for (const [method, path] of [['GET', '/nope'], ['PUT', '/projects'], ['DELETE', '/auth/login'], ['PATCH', '/auth/tokens']] as const) {
      const r = await api.admin.call(method, path);
      expect(r.status).to.be.oneOf([404, 405]);
      expectProblem(r);
    }
    const outside = await api.admin.call('GET', `//${API.slice(1)}/../../etc/passwd`);
    expect(outside.status).to.be.below(500);
  });
});
