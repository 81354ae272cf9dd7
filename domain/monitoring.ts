// Monitoring (SPEC §5): nodes, their snapshots, groups and alert channels. Pure.
//
// Streams:
// - `node-<id>`: a node's life (registered, updated, decommissioned, registered again).
//   Small: it is folded to decide. A node's id is derived from (project, lower-cased
//   name) by the command layer, so a name is unique in its project by construction.
// - `node-<id>-snapshots`: the hot stream, one event per check, forever. It is never
//   folded (DESIGN §3): a snapshot is checked against the node's small state
//   (`decideSnapshot`) and appended with expected revision `any`.
// - `group-<id>`, `alert-channel-<id>`.
//
// What a node's status is follows from its snapshots in log order (`nextStatus`), which
// the projection applies; the status is never an input a client can set.
import { DomainError } from './domainError.ts';
import type { Decider } from './decider.ts';

export type CheckType = 'http' | 'tcp' | 'push';
export type Check = {
  type: CheckType;
  /** http: the URL to GET. */
  url: string | null;
  /** tcp: the port to connect to on the node's address. */
  port: number | null;
  /** http: the status that means up (null: any 2xx). */
  expectStatus: number | null;
  /** How long one check may take. */
  timeoutMs: number;
  /** Seconds between checks (push: between reports); null = POLL_INTERVAL_SECONDS. */
  intervalS: number | null;
  /** Consecutive failed checks shown as `pending` before the node is `down`. */
  retries: number;
};
export type Labels = Record<string, string>;

export type NodeFields = {
  name: string; project: string; address: string; pubkey: string | null; labels: Labels; check: Check; active: boolean;
};

export type NodeRegistered = { type: 'NodeRegistered'; data: { nodeId: string } & NodeFields };
export type NodeUpdated = { type: 'NodeUpdated'; data: { nodeId: string } & Partial<Omit<NodeFields, 'name' | 'project'>> };
export type NodeDecommissioned = { type: 'NodeDecommissioned'; data: { nodeId: string; name: string; project: string } };
export type NodeEvent = NodeRegistered | NodeUpdated | NodeDecommissioned;

export type SnapshotStatus = 'up' | 'down';
/** Who observed it: the node itself, the poller, or the monitor noticing a push node's silence. */
export type SnapshotSource = 'push' | 'poll' | 'monitor';
export type SnapshotRecorded = { type: 'SnapshotRecorded'; data: {
  nodeId: string; status: SnapshotStatus; latencyMs: number | null; version: string | null;
  metrics: Record<string, number> | null; observedAt: string; source: SnapshotSource; error: string | null;
} };

export type RegisterNode = { type: 'RegisterNode'; data: NodeRegistered['data'] };
export type UpdateNode = { type: 'UpdateNode'; data: NodeUpdated['data'] };
export type DecommissionNode = { type: 'DecommissionNode'; data: { nodeId: string } };
export type NodeCommand = RegisterNode | UpdateNode | DecommissionNode;

export type NodeState =
  | { status: 'none' }
  | ({ status: 'active' | 'decommissioned'; nodeId: string } & NodeFields);

export const nodeStream = (nodeId: string): string => `node-${nodeId}`;
export const snapshotStream = (nodeId: string): string => `node-${nodeId}-snapshots`;

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

const existing = (state: NodeState, nodeId: string) => {
  if (state.status === 'none') throw new DomainError('NODE_NOT_FOUND', `node ${nodeId} not found`);
  if (state.status === 'decommissioned') throw new DomainError('NODE_DECOMMISSIONED', `node ${state.name} is decommissioned`);
  return state;
};

/** Only the fields that differ from the state (so that an unchanged upsert appends nothing). */
const changedFields = (state: NodeFields, changes: Partial<NodeFields>): Partial<NodeFields> =>
  Object.fromEntries(Object.entries(changes).filter(([k, v]) => v !== undefined && !sameJson(state[k as keyof NodeFields], v)));

export const nodeDecider: Decider<NodeState, NodeCommand, NodeEvent> = {
  initialState: () => ({ status: 'none' }),

  evolve(state, event) {
    switch (event.type) {
      case 'NodeRegistered': {
        const { nodeId, ...fields } = event.data;
        return { status: 'active', nodeId, ...fields };
      }
      case 'NodeUpdated': {
        if (state.status === 'none') return state;
        const { nodeId: _id, ...changes } = event.data;
        return { ...state, ...changes };
      }
      case 'NodeDecommissioned':
        return state.status === 'none' ? state : { ...state, status: 'decommissioned' };
      default: { const _never: never = event; return _never; }
    }
  },

  decide(command, state) {
    switch (command.type) {
      case 'RegisterNode':
        // A decommissioned node's name may be registered again: the node comes back with its history.
        if (state.status === 'active') throw new DomainError('NODE_EXISTS', `node ${command.data.name} exists in project ${command.data.project}`);
        return [{ type: 'NodeRegistered', data: command.data }];
      case 'UpdateNode': {
        const node = existing(state, command.data.nodeId);
        const { nodeId, ...changes } = command.data;
        const changed = changedFields(node, changes);
        return Object.keys(changed).length === 0 ? [] : [{ type: 'NodeUpdated', data: { nodeId, ...changed } }];
      }
      case 'DecommissionNode': {
        const node = existing(state, command.data.nodeId);
        return [{ type: 'NodeDecommissioned', data: { nodeId: node.nodeId, name: node.name, project: node.project } }];
      }
      default: { const _never: never = command; return _never; }
    }
  },
};

// ---- snapshots ------------------------------------------------------------------------

/** How far a reported observed_at may run ahead of our clock (clock skew), in ms. */
export const MAX_CLOCK_SKEW_MS = 60_000;

/** What the snapshot check needs to know of a node (a read-model row or a fold of its stream). */
export type SnapshotTarget = { nodeId: string; name: string; decommissioned: boolean };

export type RecordSnapshot = {
  data: Omit<SnapshotRecorded['data'], 'observedAt' | 'nodeId'> & { observedAt: string | null };
  metadata: { now: string };
};

/** The snapshot event for `target`, or why not. Cheap at any stream length: it never looks at earlier snapshots. */
export const decideSnapshot = (target: SnapshotTarget | null, nodeId: string, command: RecordSnapshot): SnapshotRecorded => {
  if (!target) throw new DomainError('NODE_NOT_FOUND', `node ${nodeId} not found`);
  if (target.decommissioned) throw new DomainError('NODE_DECOMMISSIONED', `node ${target.name} is decommissioned: it takes no snapshots`);
  const now = Date.parse(command.metadata.now);
  const observedAt = command.data.observedAt ?? command.metadata.now;
  if (Date.parse(observedAt) - now > MAX_CLOCK_SKEW_MS) {
    throw new DomainError('OBSERVED_IN_FUTURE', `observed_at ${observedAt} is more than ${MAX_CLOCK_SKEW_MS / 1000} s ahead of the server's clock`);
  }
  return { type: 'SnapshotRecorded', data: { ...command.data, nodeId, observedAt: new Date(observedAt).toISOString() } };
};

// ---- status ---------------------------------------------------------------------------

export type NodeStatus = 'up' | 'down' | 'pending' | 'unknown';
export type StatusState = { status: NodeStatus; failures: number };

/**
 * The status after one more snapshot: up at once; down after more than `retries`
 * consecutive failures, `pending` until then. The monitor's own verdict on a silent push
 * node is final at once.
 */
export const nextStatus = (prev: StatusState, snapshot: { status: SnapshotStatus; source: SnapshotSource }, retries: number): StatusState => {
  if (snapshot.status === 'up') return { status: 'up', failures: 0 };
  const failures = prev.failures + 1;
  if (snapshot.source === 'monitor') return { status: 'down', failures: Math.max(failures, retries + 1) };
  return { status: failures > retries ? 'down' : 'pending', failures };
};

/**
 * A snapshot speaks for the time after it, up to the next one, but never for longer than
 * twice the node's interval: past that the monitor was not looking (it was stopped, or
 * the node's reports were lost), and that time is `unknown`, never `up`.
 */
export const snapshotValidityMs = (intervalS: number): number => 2 * intervalS * 1000;

export type AlertEvent = 'node.down' | 'node.up' | 'group.down' | 'group.up' | 'cert.expiring' | 'cert.failed' | 'job.failed';
export const ALERT_EVENTS: readonly AlertEvent[] = ['node.down', 'node.up', 'group.down', 'group.up', 'cert.expiring', 'cert.failed', 'job.failed'];

/** The alert a status change raises: down when it becomes down, up only when it recovers from down. */
export const alertOf = (kind: 'node' | 'group', from: NodeStatus, to: NodeStatus): AlertEvent | null => {
  if (to === 'down' && from !== 'down') return kind === 'node' ? 'node.down' : 'group.down';
  if (to === 'up' && from === 'down') return kind === 'node' ? 'node.up' : 'group.up';
  return null;
};

/** A group is up when at least `minOnline` of its nodes are up; unknown while none of them has reported. */
export const groupStatus = (online: number, reporting: number, minOnline: number): NodeStatus =>
  reporting === 0 ? 'unknown' : online >= minOnline ? 'up' : 'down';

// ---- groups ---------------------------------------------------------------------------

export type GroupSelector = { labels: Labels } | { nodeIds: string[] };
export type GroupFields = { name: string; project: string; minOnline: number; selector: GroupSelector };
export type GroupCreated = { type: 'GroupCreated'; data: { groupId: string } & GroupFields };
export type GroupUpdated = { type: 'GroupUpdated'; data: { groupId: string } & Partial<Omit<GroupFields, 'project'>> };
export type GroupDeleted = { type: 'GroupDeleted'; data: { groupId: string; project: string } };
export type GroupEvent = GroupCreated | GroupUpdated | GroupDeleted;

export type GroupCommand =
  | { type: 'CreateGroup'; data: GroupCreated['data'] }
  | { type: 'UpdateGroup'; data: GroupUpdated['data'] }
  | { type: 'DeleteGroup'; data: { groupId: string } };

export type GroupState = { status: 'none' } | ({ status: 'active' | 'deleted'; groupId: string } & GroupFields);

export const groupStream = (groupId: string): string => `group-${groupId}`;

const liveGroup = (state: GroupState, groupId: string) => {
  if (state.status !== 'active') throw new DomainError('GROUP_NOT_FOUND', `group ${groupId} not found`);
  return state;
};

export const groupDecider: Decider<GroupState, GroupCommand, GroupEvent> = {
  initialState: () => ({ status: 'none' }),
  evolve(state, event) {
    switch (event.type) {
      case 'GroupCreated': {
        const { groupId, ...fields } = event.data;
        return { status: 'active', groupId, ...fields };
      }
      case 'GroupUpdated': {
        if (state.status === 'none') return state;
        const { groupId: _id, ...changes } = event.data;
        return { ...state, ...changes };
      }
      case 'GroupDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      default: { const _never: never = event; return _never; }
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'CreateGroup':
        if (state.status !== 'none') throw new DomainError('GROUP_EXISTS', `group ${command.data.groupId} exists`);
        return [{ type: 'GroupCreated', data: command.data }];
      case 'UpdateGroup': {
        const group = liveGroup(state, command.data.groupId);
        const { groupId, ...changes } = command.data;
        const changed = Object.fromEntries(Object.entries(changes)
          .filter(([k, v]) => v !== undefined && !sameJson(group[k as keyof GroupFields], v)));
        return Object.keys(changed).length === 0 ? [] : [{ type: 'GroupUpdated', data: { groupId, ...changed } }];
      }
      case 'DeleteGroup': {
        const group = liveGroup(state, command.data.groupId);
        return [{ type: 'GroupDeleted', data: { groupId: group.groupId, project: group.project } }];
      }
      default: { const _never: never = command; return _never; }
    }
  },
};

// ---- alert channels ---------------------------------------------------------------------

/** The signing secret lives in the vault; the event names it only by reference (DESIGN §6). */
export type AlertChannelCreated = { type: 'AlertChannelCreated'; data: {
  channelId: string; project: string; name: string; url: string; events: AlertEvent[]; secretRef: string;
} };
export type AlertChannelDeleted = { type: 'AlertChannelDeleted'; data: { channelId: string; project: string; secretRef: string } };
export type AlertChannelEvent = AlertChannelCreated | AlertChannelDeleted;
export type AlertChannelCommand =
  | { type: 'CreateAlertChannel'; data: AlertChannelCreated['data'] }
  | { type: 'DeleteAlertChannel'; data: { channelId: string } };
export type AlertChannelState =
  | { status: 'none' }
  | { status: 'active' | 'deleted'; channelId: string; project: string; secretRef: string };

export const alertChannelStream = (channelId: string): string => `alert-channel-${channelId}`;

export const alertChannelDecider: Decider<AlertChannelState, AlertChannelCommand, AlertChannelEvent> = {
  initialState: () => ({ status: 'none' }),
  evolve(state, event) {
    switch (event.type) {
      case 'AlertChannelCreated':
        return { status: 'active', channelId: event.data.channelId, project: event.data.project, secretRef: event.data.secretRef };
      case 'AlertChannelDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      default: { const _never: never = event; return _never; }
    }
  },
  decide(command, state) {
    switch (command.type) {
      case 'CreateAlertChannel':
        if (state.status !== 'none') throw new DomainError('ALERT_CHANNEL_EXISTS', `alert channel ${command.data.channelId} exists`);
        return [{ type: 'AlertChannelCreated', data: command.data }];
      case 'DeleteAlertChannel':
        if (state.status !== 'active') throw new DomainError('ALERT_CHANNEL_NOT_FOUND', `alert channel ${command.data.channelId} not found`);
        return [{ type: 'AlertChannelDeleted', data: { channelId: state.channelId, project: state.project, secretRef: state.secretRef } }];
      default: { const _never: never = command; return _never; }
    }
  },
};

export type MonitoringEvent = NodeEvent | SnapshotRecorded | GroupEvent | AlertChannelEvent;
