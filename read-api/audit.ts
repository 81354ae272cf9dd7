// GET /api/v1/audit (SPEC §9): the event log itself, newest first, as the audit trail.
// Thin: parse, authorize, one query on the events table. It reads the log through SQL
// rather than the EventStore port because it pages backwards under filters, which the
// port does not offer; with EVENT_STORE=esdb the events table is empty and so is this list.
import type { Response } from 'express';
import { sql, type Kysely, type RawBuilder } from 'kysely';
import { z } from 'zod';
import { visibleProjects } from '../infra/auth/authorize.ts';
import type { Principal } from '../infra/auth/principal.ts';
import type { Tables } from '../infra/db/tables.ts';
import { AppError } from '../infra/errors.ts';
import type { RecordedEvent } from '../infra/eventStore/eventStore.ts';
import { formatPosition, parsePosition, type Position } from '../infra/eventStore/position.ts';
import type { bindRoutes } from '../infra/http/openapi.ts';
import { CursorPageOf, CursorPagination, cursorPage, Slug, Uuid, ValidationError, type CursorPage } from '../infra/http/validate.ts';

/** What bindRoutes returns: routes are declared on it, the composition root mounts its router. */
export type RouteBinder = ReturnType<typeof bindRoutes>;

// ---- shared with read-api/streams.ts ---------------------------------------------------

/** The caller, as the authentication middleware left it; null/undefined = anonymous. */
export const principalOf = (res: Response): Principal | null =>
  ((res.locals as Record<string, unknown>)['principal'] as Principal | null | undefined) ?? null;

/** The principal, or 401 for an anonymous request. */
export const requirePrincipal = (res: Response): Principal => {
  const principal = principalOf(res);
  if (!principal) throw new AppError('UNAUTHORIZED', 'authentication required: send Authorization: Bearer <token>');
  return principal;
};

// Names as the event store accepts them (infra/eventStore/validateEvents.ts).
export const StreamId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,255}$/, 'must be a stream id: 1–256 characters of [A-Za-z0-9._:@-]');
const EventType = z.string().regex(/^[A-Za-z][A-Za-z0-9._-]{0,127}$/, 'must be an event type');
/** An ISO 8601 time with a zone (`Z` or an offset). */
export const IsoTime = z.iso.datetime({ offset: true });

const Actor = z.strictObject({ user_id: z.string().nullable(), username: z.string().nullable(), token_id: z.string().nullable() });

export const AuditEvent = z
  .strictObject({
    position: z.string().meta({ description: 'the event’s place in the log, `commit/prepare`; totally ordered' }),
    stream: z.string(),
    type: z.string(),
    occurred_at: z.string().nullable().meta({ description: 'when the decision was taken (metadata)' }),
    actor: Actor,
    request_id: z.string().nullable(),
    ip: z.string().nullable(),
    project: z.string().nullable(),
    data: z.record(z.string(), z.unknown()).meta({ description: 'the event’s data; keys that look like secrets are removed' }),
  })
  .meta({ id: 'AuditEvent', description: 'One event of the log with who, when and from where' });
export type AuditEvent = z.output<typeof AuditEvent>;

// Defence in depth: events carry references to vault secrets, never secrets (DESIGN §6),
// but nothing that looks like one leaves through these endpoints. A key is dropped when
// one of its words (camelCase, snake_case or kebab-case) names a secret, or when it is
// about a token and is not merely the token's id, name or prefix.
const SECRET_WORDS = new Set(['password', 'passwd', 'passphrase', 'secret', 'secrets', 'credential', 'credentials', 'authorization', 'cookie']);
const SECRET_PAIRS = [['private', 'key'], ['api', 'key'], ['access', 'key'], ['signing', 'key'], ['session', 'key']] as const;
const HARMLESS_TOKEN_PARTS = new Set(['id', 'ids', 'name', 'names', 'prefix', 'count', 'scopes', 'project', 'expires', 'at']);

const wordsOf = (key: string): string[] =>
  key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);

/** Whether a key of event data (or state) names something secret-like, e.g. `password`, `tokenHash`, `private_key`. */
export const isSecretLikeKey = (key: string): boolean => {
  const words = wordsOf(key);
  if (words.some((w) => SECRET_WORDS.has(w) || /(password|passwd|passphrase|secret)$|^(privatekey|apikey|accesstoken)$/.test(w))) return true;
  if (SECRET_PAIRS.some(([a, b]) => words.some((w, i) => w === a && words[i + 1] === b))) return true;
  const t = words.findIndex((w) => w === 'token' || w === 'tokens');
  return t >= 0 && !words.slice(t + 1).some((w) => HARMLESS_TOKEN_PARTS.has(w));
};

/**
 * A JSON-safe copy of `value` without secret-like keys, at any depth. Also makes folded
 * states printable: bigint → string, Map → object, Set → array, Date → ISO string.
 */
export const redactSecrets = (value: unknown, depth = 0): unknown => {
  if (depth > 64) return '[too deep]';
  if (value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  if (typeof value === 'bigint') return value.toString();
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1) ?? null);
  if (value instanceof Set) return [...value].map((v) => redactSecrets(v, depth + 1) ?? null);
  const entries = value instanceof Map ? [...value.entries()].map(([k, v]) => [String(k), v] as const) : Object.entries(value as object);
  const out: Record<string, unknown> = {};
  for (const [k, v] of entries) {
    if (isSecretLikeKey(k)) continue;
    const safe = redactSecrets(v, depth + 1);
    if (safe !== undefined) out[k] = safe;
  }
  return out;
};

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const rec = (v: unknown): Record<string, unknown> => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {});

/** The audit shape of one event (SPEC §9), from its parts as stored. */
export const auditEventOf = (e: { position: Position; stream: string; type: string; data: unknown; metadata: unknown }): AuditEvent => {
  const meta = rec(e.metadata);
  const actor = rec(meta['actor']);
  return {
    position: formatPosition(e.position),
    stream: e.stream,
    type: e.type,
    occurred_at: str(meta['occurred_at']),
    actor: { user_id: str(actor['user_id']), username: str(actor['username']), token_id: str(actor['token_id']) },
    request_id: str(meta['request_id']),
    ip: str(meta['ip']),
    project: str(meta['project']),
    data: rec(redactSecrets(e.data)),
  };
};

export const auditEventOfRecorded = (e: RecordedEvent): AuditEvent =>
  auditEventOf({ position: e.position, stream: e.streamId, type: e.type, data: e.data, metadata: e.metadata });

// ---- the cursor ---------------------------------------------------------------------

/** Opaque to clients: base64url of the last position returned (`commit/prepare`). */
export const encodeCursor = (p: Position): string => Buffer.from(formatPosition(p), 'utf8').toString('base64url');

export const decodeCursor = (cursor: string): Position => {
  const position = /^[A-Za-z0-9_-]+$/.test(cursor) ? parsePosition(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
  if (!position) throw new ValidationError([{ path: 'query.cursor', message: 'not a cursor this API issued; pass next_cursor back unchanged' }]);
  return position;
};

// ---- the query ------------------------------------------------------------------------

export const AuditQuery = CursorPagination.extend({
  actor_id: Uuid.optional().meta({ description: 'only events whose actor is this user' }),
  project: Slug.optional().meta({ description: 'only events of this project' }),
  stream: StreamId.optional().meta({ description: 'only events of this stream' }),
  type: EventType.optional().meta({ description: 'only events of this type' }),
  from: IsoTime.optional().meta({ description: 'only events stored at or after this time (the log’s created_at, not metadata.occurred_at)' }),
  to: IsoTime.optional().meta({ description: 'only events stored before this time (exclusive)' }),
});
export type AuditQuery = z.output<typeof AuditQuery>;

type Row = { gp: string; tx: string; stream_id: string; type: string; data: unknown; metadata: unknown };

const COLUMNS = sql.raw('global_position::text as gp, transaction_id::text as tx, stream_id, type, data, metadata');
// An InitPlan, computed once per statement: only events of transactions older than every
// running one, so a later page never gains an event that commits late behind the cursor.
const VISIBLE = sql`transaction_id < (select pg_snapshot_xmin(pg_current_snapshot()))`;
const ORDER = sql.raw('order by transaction_id desc, global_position desc');

/**
 * One page of the log, newest first by (transaction_id, global_position). `scope` null =
 * every event; otherwise only events whose metadata.project is one of those projects.
 */
export const queryAudit = async (db: Kysely<Tables>, q: AuditQuery, scope: readonly string[] | null): Promise<CursorPage<AuditEvent>> => {
  // The `project` filter narrows the scope (to nothing when it lies outside it).
  const projects = q.project === undefined ? scope : scope === null || scope.includes(q.project) ? [q.project] : [];
  const cursor = q.cursor === undefined ? null : decodeCursor(q.cursor);
  const where: RawBuilder<unknown>[] = [VISIBLE];
  if (q.actor_id !== undefined) where.push(sql`metadata->'actor'->>'user_id' = ${q.actor_id}`);
  if (q.type !== undefined) where.push(sql`type = ${q.type}`);
  if (q.from !== undefined) where.push(sql`created_at >= ${q.from}::timestamptz`);
  if (q.to !== undefined) where.push(sql`created_at < ${q.to}::timestamptz`);
  const n = q.limit + 1; // one more tells whether there is a next page
  const run = async (query: RawBuilder<Row>) => (await query.execute(db)).rows;
  const and = (conditions: RawBuilder<unknown>[]) => sql.join(conditions, sql` and `);
  const after = (c: Position) => sql`(transaction_id, global_position) < (${c.commit.toString()}::xid8, ${c.prepare.toString()}::bigint)`;

  let rows: Row[];
  if (projects !== null && projects.length === 0) {
    rows = [];
  } else if (q.stream !== undefined) {
    // One stream: walked on its (stream_id, stream_revision) key rather than an index of
    // its own (every index slows every append). Within a stream, revision order is log
    // order: opl_append writes revision n+1 only once revision n is committed, taking its
    // xid and sequence value after that commit (an append is one statement). The
    // cursor is turned into its revision, so a hot stream pages in constant time too.
    where.push(sql`stream_id = ${q.stream}`);
    // Checked row by row on the stream's walk.
    if (projects !== null) where.push(sql`coalesce(metadata->>'project', '') = any(${[...projects]}::text[])`);
    if (cursor) {
      where.push(sql`stream_revision < (select c.stream_revision from events c where c.stream_id = ${q.stream}
        and c.transaction_id = ${cursor.commit.toString()}::xid8 and c.global_position = ${cursor.prepare.toString()}::bigint)`);
    }
    rows = await run(sql<Row>`select ${COLUMNS} from events where ${and(where)} order by stream_revision desc limit ${n}`);
  } else if (projects === null || projects.length === 1) {
    if (cursor) where.push(after(cursor));
    if (projects) where.push(sql`metadata->>'project' = ${projects[0]!}`);
    rows = await run(sql<Row>`select ${COLUMNS} from events where ${and(where)} ${ORDER} limit ${n}`);
  } else {
    // Several projects: one newest-first walk per project (each stops after a page), then
    // the newest of those few rows. There is no index on the project on purpose: every
    // index on events slows every append (an expression index cost single appends ~5 %);
    // a projected audit table is the way to make rare projects' pages cheap on huge logs.
    if (cursor) where.push(after(cursor));
    where.push(sql`metadata->>'project' = p.project`);
    rows = await run(sql<Row>`select e.gp, e.tx, e.stream_id, e.type, e.data, e.metadata
        from unnest(${[...projects]}::text[]) as p(project)
        cross join lateral (
          select ${COLUMNS}, transaction_id as o_tx, global_position as o_gp from events where ${and(where)} ${ORDER} limit ${n}
        ) e
        order by e.o_tx desc, e.o_gp desc limit ${n}`);
  }

  const page = rows.slice(0, q.limit);
  const items = page.map((r) =>
    auditEventOf({ position: { commit: BigInt(r.tx), prepare: BigInt(r.gp) }, stream: r.stream_id, type: r.type, data: r.data, metadata: r.metadata }),
  );
  const last = page.at(-1);
  const next = rows.length > q.limit && last ? encodeCursor({ commit: BigInt(last.tx), prepare: BigInt(last.gp) }) : null;
  return cursorPage(items, q.limit, next);
};

/**
 * Which projects' events `principal` may read: null = all (a global admin), else a
 * non-empty list; 403 when none. A `project` filter outside the list is a 403 too.
 */
export const auditScope = (principal: Principal, project: string | undefined): readonly string[] | null => {
  const visible = visibleProjects(principal, 'audit:read');
  if (visible === 'all') return project === undefined ? null : [project];
  if (visible.length === 0) throw new AppError('FORBIDDEN', 'reading the audit log needs audit:read in a project (project admins) or a global admin');
  if (project === undefined) return [...new Set(visible)].sort();
  if (!visible.includes(project)) throw new AppError('FORBIDDEN', `reading the audit log of project ${project} needs audit:read there`);
  return [project];
};

export type AuditDeps = { db: Kysely<Tables> };

/** Declares GET /audit on `binder` (a bindRoutes of the /api/v1 router). */
export const auditRoutes = (binder: RouteBinder, deps: AuditDeps): void => {
  binder.get(
    {
      path: '/audit',
      summary: 'The audit log',
      description:
        'Every event, newest first, with its actor, request id, client address and project. A global admin sees every ' +
        'event; a caller with audit:read in some projects (their project admins) sees the events of those projects. ' +
        'Only events of committed transactions older than every running one are listed, so following next_cursor ' +
        'never skips or repeats an event, even while others are appended. `from`/`to` compare with the time the event ' +
        'was stored.',
      tags: ['audit'],
      auth: true,
      query: AuditQuery,
      responses: { 200: CursorPageOf(AuditEvent), 403: 'No audit:read in any project (or in the project asked for)' },
    },
    async ({ query }, _req, res) => {
      const principal = requirePrincipal(res);
      const projects = auditScope(principal, query.project);
      res.json(await queryAudit(deps.db, query, projects));
    },
  );
};
