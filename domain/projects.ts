// Projects (tenants) and their members: one stream per project (`project-<slug>`), so
// a slug is unique by construction (the first append expects no stream). Pure.
import { DomainError } from './domainError.ts';
import type { Decider } from './decider.ts';

export type ProjectRole = 'admin' | 'operator' | 'viewer';
export type BillingAccount = {
  company_name: string; company_address: string; tax_number_type: 'vat' | 'gst' | 'ein'; tax_number: string; country: string;
};

export type ProjectCreated = { type: 'ProjectCreated'; data: {
  slug: string; displayName: string; billingAccount: BillingAccount | null; createdBy: string | null;
} };
export type ProjectUpdated = { type: 'ProjectUpdated'; data: { slug: string; displayName?: string; billingAccount?: BillingAccount | null } };
export type ProjectDeleted = { type: 'ProjectDeleted'; data: { slug: string } };
export type MemberSet = { type: 'MemberSet'; data: { slug: string; userId: string; role: ProjectRole } };
export type MemberRemoved = { type: 'MemberRemoved'; data: { slug: string; userId: string } };
export type ProjectEvent = ProjectCreated | ProjectUpdated | ProjectDeleted | MemberSet | MemberRemoved;

export type CreateProject = { type: 'CreateProject'; data: ProjectCreated['data'] };
export type UpdateProject = { type: 'UpdateProject'; data: ProjectUpdated['data'] };
export type DeleteProject = { type: 'DeleteProject'; data: { slug: string } };
export type SetMember = { type: 'SetMember'; data: MemberSet['data'] };
export type RemoveMember = { type: 'RemoveMember'; data: MemberRemoved['data'] };
export type ProjectCommand = CreateProject | UpdateProject | DeleteProject | SetMember | RemoveMember;

export type ProjectState = { status: 'active' | 'deleted'; slug: string; members: Record<string, ProjectRole> };
export type Project = { status: 'none' } | ProjectState;

export const DEFAULT_PROJECT = 'default';
export const projectStream = (slug: string): string => `project-${slug}`;

const active = (state: Project, slug: string): ProjectState => {
  if (state.status !== 'active') throw new DomainError('PROJECT_NOT_FOUND', `project ${slug} does not exist`);
  return state;
};

const admins = (members: Record<string, ProjectRole>) => Object.values(members).filter((r) => r === 'admin').length;

export const projectDecider: Decider<Project, ProjectCommand, ProjectEvent> = {
  initialState: () => ({ status: 'none' }),

  evolve(state, event) {
    switch (event.type) {
      case 'ProjectCreated':
        return { status: 'active', slug: event.data.slug, members: {} };
      case 'ProjectUpdated':
        return state;
      case 'ProjectDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      case 'MemberSet':
        return state.status === 'none' ? state : { ...state, members: { ...state.members, [event.data.userId]: event.data.role } };
      case 'MemberRemoved': {
        if (state.status === 'none') return state;
        const { [event.data.userId]: _gone, ...members } = state.members;
        return { ...state, members };
      }
      default: { const _never: never = event; return _never; }
    }
  },

  decide(command, state) {
    switch (command.type) {
      case 'CreateProject': {
        if (state.status !== 'none') throw new DomainError('PROJECT_EXISTS', `project ${command.data.slug} exists (or existed)`);
        const created: ProjectEvent[] = [{ type: 'ProjectCreated', data: command.data }];
        // The creator becomes the project's admin.
        if (command.data.createdBy) created.push({ type: 'MemberSet', data: { slug: command.data.slug, userId: command.data.createdBy, role: 'admin' } });
        return created;
      }
      case 'UpdateProject': {
        active(state, command.data.slug);
        const { slug, ...changes } = command.data;
        return Object.keys(changes).length === 0 ? [] : [{ type: 'ProjectUpdated', data: { slug, ...changes } }];
      }
      case 'DeleteProject':
        active(state, command.data.slug);
        if (command.data.slug === DEFAULT_PROJECT) throw new DomainError('PROJECT_PROTECTED', 'the default project cannot be deleted');
        return [{ type: 'ProjectDeleted', data: command.data }];
      case 'SetMember': {
        const project = active(state, command.data.slug);
        if (project.members[command.data.userId] === command.data.role) return [];
        if (project.members[command.data.userId] === 'admin' && command.data.role !== 'admin' && admins(project.members) === 1) {
          throw new DomainError('LAST_ADMIN', 'a project keeps at least one admin');
        }
        return [{ type: 'MemberSet', data: command.data }];
      }
      case 'RemoveMember': {
        const project = active(state, command.data.slug);
        const role = project.members[command.data.userId];
        if (role === undefined) throw new DomainError('MEMBER_NOT_FOUND', `user ${command.data.userId} is not a member of ${command.data.slug}`);
        if (role === 'admin' && admins(project.members) === 1) throw new DomainError('LAST_ADMIN', 'a project keeps at least one admin');
        return [{ type: 'MemberRemoved', data: command.data }];
      }
      default: { const _never: never = command; return _never; }
    }
  },
};
