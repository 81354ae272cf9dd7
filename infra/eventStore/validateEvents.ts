import { InvalidEventError } from '../errors.ts';
import type { NewEvent } from './eventStore.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TYPE = /^[A-Za-z][A-Za-z0-9._-]{0,127}$/;
const STREAM = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,255}$/;
export const MAX_EVENTS_PER_APPEND = 10_000;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

export const validateStreamName = (stream: unknown): string => {
  if (typeof stream !== 'string' || !STREAM.test(stream)) {
    throw new InvalidEventError(`invalid stream name ${JSON.stringify(stream)}: 1-256 characters of [A-Za-z0-9._:@-]`);
  }
  return stream;
};

/**
 * Checks a whole batch before anything is written and returns it as the JSON text the
 * append function takes. One bad event rejects the batch: nothing half-written.
 */
export const serializeEvents = (events: readonly NewEvent[]): string => {
  if (!Array.isArray(events) || events.length === 0) throw new InvalidEventError('an append needs at least one event');
  if (events.length > MAX_EVENTS_PER_APPEND) {
    throw new InvalidEventError(`an append takes at most ${MAX_EVENTS_PER_APPEND} events, got ${events.length}`);
  }
  const ids = new Set<string>();
  events.forEach((e, i) => {
    const where = `event ${i}`;
    if (!isPlainObject(e)) throw new InvalidEventError(`${where} is not an object`, { index: i });
    if (typeof e.id !== 'string' || !UUID.test(e.id)) throw new InvalidEventError(`${where}: id must be a UUID`, { index: i });
    if (ids.has(e.id.toLowerCase())) throw new InvalidEventError(`${where}: id ${e.id} appears twice in the batch`, { index: i });
    ids.add(e.id.toLowerCase());
    if (typeof e.type !== 'string' || !TYPE.test(e.type)) {
      throw new InvalidEventError(`${where}: type must match ${TYPE.source}`, { index: i });
    }
    if (!isPlainObject(e.data)) throw new InvalidEventError(`${where} (${e.type}): data must be a JSON object`, { index: i });
    if (!isPlainObject(e.metadata)) throw new InvalidEventError(`${where} (${e.type}): metadata must be an object`, { index: i });
    if (typeof e.metadata.occurred_at !== 'string' || Number.isNaN(Date.parse(e.metadata.occurred_at))) {
      throw new InvalidEventError(`${where} (${e.type}): metadata.occurred_at must be an ISO 8601 time`, { index: i });
    }
    const version = e.metadata.schema_version;
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
      throw new InvalidEventError(`${where} (${e.type}): metadata.schema_version must be a positive integer`, { index: i });
    }
  });
  try {
    return JSON.stringify(events.map((e) => ({ id: e.id, type: e.type, data: e.data, metadata: e.metadata })));
  } catch (err) {
    // BigInt, cycles, and the like: not storable as JSON.
    throw new InvalidEventError(`events are not JSON-serializable: ${(err as Error).message}`);
  }
};
