// The permission model of SPEC §4: `resource:action` strings, project roles, and what
// each role may do. Pure data; authorize.ts applies it.
export const PROJECT_PERMISSIONS = [
  'nodes:read', 'nodes:write', 'snapshots:write',
  'systems:read', 'systems:write', 'jobs:read', 'jobs:run',
  'proxies:read', 'proxies:write', 'certs:write',
  'stacks:read', 'stacks:write', 'stacks:deploy',
  'workflows:read', 'workflows:write', 'workflows:run',
  'members:write', 'audit:read',
] as const;
export const GLOBAL_PERMISSIONS = ['users:admin', 'system:admin'] as const;

export type ProjectPermission = (typeof PROJECT_PERMISSIONS)[number];
export type GlobalPermission = (typeof GLOBAL_PERMISSIONS)[number];
export type Permission = ProjectPermission | GlobalPermission;

export const PROJECT_ROLES = ['admin', 'operator', 'viewer'] as const;
export type ProjectRole = (typeof PROJECT_ROLES)[number];
export const USER_ROLES = ['admin', 'user'] as const;
export type UserRole = (typeof USER_ROLES)[number];

const viewer: readonly ProjectPermission[] = PROJECT_PERMISSIONS.filter((p) => p.endsWith(':read') && p !== 'audit:read');
const operator: readonly ProjectPermission[] = [...viewer, 'snapshots:write', 'jobs:run', 'certs:write', 'stacks:deploy', 'workflows:run'];

export const ROLE_PERMISSIONS: Record<ProjectRole, ReadonlySet<ProjectPermission>> = {
  viewer: new Set(viewer),
  operator: new Set(operator),
  admin: new Set(PROJECT_PERMISSIONS),
};

export const isPermission = (p: string): p is Permission =>
  (PROJECT_PERMISSIONS as readonly string[]).includes(p) || (GLOBAL_PERMISSIONS as readonly string[]).includes(p);

export const isGlobalPermission = (p: Permission): p is GlobalPermission => (GLOBAL_PERMISSIONS as readonly string[]).includes(p);
