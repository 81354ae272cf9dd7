import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { createCommandHandler } from '../../commands/handleCommand.ts';
import { identityEventSchemas, projectEventSchemas } from '../../commands/identitySchemas.ts';
import { identityDecider, userStream } from '../../domain/identity.ts';
import { projectDecider, projectStream } from '../../domain/projects.ts';
import type { Database } from '../../infra/db/database.ts';
import type { EventStore } from '../../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { identityProjection } from '../../projections/identity.ts';
import { createProjectionRuntime, type ProjectionRuntime } from '../../projections/projectionRuntime.ts';
import { projectsProjection } from '../../projections/projects.ts';
import { freshDatabase } from '../support/databases.ts';

const ctx = { actor: null, requestId: 'r' };

describe('identity and projects read models', () => {
  let database: Database;
  let store: EventStore;
  let runtime: ProjectionRuntime;
  const handle = () => createCommandHandler(store, { ...identityEventSchemas, ...projectEventSchemas });
  before(async () => {
    database = await freshDatabase('pglite');
    store = await createPostgresEventStore(database);
    runtime = createProjectionRuntime({ database, store, projectors: [identityProjection, projectsProjection] });
    await runtime.start();
  });
  after(async () => {
    await runtime.stop();
    await store.close();
    await database.close();
  });

  it('follows a user through registration, token, deactivation (which revokes the token)', async () => {
    const userId = randomUUID();
    const tokenId = randomUUID();
    const h = handle();
    await h(identityDecider, userStream(userId), { type: 'RegisterUser', data: {
      userId, username: 'Alice', email: 'alice@example.test', role: 'user', passwordRef: 'vault-1', rateLimitPerSecond: 5, rateLimitBurst: 10, via: 'admin',
    } }, ctx);
    await h(identityDecider, userStream(userId), { type: 'IssueApiToken', data: {
      userId, tokenId, name: 'ci', tokenHash: 'f'.repeat(64), prefix: 'opl_abcd', scopes: ['nodes:read'], project: 'default', expiresAt: null,
    }, metadata: { now: new Date().toISOString() } }, ctx);
    const last = await h(identityDecider, userStream(userId), { type: 'DeactivateUser', data: { userId } }, ctx);
    await runtime.whenCaughtUp(last.append!.position);
    const user = await database.db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirstOrThrow();
    // Deactivation revoked the token in the same append (revision 3: UserDeactivated, ApiTokenRevoked).
    expect(user).to.deep.include({ username: 'Alice', active: false, session_version: 1, rate_limit_per_second: 5, revision: '3' });
    const token = await database.db.selectFrom('api_tokens').selectAll().where('id', '=', tokenId).executeTakeFirstOrThrow();
    expect(token).to.deep.include({ user_id: userId, token_hash: 'f'.repeat(64), project: 'default' });
    expect(token.revoked_at).to.not.equal(null);
    expect(token.scopes).to.deep.equal(['nodes:read']);
  });

  it('refuses a malformed identity event before it reaches the log', async () => {
    const userId = randomUUID();
    try {
      await handle()(identityDecider, userStream(userId), { type: 'RegisterUser', data: {
        userId, username: 'bad name with spaces', email: null, role: 'user', passwordRef: 'v', rateLimitPerSecond: null, rateLimitBurst: null, via: 'admin',
      } }, ctx);
      expect.fail('should have thrown');
    } catch (err) {
      expect((err as { code: string }).code).to.equal('INVALID_EVENT');
    }
    expect(await store.streamRevision(userStream(userId))).to.equal(null);
  });

  it('keeps projects and their members, and drops members of a deleted project', async () => {
    const alice = randomUUID();
    const bob = randomUUID();
    const h = handle();
    await h(projectDecider, projectStream('web'), { type: 'CreateProject', data: { slug: 'web', displayName: 'Web', billingAccount: null, createdBy: alice } }, ctx);
    let r = await h(projectDecider, projectStream('web'), { type: 'SetMember', data: { slug: 'web', userId: bob, role: 'viewer' } }, ctx);
    await runtime.whenCaughtUp(r.append!.position);
    const members = await database.db.selectFrom('project_members').select(['user_id', 'role']).where('project', '=', 'web').orderBy('role').execute();
    expect(members).to.deep.equal([{ user_id: alice, role: 'admin' }, { user_id: bob, role: 'viewer' }]);
    r = await h(projectDecider, projectStream('web'), { type: 'DeleteProject', data: { slug: 'web' } }, ctx);
    await runtime.whenCaughtUp(r.append!.position);
    const project = await database.db.selectFrom('projects').selectAll().where('slug', '=', 'web').executeTakeFirstOrThrow();
    expect(project.deleted).to.equal(true);
    expect(await database.db.selectFrom('project_members').selectAll().where('project', '=', 'web').execute()).to.deep.equal([]);
  });
});
