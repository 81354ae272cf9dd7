// Alert outbox rows (SPEC §5, the webhook alerts): written in a projection's own
// transaction, one per channel of the project that listens to the event, keyed by the
// event that caused them so that a redelivered batch queues nothing twice. The outbox is
// not a projection table: a rebuild leaves it alone, and only recent causes queue, so a
// rebuild never re-sends an old alert. workers/alertNotifier.ts delivers them.
import { sql, type Transaction } from 'kysely';
import type { AlertEvent } from '../domain/monitoring.ts';
import type { Tables } from '../infra/db/tables.ts';

/** Outbox rows are made only for changes this recent. */
export const ALERT_HORIZON_MS = 60 * 60 * 1000;

export const queueAlert = async (
  trx: Transaction<Tables>, key: string, project: string, event: AlertEvent, atMs: number, payload: object,
): Promise<void> => {
  if (Date.now() - atMs > ALERT_HORIZON_MS) return;
  const body = JSON.stringify({ event, occurred_at: new Date(atMs).toISOString(), project, ...payload });
  await sql`insert into alert_deliveries (id, channel_id, event, payload, next_attempt_at, created_at)
    select ${key} || ':' || c.id::text, c.id, ${event}, ${body}::jsonb, now(), now()
      from alert_channels c
     where c.project = ${project} and not c.deleted and c.events ? ${event}
    on conflict (id) do nothing`.execute(trx);
};
