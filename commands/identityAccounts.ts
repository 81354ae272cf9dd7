// Creating accounts, shared by registration, POST /users, the first-start admin and the
// `create-admin` CLI. A username is made unique by reserving the stream
// `username-<lower-cased name>` (expecting no stream) before the user's own stream is
// written; domain/usernames.ts explains how an orphaned reservation is recovered.
// The password's scrypt hash goes to the vault (owner `user-<id>`); the events carry only
// the vault id.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { identityDecider, userStream, type UserRole } from '../domain/identity.ts';
import { usernameDecider, usernameStream } from '../domain/usernames.ts';
import { DomainError } from '../domain/domainError.ts';
import { hashPassword, validatePasswordPolicy } from '../infra/auth/password.ts';
import type { Tables } from '../infra/db/tables.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { ValidationError } from '../infra/http/validate.ts';
import type { Vault } from '../infra/vault.ts';
import { createCommandHandler, type CommandContext, type CommandHandler, type CommandResult } from './handleCommand.ts';
import { identityEventSchemas } from './identitySchemas.ts';

export type AccountsDeps = {
  store: EventStore;
  vault: Vault;
  /** Defaults to a handler over the identity event schemas. */
  handle?: CommandHandler;
  now?: () => Date;
};

export type NewAccount = {
  username: string;
  password: string;
  email: string | null;
  role: UserRole;
  rateLimitPerSecond: number | null;
  rateLimitBurst: number | null;
  via: 'bootstrap' | 'admin' | 'registration' | 'cli';
};

type AnyResult = CommandResult<unknown, { type: string; data: Record<string, unknown> }>;

export const passwordOwner = (userId: string): string => `user-${userId}`;
export const PASSWORD_KIND = 'password';

const handlerOf = (deps: AccountsDeps): CommandHandler => deps.handle ?? createCommandHandler(deps.store, identityEventSchemas);

/** 400 naming `field` when the password breaks the policy. */
export const checkPasswordPolicy = (password: string, field = 'body.password'): void => {
  const why = validatePasswordPolicy(password);
  if (why) throw new ValidationError([{ path: field, message: why }]);
};

/** Hashes the password and keeps the hash in the vault; returns the vault id (the passwordRef). */
export const storePassword = async (vault: Vault, userId: string, password: string): Promise<string> =>
  vault.put(passwordOwner(userId), PASSWORD_KIND, await hashPassword(password));

const holderOf = async (store: EventStore, username: string): Promise<string | null> => {
  const last = (await store.readStream(usernameStream(username), { direction: 'backwards', maxCount: 1 })).at(0);
  const userId = (last?.data as { userId?: unknown } | undefined)?.userId;
  return typeof userId === 'string' ? userId : null;
};

/** Reserves the username for `userId`, or throws USERNAME_EXISTS (409). */
export const reserveUsername = async (deps: AccountsDeps, username: string, userId: string, ctx: CommandContext): Promise<AnyResult> => {
  const holder = await holderOf(deps.store, username);
  // A holder whose user stream was never written is an orphan; the decider decides whether it is old enough to take over.
  const orphanedHolder = holder && holder !== userId && (await deps.store.streamRevision(userStream(holder))) === null ? holder : null;
  const now = (deps.now?.() ?? new Date()).toISOString();
  return handlerOf(deps)(usernameDecider, usernameStream(username), {
    type: 'ReserveUsername', data: { username, userId }, metadata: { now, orphanedHolder },
  }, ctx) as Promise<AnyResult>;
};

/**
 * Creates an account: password policy, hash, reservation, vault, UserRegistered. Returns
 * the new user's id and the command results (for read-your-writes).
 */
export const registerUser = async (deps: AccountsDeps, account: NewAccount, ctx: CommandContext): Promise<{ userId: string; results: AnyResult[] }> => {
  checkPasswordPolicy(account.password);
  const userId = randomUUID();
  // Hash before reserving: the slow step stays outside the window between the two appends.
  const hash = await hashPassword(account.password);
  const reserved = await reserveUsername(deps, account.username, userId, ctx);
  const owner = passwordOwner(userId);
  const passwordRef = await deps.vault.put(owner, PASSWORD_KIND, hash);
  try {
    // Still ours? Only a reservation orphaned for ORPHAN_AFTER_MS can be taken over, so
    // this holds unless this very request stalled that long since reserving.
    if ((await holderOf(deps.store, account.username)) !== userId) throw new DomainError('USERNAME_EXISTS', `the username ${account.username} is taken`);
    const registered = await handlerOf(deps)(identityDecider, userStream(userId), {
      type: 'RegisterUser',
      data: {
        userId, username: account.username, email: account.email, role: account.role, passwordRef,
        rateLimitPerSecond: account.rateLimitPerSecond, rateLimitBurst: account.rateLimitBurst, via: account.via,
      },
    }, ctx) as AnyResult;
    return { userId, results: [reserved, registered] };
  } catch (err) {
    await deps.vault.deleteOwner(owner).catch(() => undefined);
    throw err;
  }
};

/** A password for a generated account: 24 characters of base64url (144 random bits). */
export const generatePassword = (): string => randomBytes(18).toString('base64url');

export const BOOTSTRAP_ADMIN = 'admin';

/** Whether any user was ever registered: the read model first, then (when it is empty) the log itself. */
const anyUserExists = async (store: EventStore, db: Kysely<Tables>): Promise<boolean> => {
  const row = await db.selectFrom('users').select('id').limit(1).executeTakeFirst();
  if (row) return true;
  // The read model may lag behind the log (a fresh rebuild, a standby instance): ask the log.
  let from;
  for (;;) {
    const page = await store.readAll({ from, maxCount: 100, filter: { eventTypes: ['UserRegistered'] } });
    if (page.events.length > 0) return true;
    if (page.caughtUp) return false;
    from = page.scannedTo;
  }
};

export type BootstrapResult =
  | { created: false; reason: 'users_exist' | 'lost_race' }
  | { created: true; userId: string; username: string; generatedPassword: string | null; results: AnyResult[] };

/**
 * On first start: when no user exists yet, creates `admin` (global admin) with
 * `password` or a generated one (returned once, for the caller to print). Safe across
 * restarts (users exist → nothing) and between instances starting together (the username
 * reservation lets exactly one of them create it).
 */
export const ensureBootstrapAdmin = async (
  deps: AccountsDeps & { db: Kysely<Tables> },
  opts: { password?: string | undefined },
): Promise<BootstrapResult> => {
  if (await anyUserExists(deps.store, deps.db)) return { created: false, reason: 'users_exist' };
  const password = opts.password ?? generatePassword();
  try {
    const { userId, results } = await registerUser(deps, {
      username: BOOTSTRAP_ADMIN, password, email: null, role: 'admin', rateLimitPerSecond: null, rateLimitBurst: null, via: 'bootstrap',
    }, { actor: null, requestId: null, ip: null, project: null });
    return { created: true, userId, username: BOOTSTRAP_ADMIN, generatedPassword: opts.password ? null : password, results };
  } catch (err) {
    if ((err as { code?: unknown }).code === 'USERNAME_EXISTS') return { created: false, reason: 'lost_race' };
    throw err;
  }
};
