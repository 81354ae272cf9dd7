import { expect } from 'chai';
import {
  alertOf, decideSnapshot, groupDecider, groupStatus, nextStatus, nodeDecider,
  type GroupEvent, type NodeEvent, type NodeRegistered,
} from '../../domain/monitoring.ts';
import { deciderSpec } from '../support/deciderSpec.ts';

const nodeId = 'a1111111-1111-4111-8111-111111111111';
const check = { type: 'push' as const, url: null, port: null, expectStatus: null, timeoutMs: 5000, intervalS: 60, retries: 0 };
const registered: NodeRegistered = { type: 'NodeRegistered', data: {
  nodeId, name: 'orch-1', project: 'default', address: '10.0.0.1', pubkey: null, labels: { role: 'bridge' }, check, active: true,
} };
const decommissioned: NodeEvent = { type: 'NodeDecommissioned', data: { nodeId, name: 'orch-1', project: 'default' } };

describe('monitoring decider: nodes', () => {
  const given = deciderSpec(nodeDecider);
  it('registers a node once', () => given([]).when({ type: 'RegisterNode', data: registered.data }).then([registered]));
  it('refuses a second registration of a live node', () => given([registered]).when({ type: 'RegisterNode', data: registered.data }).thenThrows('NODE_EXISTS'));
  it('registers a decommissioned node again (it comes back with its history)', () =>
    given([registered, decommissioned]).when({ type: 'RegisterNode', data: registered.data }).then([registered]));
  it('records only the fields that changed', () =>
    given([registered]).when({ type: 'UpdateNode', data: { nodeId, address: '10.0.0.2', labels: { role: 'bridge' } } })
      .then([{ type: 'NodeUpdated', data: { nodeId, address: '10.0.0.2' } }]));
  it('appends nothing for an unchanged update (an import of the same file)', () =>
    given([registered]).when({ type: 'UpdateNode', data: { nodeId, address: '10.0.0.1', pubkey: null } }).then([]));
  it('refuses to change or decommission a decommissioned node', () => {
    given([registered, decommissioned]).when({ type: 'UpdateNode', data: { nodeId, active: false } }).thenThrows('NODE_DECOMMISSIONED');
    given([registered, decommissioned]).when({ type: 'DecommissionNode', data: { nodeId } }).thenThrows('NODE_DECOMMISSIONED');
  });
  it('refuses to change a node that does not exist', () => given([]).when({ type: 'UpdateNode', data: { nodeId, active: false } }).thenThrows('NODE_NOT_FOUND'));
});

describe('monitoring decider: snapshots', () => {
  const now = '2026-11-23T12:00:00.000Z';
  const data = { status: 'up' as const, latencyMs: 12, version: null, metrics: null, observedAt: null, source: 'push' as const, error: null };
  const target = { nodeId, name: 'orch-1', decommissioned: false };
  it('defaults observed_at to now', () =>
    expect(decideSnapshot(target, nodeId, { data, metadata: { now } }).data).to.include({ observedAt: now, nodeId, status: 'up' }));
  it('normalises observed_at to UTC', () =>
    expect(decideSnapshot(target, nodeId, { data: { ...data, observedAt: '2026-11-23T13:00:00+02:00' }, metadata: { now } }).data.observedAt)
      .to.equal('2026-11-23T11:00:00.000Z'));
  const code = (f: () => unknown) => { try { f(); } catch (e) { return (e as { code: string }).code; } return null; };
  it('refuses an unknown node, a decommissioned one, and a time more than a minute ahead', () => {
    expect(code(() => decideSnapshot(null, nodeId, { data, metadata: { now } }))).to.equal('NODE_NOT_FOUND');
    expect(code(() => decideSnapshot({ ...target, decommissioned: true }, nodeId, { data, metadata: { now } }))).to.equal('NODE_DECOMMISSIONED');
    expect(code(() => decideSnapshot(target, nodeId, { data: { ...data, observedAt: '2026-11-23T12:01:01Z' }, metadata: { now } }))).to.equal('OBSERVED_IN_FUTURE');
    expect(code(() => decideSnapshot(target, nodeId, { data: { ...data, observedAt: '2026-11-23T12:00:59Z' }, metadata: { now } }))).to.equal(null);
  });
});

describe('monitoring: status rules', () => {
  const down = { status: 'down' as const, source: 'poll' as const };
  const up = { status: 'up' as const, source: 'poll' as const };
  it('is pending for up to `retries` failures, then down; up at once', () => {
    let s = { status: 'up' as const, failures: 0 } as ReturnType<typeof nextStatus>;
    const seen = [];
    for (let i = 0; i < 4; i++) { s = nextStatus(s, down, 2); seen.push(s.status); }
    expect(seen).to.deep.equal(['pending', 'pending', 'down', 'down']);
    expect(nextStatus(s, up, 2)).to.deep.equal({ status: 'up', failures: 0 });
  });
  it('takes the monitor’s verdict on a silent push node as final at once', () =>
    expect(nextStatus({ status: 'up', failures: 0 }, { status: 'down', source: 'monitor' }, 3).status).to.equal('down'));
  it('alerts down on becoming down, and up only when recovering from down', () => {
    expect(alertOf('node', 'up', 'down')).to.equal('node.down');
    expect(alertOf('node', 'pending', 'down')).to.equal('node.down');
    expect(alertOf('node', 'down', 'up')).to.equal('node.up');
    expect(alertOf('node', 'unknown', 'up')).to.equal(null);
    expect(alertOf('node', 'up', 'pending')).to.equal(null);
    expect(alertOf('group', 'up', 'down')).to.equal('group.down');
  });
  it('a group is up with at least min_online up, unknown while none reports', () => {
    expect(groupStatus(16, 20, 16)).to.equal('up');
    expect(groupStatus(15, 20, 16)).to.equal('down');
    expect(groupStatus(0, 0, 1)).to.equal('unknown');
  });
});

describe('monitoring decider: groups', () => {
  const groupId = 'b2222222-2222-4222-8222-222222222222';
  const created: GroupEvent = { type: 'GroupCreated', data: { groupId, name: 'Bridge', project: 'default', minOnline: 16, selector: { labels: { role: 'bridge' } } } };
  const given = deciderSpec(groupDecider);
  it('changes only what differs', () =>
    given([created]).when({ type: 'UpdateGroup', data: { groupId, minOnline: 2, name: 'Bridge' } })
      .then([{ type: 'GroupUpdated', data: { groupId, minOnline: 2 } }]));
  it('refuses to change a deleted group', () =>
    given([created, { type: 'GroupDeleted', data: { groupId, project: 'default' } }]).when({ type: 'UpdateGroup', data: { groupId, minOnline: 2 } })
      .thenThrows('GROUP_NOT_FOUND'));
});
