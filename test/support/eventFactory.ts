// Builders for NewEvents and stream names in tests.
import { randomUUID } from 'node:crypto';
import type { EventMetadata, NewEvent } from '../../infra/eventStore/eventStore.ts';

export const metadata = (overrides: Partial<EventMetadata> = {}): EventMetadata => ({
  actor: { user_id: null, username: 'test' },
  request_id: null,
  ip: null,
  project: null,
  correlation_id: null,
  causation_id: null,
  occurred_at: new Date().toISOString(),
  schema_version: 1,
  ...overrides,
});

/** One valid event; every call gets a fresh id. */
export const newEvent = (
  type = 'TestHappened',
  data: Record<string, unknown> = {},
  meta: Partial<EventMetadata> = {},
): NewEvent => ({ id: randomUUID(), type, data, metadata: metadata(meta) });

/** `n` valid events, `data` numbered by `seq` unless given. */
export const newEvents = (n: number, type = 'TestHappened', data: (i: number) => Record<string, unknown> = (i) => ({ seq: i })): NewEvent[] =>
  Array.from({ length: n }, (_, i) => newEvent(type, data(i)));

/** A stream name no other test uses. */
export const uniqueStream = (prefix = 'test'): string => `${prefix}-${randomUUID()}`;
