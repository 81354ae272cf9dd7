// First start: the default project and the `admin` user, with a generated password printed
// once — idempotent across restarts and between instances starting together.
import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { sql } from 'kysely';
import { freshDatabaseUrl } from '../support/databases.ts';
import { startApi, type TestApi } from '../support/apiClient.ts';

const passwordIn = (printed: string[]): string => {
  expect(printed, 'one printout').to.have.length(1);
  const m = /created the first user "admin" \(global admin\) with the password\n\n {4}(\S+)\n/.exec(printed[0]!);
  expect(m, printed[0]).to.not.equal(null);
  return m![1]!;
};

describe('first start (PostgreSQL server)', function () {
  this.timeout(60_000);
  const started: TestApi[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((a) => a.close()));
  });

  const keys = () => ({ SECRET_KEY: randomBytes(32).toString('hex'), SECRETS_KEY: randomBytes(32).toString('hex') });

  it('creates admin with a generated password printed once (not logged), and nothing on the next start', async () => {
    const env = { DATABASE_URL: await freshDatabaseUrl(), ADMIN_PASSWORD: undefined, ...keys() };
    const first = await startApi({ flavour: 'postgres', env });
    started.push(first);
    const password = passwordIn(first.printed);
    expect(password).to.match(/^[A-Za-z0-9_-]{24}$/);
    const token = await first.login('admin', password);
    const me = await first.as(token).get('/auth/me');
    expect(me.body).to.include({ username: 'admin', role: 'admin' });
    expect((await first.as(token).get('/projects/default')).status).to.equal(200);
    expect(first.logText()).to.include('created the first user');
    expect(first.logText()).not.to.include(password);
    await first.close();
    started.pop();

    const second = await startApi({ flavour: 'postgres', env });
    started.push(second);
    expect(second.printed).to.deep.equal([]);
    expect((await second.as(await second.login('admin', password)).get('/users')).body.total).to.equal(1);
  });

  it('takes ADMIN_PASSWORD when set, printing nothing', async () => {
    const api = await startApi({ flavour: 'postgres', env: { ADMIN_PASSWORD: 'from-the-environment' } });
    started.push(api);
    expect(api.printed).to.deep.equal([]);
    expect((await api.as(await api.login('admin', 'from-the-environment')).get('/auth/me')).status).to.equal(200);
  });

  for (let round = 1; round <= 3; round++) it(`two instances starting together on one database create one admin and one default project (round ${round})`, async () => {
    const env = { DATABASE_URL: await freshDatabaseUrl(), ADMIN_PASSWORD: undefined, ...keys() };
    const [a, b] = await Promise.all([startApi({ flavour: 'postgres', env }), startApi({ flavour: 'postgres', env })]);
    started.push(a, b);
    const printed = [...a.printed, ...b.printed];
    const password = passwordIn(printed);
    const db = a.running.kernel.database.db;
    const { rows } = await sql<{ stream_id: string; n: number }>`select stream_id, count(*)::int as n from events group by stream_id order by stream_id`.execute(db);
    expect(rows.map((r) => `${r.stream_id.replace(/-[0-9a-f-]{36}$/, '-<id>')}:${r.n}`)).to.deep.equal(['project-default:1', 'user-<id>:1', 'username-admin:1']);
    // Either instance serves the one admin.
    for (const api of [a, b]) expect((await api.as(await api.login('admin', password)).get('/auth/me')).body.username).to.equal('admin');
  });
});
