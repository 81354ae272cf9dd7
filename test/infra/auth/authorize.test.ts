import { expect } from 'chai';
import { can, effectivePermissions, visibleProjects } from '../../../infra/auth/authorize.ts';
import { PROJECT_PERMISSIONS, type Permission } from '../../../infra/auth/permissions.ts';
import type { Principal } from '../../../infra/auth/principal.ts';

const principal = (over: Partial<Principal>): Principal => ({
  userId: 'u', username: 'u', role: 'user', memberships: {}, tokenId: null, scopes: null, projectPin: null, ...over,
});
const member = (role: 'admin' | 'operator' | 'viewer') => principal({ memberships: { web: role } });

describe('authorize', () => {
  const reads = PROJECT_PERMISSIONS.filter((p) => p.endsWith(':read') && p !== 'audit:read');
  const operatorExtra: Permission[] = ['snapshots:write', 'jobs:run', 'certs:write', 'stacks:deploy', 'workflows:run'];

  it('gives a viewer every :read but audit:read, in its project only', () => {
    for (const p of PROJECT_PERMISSIONS) expect(can(member('viewer'), p, 'web'), p).to.equal(reads.includes(p));
    expect(can(member('viewer'), 'nodes:read', 'other')).to.equal(false);
  });
  it('gives an operator the viewer rights plus running and deploying', () => {
    for (const p of PROJECT_PERMISSIONS) expect(can(member('operator'), p, 'web'), p).to.equal(reads.includes(p) || operatorExtra.includes(p));
  });
  it('gives a project admin everything project-scoped but nothing global', () => {
    for (const p of PROJECT_PERMISSIONS) expect(can(member('admin'), p, 'web'), p).to.equal(true);
    expect(can(member('admin'), 'users:admin')).to.equal(false);
  });
  it('gives a global admin everything everywhere', () => {
    const admin = principal({ role: 'admin' });
    expect(can(admin, 'audit:read', 'any-project')).to.equal(true);
    expect(can(admin, 'users:admin')).to.equal(true);
    expect(visibleProjects(admin, 'nodes:read')).to.equal('all');
  });
  it('gives nobody anything without a principal or a project', () => {
    expect(can(null, 'nodes:read', 'web')).to.equal(false);
    expect(can(member('admin'), 'nodes:read')).to.equal(false);
  });
  it('limits a token to its scopes, within the owner\'s rights', () => {
    const scoped = principal({ memberships: { web: 'viewer' }, scopes: new Set<Permission>(['nodes:read', 'jobs:run']) });
    expect(can(scoped, 'nodes:read', 'web')).to.equal(true);
    expect(can(scoped, 'systems:read', 'web')).to.equal(false);
    expect(can(scoped, 'jobs:run', 'web')).to.equal(false); // scope without the role's right
  });
  it('pins a token to one project, even for a global admin', () => {
    const pinned = principal({ role: 'admin', projectPin: 'web' });
    expect(can(pinned, 'nodes:read', 'web')).to.equal(true);
    expect(can(pinned, 'nodes:read', 'other')).to.equal(false);
    expect(can(pinned, 'users:admin')).to.equal(false);
    expect(visibleProjects(pinned, 'nodes:read')).to.deep.equal(['web']);
  });
  it('lists effective permissions per project', () => {
    const p = principal({ memberships: { web: 'viewer', ops: 'operator' } });
    const eff = effectivePermissions(p);
    expect(eff.global).to.deep.equal([]);
    expect(eff.projects['web']).to.deep.equal(reads);
    expect(eff.projects['ops']).to.include('jobs:run');
  });
});
