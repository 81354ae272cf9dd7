import type { ProjectEvent } from '../../domain/projects.ts';
import { projectDecider } from '../../domain/projects.ts';
import { deciderSpec } from '../support/deciderSpec.ts';

const given = deciderSpec(projectDecider);
const alice = 'a1111111-1111-4111-8111-111111111111';
const bob = 'b2222222-2222-4222-8222-222222222222';
const created: ProjectEvent = { type: 'ProjectCreated', data: { slug: 'web', displayName: 'Web', billingAccount: null, createdBy: alice } };
const aliceAdmin: ProjectEvent = { type: 'MemberSet', data: { slug: 'web', userId: alice, role: 'admin' } };

describe('projects decider', () => {
  it('makes the creator the project admin', () =>
    given([]).when({ type: 'CreateProject', data: created.data as never }).then([created, aliceAdmin]));
  it('refuses a taken slug', () => given([created, aliceAdmin]).when({ type: 'CreateProject', data: created.data as never }).thenThrows('PROJECT_EXISTS'));
  it('adds a member', () =>
    given([created, aliceAdmin]).when({ type: 'SetMember', data: { slug: 'web', userId: bob, role: 'viewer' } })
      .then([{ type: 'MemberSet', data: { slug: 'web', userId: bob, role: 'viewer' } }]));
  it('keeps at least one admin', () =>
    given([created, aliceAdmin]).when({ type: 'SetMember', data: { slug: 'web', userId: alice, role: 'viewer' } }).thenThrows('LAST_ADMIN'));
  it('refuses to remove the last admin', () =>
    given([created, aliceAdmin]).when({ type: 'RemoveMember', data: { slug: 'web', userId: alice } }).thenThrows('LAST_ADMIN'));
  it('never deletes the default project', () =>
    given([{ type: 'ProjectCreated', data: { slug: 'default', displayName: 'Default', billingAccount: null, createdBy: null } }])
      .when({ type: 'DeleteProject', data: { slug: 'default' } }).thenThrows('PROJECT_PROTECTED'));
  it('refuses changes to a deleted project', () =>
    given([created, aliceAdmin, { type: 'ProjectDeleted', data: { slug: 'web' } }])
      .when({ type: 'SetMember', data: { slug: 'web', userId: bob, role: 'viewer' } }).thenThrows('PROJECT_NOT_FOUND'));
  it('does not reuse the slug of a deleted project', () =>
    given([created, aliceAdmin, { type: 'ProjectDeleted', data: { slug: 'web' } }]).when({ type: 'CreateProject', data: created.data as never }).thenThrows('PROJECT_EXISTS'));
});
