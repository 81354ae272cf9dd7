// The running app for end-to-end API tests: startServer in-process on 127.0.0.1 with a
// fresh database (PGlite from a dump, or a database on the throwaway PostgreSQL server),
// a fetch-based client, and the table-driven permission walk of test/api/permissions.test.ts
// (DESIGN §6: every endpoint with every role) that later modules extend by appending rows.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { startServer, type RunningServer, type ServerOptions } from '../../bin/app.ts';
import { loadConfig, type Config } from '../../infra/config.ts';
import { createLogger } from '../../infra/logger.ts';
import { freshDatabase, freshDatabaseUrl, type Flavour } from './databases.ts';
import { freePort } from './postgresServer.ts';

export const API = '/api/v1';
export const ADMIN_PASSWORD = 'first-admin-password';
/** A password every test user gets unless a test says otherwise. */
export const PASSWORD = 'correct horse battery staple';

export type Answer = { status: number; headers: Headers; body: any; text: string };
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type CallOptions = { json?: unknown; body?: string | Uint8Array; headers?: Record<string, string> };

/** fetch against the API (paths are relative to /api/v1 unless they start with `//`), reading the body as text and JSON. */
export const call = async (baseUrl: string, token: string | null, method: HttpMethod, path: string, opts: CallOptions = {}): Promise<Answer> => {
  const headers = new Headers(opts.headers);
  if (token !== null && !headers.has('authorization')) headers.set('authorization', `Bearer ${token}`);
  let body: string | Uint8Array | undefined = opts.body;
  if (opts.json !== undefined) {
    if (!headers.has('content-type')) headers.set('content-type', 'application/json');
    body = JSON.stringify(opts.json);
  }
  const url = path.startsWith('//') ? `${baseUrl}${path.slice(1)}` : `${baseUrl}${API}${path}`;
  const res = await fetch(url, { method, headers, body: body as BodyInit | undefined });
  const text = await res.text();
  const type = res.headers.get('content-type') ?? '';
  let parsed: unknown;
  if (/json/.test(type) && text) parsed = JSON.parse(text);
  return { status: res.status, headers: res.headers, body: parsed, text };
};

export type Client = {
  readonly token: string | null;
  call(method: HttpMethod, path: string, opts?: CallOptions): Promise<Answer>;
  get(path: string, opts?: CallOptions): Promise<Answer>;
  post(path: string, json?: unknown, opts?: CallOptions): Promise<Answer>;
  put(path: string, json?: unknown, opts?: CallOptions): Promise<Answer>;
  patch(path: string, json?: unknown, opts?: CallOptions): Promise<Answer>;
  delete(path: string, opts?: CallOptions): Promise<Answer>;
};

export const clientFor = (baseUrl: string, token: string | null): Client => {
  const withJson = (method: HttpMethod) => (path: string, json?: unknown, opts: CallOptions = {}) =>
    call(baseUrl, token, method, path, json === undefined ? opts : { ...opts, json });
  return {
    token,
    call: (method, path, opts) => call(baseUrl, token, method, path, opts),
    get: (path, opts) => call(baseUrl, token, 'GET', path, opts),
    post: withJson('POST'),
    put: withJson('PUT'),
    patch: withJson('PATCH'),
    delete: (path, opts) => call(baseUrl, token, 'DELETE', path, opts),
  };
};

/** Asserts an RFC 9457 problem with a stable code (and the status, when given). */
export const expectProblem = (r: Answer, status?: number, code?: string): void => {
  if (status !== undefined) expect(r.status, r.text).to.equal(status);
  expect(r.headers.get('content-type'), r.text).to.match(/^application\/problem\+json/);
  expect(r.body.code, r.text).to.match(/^[A-Z][A-Z0-9_]*$/);
  expect(r.body.status).to.equal(r.status);
  expect(r.body).to.include.keys('type', 'title', 'detail', 'request_id');
  expect(r.text).not.to.match(/\n\s+at /); // no stack trace
  if (code !== undefined) expect(r.body.code, r.text).to.equal(code);
};

export type TestApi = {
  url: string;
  config: Config;
  running: RunningServer;
  /** Every log line the server wrote. */
  logText(): string;
  /** What the first start printed (the generated admin password, when ADMIN_PASSWORD is unset). */
  printed: string[];
  /** A session token of the bootstrap admin. */
  adminToken: string;
  admin: Client;
  anonymous: Client;
  as(token: string | null): Client;
  login(username: string, password?: string): Promise<string>;
  /** Creates a user through POST /users (as the admin) and logs them in. */
  createUser(opts?: { username?: string; password?: string; role?: 'admin' | 'user' }): Promise<TestUser>;
  close(): Promise<void>;
};

export type TestUser = { id: string; username: string; password: string; token: string; client: Client };

export type StartApiOptions = {
  flavour?: Flavour;
  /** Environment on top of the test defaults (e.g. ALLOW_REGISTRATION). */
  env?: Record<string, string | undefined>;
  server?: Omit<ServerOptions, 'database' | 'print'>;
  /** Log in as the admin after start (default true). */
  loginAdmin?: boolean;
};

/** Unique, slug-safe names for one test run. */
export const unique = (prefix: string): string => `${prefix}-${randomBytes(4).toString('hex')}`;

const HIGH_LIMIT = '100000';

/** Starts the whole app on 127.0.0.1 with a fresh database; close() stops it and removes its DATA_DIR. */
export const startApi = async (opts: StartApiOptions = {}): Promise<TestApi> => {
  const flavour = opts.flavour ?? 'pglite';
  const dataDir = mkdtempSync(join(tmpdir(), 'opsledger-api-'));
  const env: Record<string, string | undefined> = {
    HOST: '127.0.0.1',
    PORT: String(await freePort()),
    DATA_DIR: join(dataDir, 'data'),
    SECRET_KEY: randomBytes(32).toString('hex'),
    SECRETS_KEY: randomBytes(32).toString('hex'),
    ADMIN_PASSWORD,
    LOG_LEVEL: 'debug',
    // Tests make many requests quickly; rate limits get their own tests with low limits.
    DEFAULT_RATE_LIMIT_PER_SECOND: HIGH_LIMIT, DEFAULT_RATE_LIMIT_BURST: HIGH_LIMIT,
    ADMIN_RATE_LIMIT_PER_SECOND: HIGH_LIMIT, ADMIN_RATE_LIMIT_BURST: HIGH_LIMIT,
    ...(flavour === 'postgres' && !opts.env?.DATABASE_URL ? { DATABASE_URL: await freshDatabaseUrl() } : {}),
    ...opts.env,
  };
  const config = loadConfig(Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv);
  const lines: string[] = [];
  const logger = createLogger(config, new Writable({ write(chunk, _e, done) { lines.push(String(chunk)); done(); } }));
  const printed: string[] = [];
  const database = flavour === 'pglite' ? await freshDatabase('pglite') : undefined;
  const running = await startServer(config, logger, {
    ...(database ? { database } : {}),
    print: (text) => void printed.push(text),
    loginLimits: { perUser: { ratePerSecond: 1000, burst: 1000 }, perIp: { ratePerSecond: 1000, burst: 1000 } },
    ...opts.server,
  });
  const url = running.url;
  const as = (token: string | null) => clientFor(url, token);
  const login = async (username: string, password = PASSWORD) => {
    const r = await as(null).post('/auth/login', { username, password });
    expect(r.status, `login as ${username}: ${r.text}`).to.equal(200);
    return r.body.access_token as string;
  };
  const adminToken = opts.loginAdmin === false || config.adminPassword === undefined ? '' : await login('admin', config.adminPassword);
  const admin = as(adminToken);
  return {
    url, config, running, printed, adminToken, admin, anonymous: as(null), as, login,
    logText: () => lines.join(''),
    async createUser(o = {}) {
      const username = o.username ?? unique('user');
      const password = o.password ?? PASSWORD;
      const r = await admin.post('/users', { username, password, role: o.role ?? 'user' });
      expect(r.status, r.text).to.equal(201);
      const token = await login(username, password);
      return { id: r.body.id as string, username, password, token, client: as(token) };
    },
    async close() {
      await running.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
};

// ---- the permission table ------------------------------------------------------------

/** Who calls, in the column order of a row's `expect` tuple. */
export const CALLERS = ['anonymous', 'viewer', 'operator', 'projectAdmin', 'outsider', 'globalAdmin'] as const;
export type CallerName = (typeof CALLERS)[number];

/**
 * One endpoint: `{name}` placeholders in the path and in string values of the body are
 * filled in per call from the fixture (see `PermissionFixture.vars`); names starting with
 * `new` make a fresh resource for every call (so that a mutating row never changes what
 * the next caller sees). `expect`: statuses in CALLERS order, or per caller.
 */
export type PermissionRow = {
  method: HttpMethod;
  path: string;
  body?: unknown;
  expect: readonly [number, number, number, number, number, number] | Record<CallerName, number>;
  /** Shown in the test name instead of method + path. */
  name?: string;
};

export type PermissionFixture = {
  api: TestApi;
  users: Record<Exclude<CallerName, 'anonymous'>, TestUser>;
  clients: Record<CallerName, Client>;
  /** `project`: viewer, operator and projectAdmin are its viewer, operator and admin; `otherProject`: the outsider is its admin. */
  project: string;
  otherProject: string;
  /** Fixed placeholders: project, otherProject, viewerId, operatorId, projectAdminId, outsiderId, globalAdminId, nodeId, groupId, systemId, jobId, templateId, proxyName (in `project`), later (a time far ahead). */
  vars: Record<string, string>;
  /** Fresh per call: newProject (laid out like `project`), newSlug, newUsername, newUserId; newNodeId, newGroupId, newChannelId, newSystemId, newJobId, newTemplateId, newProxyName (in `project`). */
  generators: Record<string, () => Promise<string>>;
};

/** A project created by `admin`, with `viewer` and `operator` as members. */
const projectWith = async (admin: TestUser, members: { viewer?: TestUser; operator?: TestUser }, slug = unique('p')): Promise<string> => {
  const created = await admin.client.post('/projects', { slug, display_name: slug });
  expect(created.status, created.text).to.equal(201);
  for (const [role, user] of Object.entries(members)) {
    if (!user) continue;
    const r = await admin.client.put(`/projects/${slug}/members/${user.id}`, { role });
    expect(r.status, r.text).to.equal(201);
  }
  return slug;
};

export const permissionFixture = async (api: TestApi): Promise<PermissionFixture> => {
  const [viewer, operator, projectAdmin, outsider, globalAdmin] = await Promise.all([
    api.createUser({ username: unique('viewer') }),
    api.createUser({ username: unique('operator') }),
    api.createUser({ username: unique('padmin') }),
    api.createUser({ username: unique('outsider') }),
    api.createUser({ username: unique('gadmin'), role: 'admin' }),
  ]);
  const users = { viewer, operator, projectAdmin, outsider, globalAdmin };
  const project = await projectWith(projectAdmin, { viewer, operator });
  const otherProject = await projectWith(outsider, {});
  const clients = { anonymous: api.anonymous, viewer: viewer.client, operator: operator.client, projectAdmin: projectAdmin.client, outsider: outsider.client, globalAdmin: globalAdmin.client };
  const made = async (path: string, body: object) => {
    const r = await projectAdmin.client.post(path, body);
    expect(r.status, r.text).to.equal(201);
    return r.body.id as string;
  };
  const newNodeId = () => made('/nodes', { name: unique('node'), project, address: '127.0.0.1', check: { type: 'push', interval_s: 3600 } });
  const newGroupId = () => made('/groups', { name: 'group', project, min_online: 1, selector: { labels: {} } });
  // Port 1 answers nothing: a system that never runs anything; jobs far in the future stay pending.
  const newSystemId = () => made('/systems', { name: 'host', project, hostname: '127.0.0.1', port: 1, username: 'u', auth: { password: 'p' } });
  const systemId = await newSystemId();
  const LATER = '2999-01-01T00:00:00Z';
  const newJobId = () => made('/jobs', { command: 'true', project, system_ids: [systemId], schedule_at: LATER });
  const newTemplateId = () => made('/job-templates', { name: 'tpl', project, command: 'true', system_ids: [systemId] });
  // Proxies need the app to run with a test nginx (and a loopback ACME_DIRECTORY_URL).
  const newProxyName = async () => {
    const name = unique('px');
    const r = await projectAdmin.client.put(`/proxies/${name}`, { project, domain: `${name}.opl.test`, upstream_host: '127.0.0.1', upstream_port: 9, require_healthy: false });
    expect(r.status, r.text).to.equal(201);
    return name;
  };
  const vars: Record<string, string> = {
    project, otherProject, nodeId: await newNodeId(), groupId: await newGroupId(),
    systemId, jobId: await newJobId(), templateId: await newTemplateId(), later: LATER, proxyName: await newProxyName(),
    viewerId: viewer.id, operatorId: operator.id, projectAdminId: projectAdmin.id, outsiderId: outsider.id, globalAdminId: globalAdmin.id,
  };
  const generators: Record<string, () => Promise<string>> = {
    newProject: () => projectWith(projectAdmin, { viewer, operator }),
    newSlug: async () => unique('s'),
    newUsername: async () => unique('u'),
    newUserId: async () => (await api.createUser()).id,
    newNodeId, newGroupId, newSystemId, newJobId, newTemplateId, newProxyName,
    newChannelId: () => made('/alert-channels', { project, url: 'http://127.0.0.1:9/hook', events: ['node.down'] }),
  };
  return { api, users, clients, project, otherProject, vars, generators };
};

const PLACEHOLDER = /\{([A-Za-z][A-Za-z0-9]*)\}/g;

/** Fills the placeholders of a row for one call; a `new…` name used twice in a row means the same fresh value. */
export const resolveRow = async (row: PermissionRow, f: PermissionFixture): Promise<{ path: string; body: unknown }> => {
  const made = new Map<string, string>();
  const value = async (name: string): Promise<string> => {
    if (f.vars[name] !== undefined) return f.vars[name]!;
    if (made.has(name)) return made.get(name)!;
    const gen = f.generators[name];
    if (!gen) throw new Error(`permission table: unknown placeholder {${name}}`);
    const v = await gen();
    made.set(name, v);
    return v;
  };
  const fill = async (s: string): Promise<string> => {
    let out = s;
    for (const [, name] of [...s.matchAll(PLACEHOLDER)]) out = out.replace(`{${name}}`, await value(name!));
    return out;
  };
  const walk = async (v: unknown): Promise<unknown> => {
    if (typeof v === 'string') return fill(v);
    if (Array.isArray(v)) return Promise.all(v.map(walk));
    if (v && typeof v === 'object') return Object.fromEntries(await Promise.all(Object.entries(v).map(async ([k, x]) => [k, await walk(x)])));
    return v;
  };
  return { path: await fill(row.path), body: await walk(row.body) };
};

const expectedFor = (row: PermissionRow, caller: CallerName): number =>
  Array.isArray(row.expect) ? (row.expect as readonly number[])[CALLERS.indexOf(caller)]! : (row.expect as Record<CallerName, number>)[caller];

/**
 * Declares one mocha test per row and caller. `fixture` is called once (in a before hook)
 * and must return the fixture the rows run against.
 */
export const permissionTable = (rows: readonly PermissionRow[], fixture: () => PermissionFixture): void => {
  for (const row of rows) {
    describe(row.name ?? `${row.method} ${row.path}`, () => {
      for (const caller of CALLERS) {
        const status = expectedFor(row, caller);
        it(`${caller} → ${status}`, async () => {
          const f = fixture();
          const { path, body } = await resolveRow(row, f);
          const r = await f.clients[caller].call(row.method, path, body === undefined ? {} : { json: body });
          expect(r.status, `${caller} ${row.method} ${path}: ${r.text}`).to.equal(status);
          if (status >= 400) expectProblem(r);
        });
      }
    });
  }
};

export const randomId = (): string => randomUUID();
