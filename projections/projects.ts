// projects + project_members read models. Idempotent: project rows guarded by stream
// revision; membership rows are set or removed outright (the last event wins in order).
import type { ProjectEvent } from '../domain/projects.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import type { Projector } from './projector.ts';

export const PROJECT_EVENT_TYPES: ProjectEvent['type'][] = ['ProjectCreated', 'ProjectUpdated', 'ProjectDeleted', 'MemberSet', 'MemberRemoved'];

export const projectsProjection: Projector = {
  name: 'projects',
  version: 1,
  handles: PROJECT_EVENT_TYPES,
  tables: ['projects', 'project_members'],
  async apply(trx, events, emit) {
    for (const recorded of events) {
      const e = recorded as unknown as RecordedEvent & ProjectEvent;
      const at = recorded.createdAt;
      const revision = recorded.revision.toString();
      const projectRow = (slug: string) => trx.updateTable('projects').where('slug', '=', slug).where('revision', '<', revision);
      switch (e.type) {
        case 'ProjectCreated':
          await trx.insertInto('projects').values({
            slug: e.data.slug, display_name: e.data.displayName,
            billing_account: e.data.billingAccount === null ? null : JSON.stringify(e.data.billingAccount),
            created_by: e.data.createdBy, created_at: at, updated_at: at, revision,
          }).onConflict((oc) => oc.column('slug').doNothing()).execute();
          break;
        case 'ProjectUpdated':
          await projectRow(e.data.slug).set({
            ...(e.data.displayName !== undefined ? { display_name: e.data.displayName } : {}),
            ...(e.data.billingAccount !== undefined
              ? { billing_account: e.data.billingAccount === null ? null : JSON.stringify(e.data.billingAccount) } : {}),
            updated_at: at, revision,
          }).execute();
          break;
        case 'ProjectDeleted':
          await projectRow(e.data.slug).set({ deleted: true, updated_at: at, revision }).execute();
          await trx.deleteFrom('project_members').where('project', '=', e.data.slug).execute();
          break;
        case 'MemberSet':
          await trx.insertInto('project_members').values({ project: e.data.slug, user_id: e.data.userId, role: e.data.role, updated_at: at })
            .onConflict((oc) => oc.columns(['project', 'user_id']).doUpdateSet({ role: e.data.role, updated_at: at })).execute();
          await projectRow(e.data.slug).set({ updated_at: at, revision }).execute();
          break;
        case 'MemberRemoved':
          await trx.deleteFrom('project_members').where('project', '=', e.data.slug).where('user_id', '=', e.data.userId).execute();
          await projectRow(e.data.slug).set({ updated_at: at, revision }).execute();
          break;
        default: { const _never: never = e; void _never; }
      }
      emit({ topic: 'projects', kind: e.type, id: e.data.slug, project: e.data.slug, position: recorded.position });
    }
  },
};
