// GET /api/v1/streams/{stream_id} (SPEC §9): one stream's events and the state folded
// from them, optionally as of a past time. Global admins only: a stream shows everything
// about its entity, across projects. The folds are the modules' deciders, handed in by
// the composition root (read-api may not import domain/).
import { z } from 'zod';
import { can } from '../infra/auth/authorize.ts';
import { AppError, NotFoundError } from '../infra/errors.ts';
import type { EventStore, RecordedEvent } from '../infra/eventStore/eventStore.ts';
import { AuditEvent, auditEventOfRecorded, IsoTime, redactSecrets, requirePrincipal, StreamId, type RouteBinder } from './audit.ts';

/** Folds a stream's events (oldest first) into its state, e.g. `(es) => es.reduce(decider.evolve, decider.initialState())`. */
export type StreamFold = (events: readonly RecordedEvent[]) => unknown;

/** `job-1f0c…` → `job`: the part of a stream id before the first '-' (EventStoreDB's category). */
export const categoryOf = (streamId: string): string => streamId.split('-', 1)[0]!;

/** Without a fold for the category: the events' data merged in order (later keys win). */
export const mergeDataFold: StreamFold = (events) => Object.assign({}, ...events.map((e) => e.data)) as Record<string, unknown>;

export type StreamsDeps = {
  store: EventStore;
  /** Category (stream id up to the first '-') → its fold. */
  folds?: Readonly<Record<string, StreamFold>>;
  /** The fold for categories not in `folds`; default mergeDataFold. */
  defaultFold?: StreamFold;
};

const StreamParams = z.object({ stream_id: StreamId });
const StreamQuery = z.object({
  as_of: IsoTime.optional().meta({ description: 'fold only the events stored at or before this time' }),
});

export const StreamView = z
  .strictObject({
    stream: z.string(),
    revision: z.number().int().nullable().meta({ description: 'revision of the last event folded; null when none was stored by as_of' }),
    events: z.array(AuditEvent),
    state: z.unknown().meta({ description: 'the state folded from `events` (secret-like keys removed)' }),
  })
  .meta({ id: 'StreamView' });
export type StreamView = z.output<typeof StreamView>;

/** The view of `stream`, or null when it does not exist. */
export const streamView = async (deps: StreamsDeps, stream: string, asOf?: Date): Promise<StreamView | null> => {
  const all = await deps.store.readStream(stream);
  if (all.length === 0) return null;
  const events = asOf === undefined ? all : all.filter((e) => e.createdAt.getTime() <= asOf.getTime());
  const category = categoryOf(stream);
  const fold = (deps.folds && Object.hasOwn(deps.folds, category) ? deps.folds[category] : undefined) ?? deps.defaultFold ?? mergeDataFold;
  const last = events.at(-1);
  return {
    stream,
    revision: last === undefined ? null : Number(last.revision),
    events: events.map(auditEventOfRecorded),
    state: redactSecrets(fold(events)) ?? null,
  };
};

/** Declares GET /streams/:stream_id on `binder` (a bindRoutes of the /api/v1 router). */
export const streamRoutes = (binder: RouteBinder, deps: StreamsDeps): void => {
  binder.get(
    {
      path: '/streams/:stream_id',
      summary: 'A stream and its folded state',
      description:
        'The events of one stream, oldest first, and the state folded from them by the module’s decider (or, for ' +
        'streams without one, the events’ data merged in order). With `as_of`, only the events stored up to then are ' +
        'returned and folded. Global admins only.',
      tags: ['audit'],
      auth: true,
      params: StreamParams,
      query: StreamQuery,
      responses: { 200: StreamView, 403: 'Not a global admin', 404: 'No such stream' },
    },
    async ({ params, query }, _req, res) => {
      const principal = requirePrincipal(res);
      if (!can(principal, 'system:admin')) throw new AppError('FORBIDDEN', 'reading streams needs a global admin');
      const view = await streamView(deps, params.stream_id, query.as_of === undefined ? undefined : new Date(query.as_of));
      if (!view) throw new NotFoundError(`no stream ${params.stream_id}`);
      res.json(view);
    },
  );
};
