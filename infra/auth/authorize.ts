// The one authorization function (DESIGN §6), used by every command and query.
import { isGlobalPermission, PROJECT_PERMISSIONS, ROLE_PERMISSIONS, type Permission, type ProjectPermission } from './permissions.ts';
import type { Principal } from './principal.ts';

const scoped = (principal: Principal, permission: Permission): boolean => !principal.scopes || principal.scopes.has(permission);

/**
 * May `principal` do `permission` in `project`? Global permissions ignore `project`.
 * A global admin may do everything everywhere (within a token's scopes and pin).
 */
export const can = (principal: Principal | null, permission: Permission, project?: string | null): boolean => {
  if (!principal || !scoped(principal, permission)) return false;
  if (isGlobalPermission(permission)) return principal.role === 'admin' && !principal.projectPin;
  if (!project) return false;
  if (principal.projectPin && principal.projectPin !== project) return false;
  if (principal.role === 'admin') return true;
  const role = principal.memberships[project];
  return role !== undefined && ROLE_PERMISSIONS[role].has(permission as ProjectPermission);
};

/**
 * The projects in which the principal may do `permission`; 'all' for a global admin without
 * a pin. With `only`, narrowed to that one project (or none).
 */
export const visibleProjects = (principal: Principal, permission: ProjectPermission, only?: string): readonly string[] | 'all' => {
  if (only !== undefined) return can(principal, permission, only) ? [only] : [];
  if (!scoped(principal, permission)) return [];
  if (principal.role === 'admin') return principal.projectPin ? [principal.projectPin] : 'all';
  return Object.keys(principal.memberships).filter((p) => can(principal, permission, p));
};

/** Every permission the principal holds, per project, for /auth/me. */
export const effectivePermissions = (principal: Principal): { global: Permission[]; projects: Record<string, Permission[]> } => {
  const projects: Record<string, Permission[]> = {};
  for (const project of Object.keys(principal.memberships)) {
    projects[project] = PROJECT_PERMISSIONS.filter((p) => can(principal, p, project));
  }
  const global = (['users:admin', 'system:admin'] as const).filter((p) => can(principal, p));
  return { global, projects };
};
