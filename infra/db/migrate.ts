// Migrations are code (a static list, no directory scanning) so that they travel with
// the build and run identically on PGlite and on a server.
import { Migrator, type Migration, type MigrationProvider } from 'kysely';
import type { Database } from './database.ts';
import * as m0001 from './migrations/0001_eventStore.ts';
import * as m0002 from './migrations/0002_projections.ts';
import * as m0003 from './migrations/0003_idempotency.ts';
import * as m0004 from './migrations/0004_vault.ts';
import * as m0005 from './migrations/0005_identity.ts';
import * as m0006 from './migrations/0006_monitoring.ts';
import * as m0007 from './migrations/0007_appendMany.ts';
import * as m0008 from './migrations/0008_jobs.ts';
import * as m0009 from './migrations/0009_proxies.ts';

const migrations: Record<string, Migration> = {
  '0001_eventStore': m0001,
  '0002_projections': m0002,
  '0003_idempotency': m0003,
  '0004_vault': m0004,
  '0005_identity': m0005,
  '0006_monitoring': m0006,
  '0007_appendMany': m0007,
  '0008_jobs': m0008,
  '0009_proxies': m0009,
};

const provider: MigrationProvider = { getMigrations: async () => migrations };

export class MigrationError extends Error {
  readonly code = 'MIGRATION_FAILED';
}

/** Brings the schema up to date; safe to call from several instances at once (kysely locks). */
export const migrateToLatest = async (database: Database): Promise<string[]> => {
  const migrator = new Migrator({ db: database.db, provider });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new MigrationError(`migration ${failed} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
};
