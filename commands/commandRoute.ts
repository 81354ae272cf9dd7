// What every command endpoint does around the command handler: say who and from where
// (event metadata), and answer only once the read models include the write
// (read-your-writes, SPEC §3) with the write's position in X-Event-Position.
import type { Request, Response } from 'express';
import { z } from 'zod';
import type { DomainEvent } from '../domain/decider.ts';
import { principalOf } from '../infra/auth/authenticate.ts';
import { TimeoutError } from '../infra/errors.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { comparePositions, formatPosition, type Position } from '../infra/eventStore/position.ts';
import { setEtag } from '../infra/http/conditional.ts';
import type { CommandContext, CommandResult } from './handleCommand.ts';

export const EVENT_POSITION_HEADER = 'X-Event-Position';

export type WhenCaughtUp = (position: Position, o: { eventTypes: readonly string[]; timeoutMs?: number }) => Promise<void>;

export type CommandKit = {
  store: EventStore;
  /** The projection runtime's whenCaughtUp. */
  whenCaughtUp: WhenCaughtUp;
  logger?: { warn(o: object, msg?: string): void };
  /** How long a command waits for its read models before answering anyway (default 5 s). */
  readYourWritesTimeoutMs?: number;
};

/** Event metadata of a request: the caller (user, token), the request id, the client address, the project. */
export const commandContext = (req: Request, res: Response, project?: string | null): CommandContext => {
  const principal = principalOf(res);
  return {
    actor: principal ? { user_id: principal.userId, username: principal.username, token_id: principal.tokenId } : null,
    requestId: res.locals.requestId ?? null,
    ip: req.ip ?? req.socket.remoteAddress ?? null,
    project: project ?? null,
  };
};

type AnyResult = Pick<CommandResult<unknown, DomainEvent>, 'events' | 'append'>;

/**
 * Waits until the projections that handle the appended events have caught up with the
 * last of them, and sets X-Event-Position. Past the bounded wait the command still
 * answers (its events are stored; a 5xx would invite a retry of something done), with a
 * warning in the log.
 */
export const settle = async (
  kit: CommandKit, res: Response, results: readonly (AnyResult | null | undefined)[],
  opts: {
    /**
     * For writes that take a credential away (revoke, deactivate, a new password): their
     * effect IS the read model, which authentication reads, so answering 2xx before it
     * caught up would be a lie. Past the wait they answer 503 TIMEOUT instead; the events
     * are stored and take effect moments later.
     */
    strict?: boolean;
  } = {},
): Promise<Position | null> => {
  const appended = results.filter((r): r is AnyResult & { append: NonNullable<AnyResult['append']> } => !!r?.append);
  if (appended.length === 0) return null;
  const position = appended.map((r) => r.append.position).reduce((a, b) => (comparePositions(a, b) >= 0 ? a : b));
  const eventTypes = [...new Set(appended.flatMap((r) => r.events.map((e) => e.type)))];
  try {
    await kit.whenCaughtUp(position, { eventTypes, timeoutMs: kit.readYourWritesTimeoutMs ?? 5000 });
  } catch (err) {
    if (!(err instanceof TimeoutError) || opts.strict) throw err;
    kit.logger?.warn({ err: err.message, position: formatPosition(position) }, 'answering a command before its read models caught up');
  }
  res.setHeader(EVENT_POSITION_HEADER, formatPosition(position));
  return position;
};

/**
 * Answers with a resource as its read model shows it after the write: its ETag, and for a
 * 201 its Location; `notFound` when it is gone (deleted meanwhile).
 */
export const answerResource = (
  res: Response, found: { view: unknown; revision: bigint } | null, o: { status: number; location: string; notFound: () => Error },
): void => {
  if (!found) throw o.notFound();
  setEtag(res, found.revision);
  if (o.status === 201) res.setHeader('Location', o.location);
  res.status(o.status).json(found.view);
};

// Control characters and lone UTF-16 surrogates cannot be stored in PostgreSQL text or
// jsonb (NUL) or are never what a person typed; refused at the edge with a clear message.
const CONTROL = /[\u0000-\u001f\u007f]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** A string a person could have typed: no control characters, well-formed Unicode; trimmed. */
export const PlainText = (min: number, max: number) =>
  z.string().trim().min(min).max(max)
    .refine((s) => !CONTROL.test(s) && !LONE_SURROGATE.test(s), 'must not contain control characters or invalid Unicode');
