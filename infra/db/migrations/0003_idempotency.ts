import type { Kysely } from 'kysely';

// Filled in by the HTTP kit (Idempotency-Key): placeholder so the migration list is stable.
export async function up(_db: Kysely<unknown>): Promise<void> {}
export async function down(_db: Kysely<unknown>): Promise<void> {}
