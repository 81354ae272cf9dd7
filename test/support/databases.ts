// Databases for tests: a fresh database on the shared throwaway server, or a PGlite
// started from a dump of an initialised one (initdb in WASM takes seconds; a load < 1 s).
import { randomUUID } from 'node:crypto';
import { openEmbeddedDatabase, openServerDatabase, type Database } from '../../infra/db/database.ts';
import { migrateToLatest } from '../../infra/db/migrate.ts';
import { createDatabase } from './postgresServer.ts';
import { postgresServer } from './rootHooks.ts';

export type Flavour = 'postgres' | 'pglite';
export const FLAVOURS: readonly Flavour[] = ['postgres', 'pglite'];

let pgliteTemplate: Promise<Blob> | null = null;
const template = (): Promise<Blob> =>
  (pgliteTemplate ??= (async () => {
    const fresh = await openEmbeddedDatabase();
    await migrateToLatest(fresh);
    const dump = await fresh.pglite.dumpDataDir('none');
    await fresh.close();
    return dump;
  })());

/** A fresh database with the schema migrated. */
export const freshDatabase = async (flavour: Flavour, opts: { poolSize?: number } = {}): Promise<Database> => {
  if (flavour === 'pglite') return openEmbeddedDatabase({ loadDataDir: await template() });
  return (await freshServerDatabase(opts)).database;
};

/** A fresh, migrated database on the server, with its URL (for tests that open raw `pg` clients). */
export const freshServerDatabase = async (opts: { poolSize?: number } = {}): Promise<{ database: Database; url: string }> => {
  const server = await postgresServer();
  const url = await createDatabase(server, `t_${randomUUID().replace(/-/g, '')}`);
  const database = openServerDatabase({ url, poolSize: opts.poolSize ?? 10 });
  await migrateToLatest(database);
  return { database, url };
};

/** URL of a fresh, empty (unmigrated) server database, for tests that spawn processes. */
export const freshDatabaseUrl = async (): Promise<string> => {
  const server = await postgresServer();
  return createDatabase(server, `t_${randomUUID().replace(/-/g, '')}`);
};
