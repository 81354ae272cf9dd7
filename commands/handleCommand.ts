// The only place that writes: load → fold → decide → validate → append.
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { Decider, DomainEvent } from '../domain/decider.ts';
import { ConcurrencyError, InvalidEventError } from '../infra/errors.ts';
import type { AppendResult, EventMetadata, EventStore, NewEvent } from '../infra/eventStore/eventStore.ts';

/** Who and why: copied into every event's metadata (the audit trail). */
export type CommandContext = {
  actor?: EventMetadata['actor'];
  requestId?: string | null;
  ip?: string | null;
  project?: string | null;
  correlationId?: string | null;
  causationId?: string | null;
  /** ISO time of the decision; defaults to now. */
  now?: string;
};

/** zod schema per event type: an event the decider emits must match one, or nothing is appended. */
export type EventSchemas = Record<string, z.ZodType>;

export type CommandResult<State, Event> = {
  events: Event[];
  state: State;
  /** null when the decision produced no events. */
  append: AppendResult | null;
};

export type HandleOptions = {
  /** Optimistic concurrency from the client (If-Match): no retry on conflict. */
  expectedRevision?: bigint;
  /** How often to re-load and re-decide when another writer got in first. */
  retries?: number;
};

export const eventMetadata = (ctx: CommandContext, schemaVersion = 1): EventMetadata => ({
  actor: ctx.actor ?? null,
  request_id: ctx.requestId ?? null,
  ip: ctx.ip ?? null,
  project: ctx.project ?? null,
  correlation_id: ctx.correlationId ?? ctx.requestId ?? null,
  causation_id: ctx.causationId ?? null,
  occurred_at: ctx.now ?? new Date().toISOString(),
  schema_version: schemaVersion,
});

/** Validates decided events against their schemas and wraps them with ids and metadata. */
export const toNewEvents = <E extends DomainEvent>(
  events: readonly E[],
  schemas: EventSchemas,
  ctx: CommandContext,
  versions: Partial<Record<string, number>> = {},
): NewEvent[] =>
  events.map((e) => {
    const schema = schemas[e.type];
    if (!schema) throw new InvalidEventError(`unknown event type ${e.type}`);
    const parsed = schema.safeParse(e.data);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(data)'}: ${i.message}`).join('; ');
      throw new InvalidEventError(`${e.type} is malformed: ${issues}`);
    }
    return { id: randomUUID(), type: e.type, data: parsed.data as Record<string, unknown>, metadata: eventMetadata(ctx, versions[e.type] ?? 1) };
  });

export const createCommandHandler = (store: EventStore, schemas: EventSchemas) =>
  async <S, C, E extends DomainEvent>(
    decider: Decider<S, C, E>,
    stream: string,
    command: C,
    ctx: CommandContext,
    options: HandleOptions = {},
  ): Promise<CommandResult<S, E>> => {
    const retries = options.expectedRevision === undefined ? (options.retries ?? 5) : 0;
    for (let attempt = 0; ; attempt++) {
      const history = await store.readStream(stream);                                          // 1. load
      const revision = history.at(-1)?.revision ?? null;
      if (options.expectedRevision !== undefined && options.expectedRevision !== revision) {
        throw new ConcurrencyError(stream, `revision ${options.expectedRevision}`, revision);
      }
      const state = history.reduce((s, e) => decider.evolve(s, e as unknown as E), decider.initialState()); // 2. fold
      const events = decider.decide(command, state);                                            // 3. decide (pure)
      if (events.length === 0) return { events, state, append: null };
      const newEvents = toNewEvents(events, schemas, ctx, decider.schemaVersions);              // 4. validate
      try {
        const append = await store.append(stream, newEvents, { expectedRevision: revision ?? 'no_stream' }); // 5. append
        return { events, state: events.reduce(decider.evolve, state), append };
      } catch (err) {
        if (!(err instanceof ConcurrencyError) || attempt >= retries) throw err;
      }
    }
  };

export type CommandHandler = ReturnType<typeof createCommandHandler>;

/** A command result whose state and event types the caller does not need. */
export type AnyCommandResult = CommandResult<unknown, DomainEvent>;

/**
 * One decider's commands on the stream `streamOf(id)`; `expected` (from If-Match) makes the
 * append conditional on that revision, without retries.
 */
export const streamCommandRunner = <S, C, E extends DomainEvent>(
  store: EventStore, schemas: EventSchemas, decider: Decider<S, C, E>, streamOf: (id: string) => string,
) => {
  const handle = createCommandHandler(store, schemas);
  return async (id: string, command: C, ctx: CommandContext, expected?: bigint): Promise<AnyCommandResult> =>
    (await handle(decider, streamOf(id), command, ctx, expected === undefined ? {} : { expectedRevision: expected })) as unknown as AnyCommandResult;
};

