// Users and their API tokens: one stream per user (`user-<id>`). Pure: ids, times,
// password references and token hashes arrive in the commands. Secrets never enter an
// event: the password hash lives in the vault (`passwordRef` points at it) and a token
// is represented only by the SHA-256 of it.
import { DomainError } from './domainError.ts';
import type { Decider } from './decider.ts';

export type UserRole = 'admin' | 'user';
export type RateLimits = { ratePerSecond: number | null; burst: number | null };

export type UserRegistered = { type: 'UserRegistered'; data: {
  userId: string; username: string; email: string | null; role: UserRole; passwordRef: string;
  rateLimitPerSecond: number | null; rateLimitBurst: number | null; via: 'bootstrap' | 'admin' | 'registration' | 'cli';
} };
export type UserUpdated = { type: 'UserUpdated'; data: {
  userId: string; email?: string | null; role?: UserRole; rateLimitPerSecond?: number | null; rateLimitBurst?: number | null;
} };
export type UserPasswordChanged = { type: 'UserPasswordChanged'; data: { userId: string; passwordRef: string; sessionVersion: number } };
export type UserDeactivated = { type: 'UserDeactivated'; data: { userId: string; sessionVersion: number } };
export type UserReactivated = { type: 'UserReactivated'; data: { userId: string } };
export type ApiTokenIssued = { type: 'ApiTokenIssued'; data: {
  userId: string; tokenId: string; name: string; tokenHash: string; prefix: string;
  scopes: string[] | null; project: string | null; expiresAt: string | null;
} };
export type ApiTokenRevoked = { type: 'ApiTokenRevoked'; data: { userId: string; tokenId: string } };

export type IdentityEvent =
  | UserRegistered | UserUpdated | UserPasswordChanged | UserDeactivated | UserReactivated | ApiTokenIssued | ApiTokenRevoked;

export type RegisterUser = { type: 'RegisterUser'; data: UserRegistered['data'] };
export type UpdateUser = { type: 'UpdateUser'; data: UserUpdated['data'] };
export type ChangePassword = { type: 'ChangePassword'; data: { userId: string; passwordRef: string } };
export type DeactivateUser = { type: 'DeactivateUser'; data: { userId: string } };
export type ReactivateUser = { type: 'ReactivateUser'; data: { userId: string } };
export type IssueApiToken = { type: 'IssueApiToken'; data: ApiTokenIssued['data']; metadata: { now: string } };
export type RevokeApiToken = { type: 'RevokeApiToken'; data: { userId: string; tokenId: string } };
export type IdentityCommand = RegisterUser | UpdateUser | ChangePassword | DeactivateUser | ReactivateUser | IssueApiToken | RevokeApiToken;

export type TokenState = { name: string; revoked: boolean; expiresAt: string | null };
export type User =
  | { status: 'none' }
  | { status: 'active' | 'inactive'; userId: string; username: string; role: UserRole; sessionVersion: number; tokens: Record<string, TokenState> };

export const userStream = (userId: string): string => `user-${userId}`;

export const MAX_ACTIVE_TOKENS = 100;

const existing = (state: User, userId: string): Exclude<User, { status: 'none' }> => {
  if (state.status === 'none') throw new DomainError('USER_NOT_FOUND', `user ${userId} does not exist`);
  return state;
};

export const identityDecider: Decider<User, IdentityCommand, IdentityEvent> = {
  initialState: () => ({ status: 'none' }),

  evolve(state, event) {
    switch (event.type) {
      case 'UserRegistered':
        return { status: 'active', userId: event.data.userId, username: event.data.username, role: event.data.role, sessionVersion: 0, tokens: {} };
      case 'UserUpdated':
        return state.status === 'none' ? state : { ...state, role: event.data.role ?? state.role };
      case 'UserPasswordChanged':
        return state.status === 'none' ? state : { ...state, sessionVersion: event.data.sessionVersion };
      case 'UserDeactivated':
        return state.status === 'none' ? state : { ...state, status: 'inactive', sessionVersion: event.data.sessionVersion };
      case 'UserReactivated':
        return state.status === 'none' ? state : { ...state, status: 'active' };
      case 'ApiTokenIssued':
        return state.status === 'none' ? state : {
          ...state, tokens: { ...state.tokens, [event.data.tokenId]: { name: event.data.name, revoked: false, expiresAt: event.data.expiresAt } },
        };
      case 'ApiTokenRevoked': {
        if (state.status === 'none' || !state.tokens[event.data.tokenId]) return state;
        return { ...state, tokens: { ...state.tokens, [event.data.tokenId]: { ...state.tokens[event.data.tokenId]!, revoked: true } } };
      }
      default: { const _never: never = event; return _never; }
    }
  },

  decide(command, state) {
    switch (command.type) {
      case 'RegisterUser':
        if (state.status !== 'none') throw new DomainError('USER_EXISTS', `user ${command.data.userId} exists`);
        return [{ type: 'UserRegistered', data: command.data }];
      case 'UpdateUser': {
        const user = existing(state, command.data.userId);
        const { userId, ...changes } = command.data;
        if (Object.keys(changes).length === 0) return [];
        return [{ type: 'UserUpdated', data: { userId: user.userId, ...changes } }];
      }
      case 'ChangePassword': {
        const user = existing(state, command.data.userId);
        // A new password ends every session issued before it.
        return [{ type: 'UserPasswordChanged', data: { ...command.data, sessionVersion: user.sessionVersion + 1 } }];
      }
      case 'DeactivateUser': {
        const user = existing(state, command.data.userId);
        if (user.status === 'inactive') return [];
        // Its tokens are revoked, not just suspended: reactivating a user whose tokens leaked
        // must not bring them back.
        const revoked: IdentityEvent[] = Object.entries(user.tokens)
          .filter(([, t]) => !t.revoked)
          .map(([tokenId]) => ({ type: 'ApiTokenRevoked', data: { userId: user.userId, tokenId } }));
        return [{ type: 'UserDeactivated', data: { userId: user.userId, sessionVersion: user.sessionVersion + 1 } }, ...revoked];
      }
      case 'ReactivateUser': {
        const user = existing(state, command.data.userId);
        return user.status === 'active' ? [] : [{ type: 'UserReactivated', data: { userId: user.userId } }];
      }
      case 'IssueApiToken': {
        const user = existing(state, command.data.userId);
        if (user.status !== 'active') throw new DomainError('USER_INACTIVE', 'a deactivated user cannot get tokens');
        if (user.tokens[command.data.tokenId]) throw new DomainError('TOKEN_EXISTS', `token ${command.data.tokenId} exists`);
        if (command.data.expiresAt !== null && Date.parse(command.data.expiresAt) <= Date.parse(command.metadata.now)) {
          throw new DomainError('VALIDATION_FAILED', 'expires_at must be in the future');
        }
        const live = Object.values(user.tokens).filter((t) => !t.revoked && (t.expiresAt === null || Date.parse(t.expiresAt) > Date.parse(command.metadata.now)));
        if (live.length >= MAX_ACTIVE_TOKENS) throw new DomainError('TOO_MANY_TOKENS', `at most ${MAX_ACTIVE_TOKENS} active tokens per user`);
        return [{ type: 'ApiTokenIssued', data: command.data }];
      }
      case 'RevokeApiToken': {
        const user = existing(state, command.data.userId);
        const token = user.tokens[command.data.tokenId];
        if (!token) throw new DomainError('TOKEN_NOT_FOUND', `token ${command.data.tokenId} does not exist`);
        return token.revoked ? [] : [{ type: 'ApiTokenRevoked', data: command.data }];
      }
      default: { const _never: never = command; return _never; }
    }
  },
};
