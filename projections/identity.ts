// users + api_tokens read models from the identity events. Idempotent: user rows are
// guarded by stream revision, token rows by their id. users.revision is the revision of
// the whole user stream (token events included): it is the user's ETag, and If-Match
// hands it back to the command handler as the stream's expected revision.
import { sql } from 'kysely';
import type { IdentityEvent } from '../domain/identity.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import type { Projector } from './projector.ts';

export const IDENTITY_EVENT_TYPES: IdentityEvent['type'][] = [
  'UserRegistered', 'UserUpdated', 'UserPasswordChanged', 'UserDeactivated', 'UserReactivated', 'ApiTokenIssued', 'ApiTokenRevoked',
];

export const identityProjection: Projector = {
  name: 'identity',
  // 2: token events move users.revision too.
  version: 2,
  handles: IDENTITY_EVENT_TYPES,
  tables: ['users', 'api_tokens'],
  async apply(trx, events, emit) {
    for (const recorded of events) {
      const e = recorded as unknown as RecordedEvent & IdentityEvent;
      const at = recorded.createdAt;
      const revision = recorded.revision.toString();
      const userRow = (userId: string) => trx.updateTable('users').where('id', '=', userId).where('revision', '<', revision);
      switch (e.type) {
        case 'UserRegistered':
          await trx.insertInto('users').values({
            id: e.data.userId, username: e.data.username, email: e.data.email, role: e.data.role, active: true,
            rate_limit_per_second: e.data.rateLimitPerSecond, rate_limit_burst: e.data.rateLimitBurst,
            password_ref: e.data.passwordRef, session_version: 0, created_at: at, updated_at: at, revision,
          }).onConflict((oc) => oc.column('id').doNothing()).execute();
          break;
        case 'UserUpdated': {
          const { userId, email, role, rateLimitPerSecond, rateLimitBurst } = e.data;
          await userRow(userId).set({
            ...(email !== undefined ? { email } : {}),
            ...(role !== undefined ? { role } : {}),
            ...(rateLimitPerSecond !== undefined ? { rate_limit_per_second: rateLimitPerSecond } : {}),
            ...(rateLimitBurst !== undefined ? { rate_limit_burst: rateLimitBurst } : {}),
            updated_at: at, revision,
          }).execute();
          break;
        }
        case 'UserPasswordChanged':
          await userRow(e.data.userId).set({ password_ref: e.data.passwordRef, session_version: e.data.sessionVersion, updated_at: at, revision }).execute();
          break;
        case 'UserDeactivated':
          await userRow(e.data.userId).set({ active: false, session_version: e.data.sessionVersion, updated_at: at, revision }).execute();
          break;
        case 'UserReactivated':
          await userRow(e.data.userId).set({ active: true, updated_at: at, revision }).execute();
          break;
        case 'ApiTokenIssued':
          await trx.insertInto('api_tokens').values({
            id: e.data.tokenId, user_id: e.data.userId, name: e.data.name, token_hash: e.data.tokenHash, prefix: e.data.prefix,
            scopes: e.data.scopes === null ? null : JSON.stringify(e.data.scopes), project: e.data.project,
            expires_at: e.data.expiresAt, created_at: at,
          }).onConflict((oc) => oc.column('id').doNothing()).execute();
          await userRow(e.data.userId).set({ revision }).execute();
          break;
        case 'ApiTokenRevoked':
          await trx.updateTable('api_tokens').set({ revoked_at: sql`coalesce(revoked_at, ${at})` })
            .where('id', '=', e.data.tokenId).execute();
          await userRow(e.data.userId).set({ revision }).execute();
          break;
        default: { const _never: never = e; void _never; }
      }
      emit({ topic: 'users', kind: e.type, id: e.data.userId, position: recorded.position });
    }
  },
};
