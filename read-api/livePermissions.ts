// Who may read which live change: the read permissions of SPEC §4 applied to a change's
// topic and project, through the one authorize() (DESIGN §6). The gateway's default
// `canRead`; the composition root may hand in its own.
import { can } from '../infra/auth/authorize.ts';
import type { ProjectPermission } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';

/** Change topic → the project permission that lets one read it (in the change's project). */
export const LIVE_READ_PERMISSION: Readonly<Record<string, ProjectPermission>> = {
  nodes: 'nodes:read',
  groups: 'nodes:read',
  jobs: 'jobs:read',
  proxies: 'proxies:read',
  stacks: 'stacks:read',
  'workflow-runs': 'workflows:read',
};

const seesProject = (principal: Principal, slug: string): boolean => {
  if (principal.projectPin && principal.projectPin !== slug) return false;
  return principal.role === 'admin' || Object.hasOwn(principal.memberships, slug);
};

/**
 * Fails closed: a project-scoped change without a `project` reaches global admins only
 * (authorize() needs the project), and a topic missing here reaches nobody.
 */
export const canReadLiveChange = (principal: Principal, change: { topic: string; id: string; project?: string | null }): boolean => {
  if (Object.hasOwn(LIVE_READ_PERMISSION, change.topic)) {
    const permission = LIVE_READ_PERMISSION[change.topic]!;
    if (change.project) return can(principal, permission, change.project);
    return principal.role === 'admin' && !principal.projectPin && (!principal.scopes || principal.scopes.has(permission));
  }
  switch (change.topic) {
    case 'users':
      return can(principal, 'users:admin') || change.id === principal.userId;
    case 'projects':
      return seesProject(principal, change.id);
    case 'streams':
      // The stream catalog spans every project: operators of the whole system only.
      return can(principal, 'system:admin');
    default:
      return false;
  }
};
