// The monitoring projection on both databases: status folding in log order, rollups that
// a redelivered batch does not double, old observations kept as history only, and group
// quorum following node status.
import { expect } from 'chai';
import { sql } from 'kysely';
import { nodeIdFor, nodeCommandRunner, recordSnapshot } from '../../commands/nodes.ts';
import { createSnapshotRecorder } from '../../commands/snapshotRecorder.ts';
import { createCommandHandler } from '../../commands/handleCommand.ts';
import { monitoringEventSchemas } from '../../commands/monitoringSchemas.ts';
import { groupDecider, groupStream } from '../../domain/monitoring.ts';
import type { Database } from '../../infra/db/database.ts';
import type { EventStore } from '../../infra/eventStore/eventStore.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { monitoringProjection } from '../../projections/monitoring.ts';
import { createProjectionRuntime, type ProjectionRuntime } from '../../projections/projectionRuntime.ts';
import { FLAVOURS, freshDatabase } from '../support/databases.ts';

const ctx = { actor: null, requestId: 'r' };
const check = { type: 'push' as const, url: null, port: null, expectStatus: null, timeoutMs: 5000, intervalS: 60, retries: 1 };
const MINUTE = 60_000;

for (const flavour of FLAVOURS) {
  describe(`monitoring read models (${flavour})`, function () {
    this.timeout(60_000);
    let database: Database;
    let store: EventStore;
    let runtime: ProjectionRuntime;

    before(async () => {
      database = await freshDatabase(flavour);
      store = await createPostgresEventStore(database);
      runtime = createProjectionRuntime({ database, store, projectors: [monitoringProjection] });
      await runtime.start();
    });
    after(async () => {
      await runtime.stop();
      await store.close();
      await database.close();
    });

    const register = async (name: string, labels: Record<string, string> = {}) => {
      const nodeId = nodeIdFor('default', name);
      await nodeCommandRunner(store)(nodeId, { type: 'RegisterNode', data: {
        nodeId, name, project: 'default', address: '10.0.0.1', pubkey: null, labels, check, active: true,
      } }, ctx);
      return nodeId;
    };
    const recorder = () => createSnapshotRecorder(store);
    const snap = (rec: ReturnType<typeof createSnapshotRecorder>, nodeId: string, status: 'up' | 'down', atMs: number) =>
      recordSnapshot({ recorder: rec }, { nodeId, name: 'n', project: 'default', decommissioned: false }, nodeId,
        { status, latencyMs: null, version: null, metrics: { load: status === 'up' ? 1 : 0 }, observedAt: new Date(atMs).toISOString(), source: 'push', error: null }, ctx);

    it('folds snapshots in order (pending within retries), keeps a late old one as history only, and a redelivered batch changes nothing', async () => {
      const nodeId = await register('fold-1');
      const t0 = Math.floor(Date.now() / MINUTE) * MINUTE - 60 * MINUTE;
      const rec = recorder();
      // Concurrent pushes are one group commit; their order in the log is the order given here.
      const plan: Array<['up' | 'down', number]> = [['up', 0], ['down', 1], ['down', 2], ['down', 3], ['up', 4]];
      let last;
      for (const [status, m] of plan) last = await snap(rec, nodeId, status, t0 + m * MINUTE);
      last = await snap(rec, nodeId, 'down', t0 - 30 * MINUTE); // an old observation arriving late
      await runtime.whenCaughtUp(last!.position);

      const status = await database.db.selectFrom('node_status').selectAll().where('node_id', '=', nodeId).executeTakeFirstOrThrow();
      expect(status).to.include({ status: 'up', failures: 0, last_snapshot_status: 'up' });
      expect(new Date(status.last_observed_at!).getTime()).to.equal(t0 + 4 * MINUTE);
      const changes = await database.db.selectFrom('node_status_changes').select(['from_status', 'to_status']).where('node_id', '=', nodeId).orderBy('at').execute();
      expect(changes.map((c) => `${c.from_status}>${c.to_status}`)).to.deep.equal(['unknown>up', 'up>pending', 'pending>down', 'down>up']);
      const history = await database.db.selectFrom('node_snapshots').select('status').where('node_id', '=', nodeId).execute();
      expect(history).to.have.length(6);

      const rollups = () => sql<{ unit: string; up: string; down: string; pending: string }>`
        select unit, sum(up_ms)::text as up, sum(down_ms)::text as down, sum(pending_ms)::text as pending
          from node_uptime_rollups where node_id = ${nodeId} group by unit order by unit`.execute(database.db).then((r) => r.rows);
      const before = await rollups();
      // up 0–1, pending 1–2 (one failure within retries 1), down 2–4: the same in every unit.
      for (const r of before) expect([Number(r.up), Number(r.pending), Number(r.down)]).to.deep.equal([MINUTE, MINUTE, 2 * MINUTE]);

      // The same events again (a redelivered batch): guarded by the snapshot revision.
      const events = await store.readStream(`node-${nodeId}-snapshots`);
      await database.db.transaction().execute((trx) => monitoringProjection.apply(trx, events, () => undefined));
      expect(await rollups()).to.deep.equal(before);
      const metrics = await database.db.selectFrom('node_metric_rollups').select(['count', 'sum']).where('node_id', '=', nodeId).where('unit', '=', 'day').execute();
      expect(metrics.reduce((n, m) => n + Number(m.count), 0)).to.equal(6);
    });

    it('recounts a group’s quorum as its nodes change status, with a change row per transition', async () => {
      const names = ['q-1', 'q-2', 'q-3'];
      const ids = [];
      for (const n of names) ids.push(await register(`${flavour}-${n}`, { tier: `quorum-${flavour}` }));
      const groupId = crypto.randomUUID();
      const g = await createCommandHandler(store, monitoringEventSchemas)(groupDecider, groupStream(groupId), { type: 'CreateGroup', data: {
        groupId, name: 'Q', project: 'default', minOnline: 2, selector: { labels: { tier: `quorum-${flavour}` } },
      } }, ctx);
      await runtime.whenCaughtUp(g.append!.position);
      const rec = recorder();
      const now = Date.now() - MINUTE;
      await Promise.all([snap(rec, ids[0]!, 'up', now), snap(rec, ids[1]!, 'up', now)]);
      const last = await snap(rec, ids[1]!, 'down', now + 1000);
      await runtime.whenCaughtUp(last.position);
      const group = await database.db.selectFrom('node_groups').selectAll().where('id', '=', groupId).executeTakeFirstOrThrow();
      expect(group).to.include({ status: 'down', total: 3 });
      // retries 1: the second node is pending, not down, but also not up.
      expect(group.online).to.equal(1);
      const changes = await database.db.selectFrom('group_status_changes').select(['from_status', 'to_status']).where('group_id', '=', groupId).orderBy('at').execute();
      expect(changes.map((c) => `${c.from_status}>${c.to_status}`)).to.deep.equal(['unknown>down', 'down>up', 'up>down']);
    });
  });
}
