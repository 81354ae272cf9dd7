// Who is calling: resolved once per request (session JWT or API token) and handed to
// every command and query. Holds no secret.
import type { Permission, ProjectRole, UserRole } from './permissions.ts';

export type Principal = {
  userId: string;
  username: string;
  role: UserRole;
  /** project slug → the caller's role in it */
  memberships: Readonly<Record<string, ProjectRole>>;
  /** Set when authenticated by an API token. */
  tokenId: string | null;
  /** An API token's scopes: its permissions are these ∩ the owner's. null = the owner's. */
  scopes: ReadonlySet<Permission> | null;
  /** An API token pinned to one project sees only that project. */
  projectPin: string | null;
};
