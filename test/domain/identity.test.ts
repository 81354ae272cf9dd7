import type { IdentityEvent } from '../../domain/identity.ts';
import { identityDecider } from '../../domain/identity.ts';
import { deciderSpec } from '../support/deciderSpec.ts';

const given = deciderSpec(identityDecider);
const userId = '11111111-1111-4111-8111-111111111111';
const tokenId = '22222222-2222-4222-8222-222222222222';
const registered: IdentityEvent = { type: 'UserRegistered', data: {
  userId, username: 'alice', email: 'a@example.test', role: 'user', passwordRef: 'v-1', rateLimitPerSecond: null, rateLimitBurst: null, via: 'admin',
} };
const token = { userId, tokenId, name: 'ci', tokenHash: 'ab'.repeat(32), prefix: 'opl_abcd', scopes: null, project: null, expiresAt: null };
const now = '2026-11-23T00:00:00.000Z';

describe('identity decider', () => {
  describe('when the user does not exist', () => {
    it('registers', () => given([]).when({ type: 'RegisterUser', data: registered.data as never }).then([registered]));
    it('refuses to deactivate', () => given([]).when({ type: 'DeactivateUser', data: { userId } }).thenThrows('USER_NOT_FOUND'));
  });
  describe('when the user is active', () => {
    it('refuses a second registration', () => given([registered]).when({ type: 'RegisterUser', data: registered.data as never }).thenThrows('USER_EXISTS'));
    it('ends older sessions on a password change', () =>
      given([registered]).when({ type: 'ChangePassword', data: { userId, passwordRef: 'v-2' } })
        .then([{ type: 'UserPasswordChanged', data: { userId, passwordRef: 'v-2', sessionVersion: 1 } }]));
    it('deactivates with a new session version, once', () =>
      given([registered]).when({ type: 'DeactivateUser', data: { userId } }).then([{ type: 'UserDeactivated', data: { userId, sessionVersion: 1 } }]));
    it('issues a token', () => given([registered]).when({ type: 'IssueApiToken', data: token, metadata: { now } }).then([{ type: 'ApiTokenIssued', data: token }]));
    it('refuses a token that expires in the past', () =>
      given([registered]).when({ type: 'IssueApiToken', data: { ...token, expiresAt: '2020-01-01T00:00:00.000Z' }, metadata: { now } }).thenThrows('VALIDATION_FAILED'));
    it('decides nothing for an empty update', () => given([registered]).when({ type: 'UpdateUser', data: { userId } }).then([]));
  });
  describe('when the user was deactivated', () => {
    const deactivated: IdentityEvent = { type: 'UserDeactivated', data: { userId, sessionVersion: 1 } };
    it('refuses new tokens', () => given([registered, deactivated]).when({ type: 'IssueApiToken', data: token, metadata: { now } }).thenThrows('USER_INACTIVE'));
    it('does nothing on a second deactivation', () => given([registered, deactivated]).when({ type: 'DeactivateUser', data: { userId } }).then([]));
  });
  describe('when a token exists', () => {
    const issued: IdentityEvent = { type: 'ApiTokenIssued', data: token };
    it('revokes it once', () =>
      given([registered, issued]).when({ type: 'RevokeApiToken', data: { userId, tokenId } }).then([{ type: 'ApiTokenRevoked', data: { userId, tokenId } }]));
    it('treats a second revocation as done', () =>
      given([registered, issued, { type: 'ApiTokenRevoked', data: { userId, tokenId } }]).when({ type: 'RevokeApiToken', data: { userId, tokenId } }).then([]));
    it('revokes its live tokens when the user is deactivated (reactivation must not bring them back)', () => {
      const second = { ...token, tokenId: '00000000-0000-4000-8000-0000000000b2' };
      given([registered, issued, { type: 'ApiTokenIssued', data: second }, { type: 'ApiTokenRevoked', data: { userId, tokenId } }])
        .when({ type: 'DeactivateUser', data: { userId } })
        .then([
          { type: 'UserDeactivated', data: { userId, sessionVersion: 1 } },
          { type: 'ApiTokenRevoked', data: { userId, tokenId: second.tokenId } },
        ]);
    });
    it('refuses to revoke an unknown token', () =>
      given([registered]).when({ type: 'RevokeApiToken', data: { userId, tokenId } }).thenThrows('TOKEN_NOT_FOUND'));
  });
});
