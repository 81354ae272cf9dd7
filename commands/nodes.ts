// Node command endpoints (SPEC §5): register, change, decommission, import in the
// origin's nodes.json form, and record-snapshot (push). A node's id is derived from its
// project and lower-cased name (nodeIdFor), so a name is unique in its project by
// construction and an import can upsert by name without a lookup table.
import type { Response } from 'express';
import { z } from 'zod';
import { DomainError } from '../domain/domainError.ts';
import {
  decideSnapshot, nodeDecider, nodeStream, snapshotStream,
  type Check, type NodeCommand, type NodeFields, type RecordSnapshot, type SnapshotTarget,
} from '../domain/monitoring.ts';
import { DEFAULT_PROJECT } from '../domain/projects.ts';
import { projectNotFound, requirePrincipal, requireProjectAccess, requireResourceAccess } from '../infra/auth/authenticate.ts';
import type { ProjectPermission } from '../infra/auth/permissions.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { AppendResult } from '../infra/eventStore/eventStore.ts';
import { formatPosition } from '../infra/eventStore/position.ts';
import { nameUuid } from '../infra/ids.ts';
import { setEtag, withIfMatch } from '../infra/http/conditional.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { Slug, Uuid, ValidationError } from '../infra/http/validate.ts';
import { commandContext, EVENT_POSITION_HEADER, settle, type CommandKit, answerResource } from './commandRoute.ts';
import { toNewEvents, type CommandContext, streamCommandRunner, type AnyCommandResult } from './handleCommand.ts';
import { Address, IpAddress, Labels, Metrics, monitoringEventSchemas, NodeName, Pubkey } from './monitoringSchemas.ts';
import type { SnapshotRecorder } from './snapshotRecorder.ts';

type Routes = ReturnType<typeof bindRoutes>;

/** What the commands need of a node: its project (for authorization) and whether it is decommissioned. */
export type NodeRef = SnapshotTarget & { project: string };

/** The read side, handed in by the composition root (commands may not import read-api). */
export type NodeViews = {
  /** Cheap and exact (cached until a node's life changes): the snapshot path asks it on every push. */
  ref(nodeId: string): Promise<NodeRef | null>;
  node(nodeId: string): Promise<{ view: unknown; revision: bigint } | null>;
  projectExists(slug: string): Promise<boolean>;
  schemas: { Node: z.ZodType };
};

export type NodeCommandDeps = CommandKit & { views: NodeViews; recorder: SnapshotRecorder; defaultIntervalS: number };

/** The node id of `name` in `project`: stable, and the same for `Web-1` and `web-1`. */
export const nodeIdFor = (project: string, name: string): string => nameUuid('0b5c6f2e8d7a4e1b9c3f5a7d2e4b6c8a', `${project}/${name.toLowerCase()}`);

export const DEFAULT_CHECK_TIMEOUT_MS = 5000;

const CheckBody = z.strictObject({
  type: z.enum(['http', 'tcp', 'push']),
  url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).max(2048).optional(),
  port: z.number().int().min(1, 'must be a port, 1–65535').max(65535, 'must be a port, 1–65535').optional(),
  expect_status: z.number().int().min(100).max(599).optional(),
  timeout_ms: z.number().int().min(100).max(60_000).optional(),
  interval_s: z.number().int().min(1).max(86_400).optional(),
  retries: z.number().int().min(0).max(10).optional(),
}).superRefine((c, ctx) => {
  if (c.type === 'http' && !c.url) ctx.addIssue({ code: 'custom', path: ['url'], message: 'an http check needs a url' });
  if (c.type === 'tcp' && c.port === undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: 'a tcp check needs a port' });
  if (c.type !== 'http' && c.url !== undefined) ctx.addIssue({ code: 'custom', path: ['url'], message: `a ${c.type} check takes no url` });
  if (c.type !== 'http' && c.expect_status !== undefined) ctx.addIssue({ code: 'custom', path: ['expect_status'], message: 'only an http check has an expected status' });
  if (c.type !== 'tcp' && c.port !== undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: `a ${c.type} check takes no port (an http check has it in its url)` });
}).meta({ id: 'NodeCheck', description: 'How the node is watched: polled over http or tcp, or pushing its own snapshots.' });
type CheckBody = z.output<typeof CheckBody>;

const RegisterNode = z.strictObject({
  name: NodeName, project: Slug.default(DEFAULT_PROJECT), address: Address, pubkey: Pubkey.nullable().optional(),
  labels: Labels.optional(), check: CheckBody.optional(), active: z.boolean().optional(),
});
const UpdateNode = z.strictObject({
  address: Address.optional(), pubkey: Pubkey.nullable().optional(), labels: Labels.optional(), check: CheckBody.optional(), active: z.boolean().optional(),
  name: z.unknown().refine(() => false, 'a node cannot be renamed (its id comes from its name): register it under the new name and decommission the old one').optional(),
});
const ImportEntry = z.strictObject({ name: NodeName, ip: IpAddress, pubkey: Pubkey.nullable().optional() });
const ImportBody = z.array(z.unknown()).max(10_000, 'at most 10,000 nodes per import');
const ImportQuery = z.strictObject({ project: Slug.default(DEFAULT_PROJECT) });
const IdParams = z.object({ id: Uuid });

export const SnapshotBody = z.strictObject({
  status: z.enum(['up', 'down']),
  latency_ms: z.number().min(0, 'must not be negative').max(3_600_000).optional(),
  version: z.string().min(1).max(100).optional(),
  metrics: Metrics.optional(),
  observed_at: z.iso.datetime({ offset: true }).optional(),
  error: z.string().max(500).optional(),
}).meta({ id: 'SnapshotInput' });

const SnapshotAccepted = z.strictObject({
  node_id: z.uuid(), status: z.enum(['up', 'down']), observed_at: z.iso.datetime(), position: z.string(),
}).meta({ id: 'SnapshotAccepted' });

const ImportResult = z.strictObject({
  created: z.number().int(), updated: z.number().int(), unchanged: z.number().int(),
  nodes: z.array(z.strictObject({ name: z.string(), id: z.uuid(), result: z.enum(['created', 'updated', 'unchanged']) })),
}).meta({ id: 'NodeImportResult' });

const toCheck = (body: CheckBody | undefined, defaultIntervalS: number): Check => ({
  type: body?.type ?? 'push',
  url: body?.url ?? null,
  port: body?.port ?? null,
  expectStatus: body?.expect_status ?? null,
  timeoutMs: body?.timeout_ms ?? DEFAULT_CHECK_TIMEOUT_MS,
  intervalS: body?.interval_s ?? defaultIntervalS,
  retries: body?.retries ?? 0,
});

/** 404 PROJECT_NOT_FOUND unless the project exists (after the visibility check, so both look alike). */
export const requireProject = async (views: { projectExists(slug: string): Promise<boolean> }, slug: string): Promise<void> => {
  if (!(await views.projectExists(slug))) throw projectNotFound(slug);
};

const nodeNotFound = (id: string) => new DomainError('NODE_NOT_FOUND', `node ${id} not found`);

/** The node, if the caller may see it (404 otherwise, as for a missing one), and 403 without `permission`. */
export const requireNode = async (views: Pick<NodeViews, 'ref'>, principal: Principal, id: string, permission: ProjectPermission): Promise<NodeRef> => {
  const node = await views.ref(id);
  if (!node) throw nodeNotFound(id);
  requireResourceAccess(principal, node.project, permission, () => nodeNotFound(id));
  return node;
};

/**
 * Records one snapshot for a node: checked against the node's small state (never its
 * history) and appended to its snapshot stream through the group commit. Used by the
 * push endpoint and by the poller.
 */
export const recordSnapshot = async (
  deps: { recorder: SnapshotRecorder }, target: NodeRef | null, nodeId: string,
  data: RecordSnapshot['data'], ctx: CommandContext,
): Promise<AppendResult & { observedAt: string }> => {
  const now = ctx.now ?? new Date().toISOString();
  const event = decideSnapshot(target, nodeId, { data, metadata: { now } });
  const [recorded] = toNewEvents([event], monitoringEventSchemas, { ...ctx, now, project: target?.project ?? null });
  const result = await deps.recorder.append(snapshotStream(nodeId), recorded!);
  return { ...result, observedAt: event.data.observedAt };
};

/** Runs a node command on the node's stream (If-Match as the expected revision when given). */
export const nodeCommandRunner = (store: CommandKit['store']) => streamCommandRunner(store, monitoringEventSchemas, nodeDecider, nodeStream);

export const nodeCommandRoutes = (routes: Routes, deps: NodeCommandDeps): void => {
  const run = nodeCommandRunner(deps.store);

  const answerNode = async (res: Response, id: string, status: number) =>
    answerResource(res, await deps.views.node(id), { status, location: `/api/v1/nodes/${id}`, notFound: () => nodeNotFound(id) });

  routes.post({
    path: '/nodes', summary: 'Register a node', tags: ['nodes'], auth: true,
    description: 'Needs nodes:write in the project. The id is derived from the project and the (case-insensitive) name; '
      + 'registering the name of a decommissioned node brings it back with its history. Without `check` the node pushes its own snapshots.',
    body: RegisterNode,
    responses: { 201: { body: deps.views.schemas.Node, headers: { Location: 'the new node', ETag: 'the node’s revision' } }, 409: 'a node of that name exists in the project' },
  }, async ({ body }, req, res) => {
    requireProjectAccess(res, body.project, 'nodes:write');
    await requireProject(deps.views, body.project);
    const nodeId = nodeIdFor(body.project, body.name);
    const fields: NodeFields = {
      name: body.name, project: body.project, address: body.address, pubkey: body.pubkey ?? null, labels: body.labels ?? {},
      check: toCheck(body.check, deps.defaultIntervalS), active: body.active ?? true,
    };
    const result = await run(nodeId, { type: 'RegisterNode', data: { nodeId, ...fields } }, commandContext(req, res, body.project));
    await settle(deps, res, [result]);
    await answerNode(res, nodeId, 201);
  });

  routes.patch({
    path: '/nodes/:id', summary: 'Change a node', tags: ['nodes'], auth: true, ifMatch: true,
    description: 'Needs nodes:write in the node’s project. `check` replaces the whole check (unset fields take their defaults). The name and project cannot change.',
    params: IdParams, body: UpdateNode,
    responses: { 200: { body: deps.views.schemas.Node, headers: { ETag: 'the node’s revision' } }, 404: 'no such node (or not visible to you)', 409: 'the node is decommissioned' },
  }, async ({ params, body }, req, res) => {
    const node = await requireNode(deps.views, requirePrincipal(res), params.id, 'nodes:write');
    const changes = {
      ...(body.address !== undefined ? { address: body.address } : {}),
      ...(body.pubkey !== undefined ? { pubkey: body.pubkey } : {}),
      ...(body.labels !== undefined ? { labels: body.labels } : {}),
      ...(body.check !== undefined ? { check: toCheck(body.check, deps.defaultIntervalS) } : {}),
      ...(body.active !== undefined ? { active: body.active } : {}),
    };
    const result = await withIfMatch(req, (expected) =>
      run(params.id, { type: 'UpdateNode', data: { nodeId: params.id, ...changes } }, commandContext(req, res, node.project), expected));
    await settle(deps, res, [result]);
    await answerNode(res, params.id, 200);
  });

  routes.delete({
    path: '/nodes/:id', summary: 'Decommission a node', tags: ['nodes'], auth: true, ifMatch: true,
    description: 'Needs nodes:write. The node stops being checked and counted; its history and uptime stay readable.',
    params: IdParams, responses: { 204: 'decommissioned', 404: 'no such node (or not visible to you)', 409: 'already decommissioned' },
  }, async ({ params }, req, res) => {
    const node = await requireNode(deps.views, requirePrincipal(res), params.id, 'nodes:write');
    const result = await withIfMatch(req, (expected) =>
      run(params.id, { type: 'DecommissionNode', data: { nodeId: params.id } }, commandContext(req, res, node.project), expected));
    await settle(deps, res, [result]);
    if (result.append) setEtag(res, result.append.nextExpectedRevision);
    res.status(204).end();
  });

  routes.post({
    path: '/nodes/import', summary: 'Import nodes in the nodes.json form (upsert by name)', tags: ['nodes'], auth: true,
    description: 'Body: `[{name, ip, pubkey}]`. Needs nodes:write in `?project=` (default `default`). Every entry is checked first: '
      + 'one bad entry (or a name given twice) rejects the whole import with a 400 naming each, and nothing is written. '
      + 'New names are registered as push nodes; known ones get their address and key updated.',
    query: ImportQuery, body: ImportBody, responses: { 200: ImportResult, 400: 'bad entries, each named' },
  }, async ({ query, body }, req, res) => {
    requireProjectAccess(res, query.project, 'nodes:write');
    const entries = parseImport(body);
    await requireProject(deps.views, query.project);
    const ctx = commandContext(req, res, query.project);
    const outcome = await importNodes({ ...deps, run }, query.project, entries, ctx);
    await settle(deps, res, outcome.results);
    res.json(outcome.summary);
  });

  routes.post({
    path: '/nodes/:id/snapshots', summary: 'Record a snapshot (push)', tags: ['nodes'], auth: true,
    description: 'Needs snapshots:write in the node’s project (a node pushing for itself uses an API token scoped to it). '
      + 'Answers 202 once the snapshot is stored; status, history and uptime follow within moments. '
      + '`observed_at` defaults to now and may not be more than a minute ahead of the server’s clock.',
    params: IdParams, body: SnapshotBody,
    responses: { 202: { body: SnapshotAccepted, headers: { 'X-Event-Position': 'the snapshot’s position' } }, 404: 'no such node (or not visible to you)', 409: 'the node is decommissioned' },
  }, async ({ params, body }, req, res) => {
    const node = await requireNode(deps.views, requirePrincipal(res), params.id, 'snapshots:write');
    const result = await recordSnapshot(deps, node, params.id, {
      status: body.status, latencyMs: body.latency_ms ?? null, version: body.version ?? null, metrics: body.metrics ?? null,
      observedAt: body.observed_at ?? null, source: 'push', error: body.error ?? null,
    }, commandContext(req, res, node.project));
    const position = formatPosition(result.position);
    res.setHeader(EVENT_POSITION_HEADER, position);
    res.status(202).json({ node_id: params.id, status: body.status, observed_at: result.observedAt, position });
  });
};

export type ImportEntry = z.output<typeof ImportEntry>;

/** Every entry checked before anything is written: each bad one named by its index, duplicates (case-insensitive) too. */
export const parseImport = (body: readonly unknown[]): ImportEntry[] => {
  const errors: { path: string; message: string }[] = [];
  const seen = new Map<string, number>();
  const entries: ImportEntry[] = [];
  body.forEach((raw, i) => {
    const r = ImportEntry.safeParse(raw);
    if (!r.success) {
      for (const issue of r.error.issues) {
        const keys = issue.code === 'unrecognized_keys' ? issue.keys : [issue.path.map(String).join('.')];
        for (const k of keys) errors.push({ path: `body[${i}]${k ? `.${k}` : ''}`, message: issue.code === 'unrecognized_keys' ? 'unknown field' : issue.message });
      }
      return;
    }
    const key = r.data.name.toLowerCase();
    const first = seen.get(key);
    if (first !== undefined) errors.push({ path: `body[${i}].name`, message: `duplicate name ${r.data.name} (also at body[${first}])` });
    else seen.set(key, i);
    entries.push(r.data);
  });
  if (errors.length > 0) throw new ValidationError(errors, `${new Set(errors.map((e) => e.path.split('.')[0])).size} of ${body.length} entries are not valid; nothing was imported`);
  return entries;
};

/** Upserts by name: registers new (or decommissioned) names, updates address and key of known ones. */
export const importNodes = async (
  deps: { store: CommandKit['store']; defaultIntervalS: number; run(nodeId: string, command: NodeCommand, ctx: CommandContext): Promise<AnyCommandResult> },
  project: string, entries: readonly ImportEntry[], ctx: CommandContext,
) => {
  const results: AnyCommandResult[] = [];
  const nodes: { name: string; id: string; result: 'created' | 'updated' | 'unchanged' }[] = [];
  for (const entry of entries) {
    const nodeId = nodeIdFor(project, entry.name);
    const history = await deps.store.readStream(nodeStream(nodeId));
    const state = history.reduce((s, e) => nodeDecider.evolve(s, e as never), nodeDecider.initialState());
    const command: NodeCommand = state.status === 'active'
      ? { type: 'UpdateNode', data: { nodeId, address: entry.ip, ...(entry.pubkey !== undefined ? { pubkey: entry.pubkey } : {}) } }
      : { type: 'RegisterNode', data: {
        nodeId, name: entry.name, project, address: entry.ip, pubkey: entry.pubkey ?? null, labels: {},
        check: toCheck(undefined, deps.defaultIntervalS), active: true,
      } };
    const result = await deps.run(nodeId, command, ctx);
    results.push(result);
    nodes.push({ name: entry.name, id: nodeId, result: command.type === 'RegisterNode' ? 'created' : result.append ? 'updated' : 'unchanged' });
  }
  const count = (r: string) => nodes.filter((n) => n.result === r).length;
  return { results, summary: { created: count('created'), updated: count('updated'), unchanged: count('unchanged'), nodes } };
};

