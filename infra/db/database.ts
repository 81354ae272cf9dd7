// One handle over either PostgreSQL flavour: a server through `pg`, or PGlite in-process.
// Everything above this file speaks kysely + `sql` and never asks which one it got,
// except through `kind` for the few places where PGlite's single connection matters.
import { CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { PGliteDialect } from 'kysely-pglite-dialect';
import type { Tables } from './tables.ts';

export type DatabaseKind = 'postgres' | 'pglite';

export interface AdvisoryLock {
  release(): Promise<void>;
  /** Resolves when the lock is lost (its connection died); never resolves on a clean release. */
  readonly lost: Promise<void>;
}

export interface Database {
  readonly kind: DatabaseKind;
  readonly db: Kysely<Tables>;
  /**
   * NOTIFY in a transaction of its own that does not wait for the disk: a notification
   * is a wake-up, not data, and PostgreSQL holds a global lock from NOTIFY to commit.
   */
  notify(channel: string, payload: string): Promise<void>;
  /**
   * One statement on the hot path, outside kysely: on a server it runs as a named
   * prepared statement (parsed and planned once per connection). On PGlite it goes
   * through kysely's connection queue so that it never lands inside another's transaction.
   */
  hotQuery<R>(name: string, text: string, values: readonly unknown[]): Promise<R[]>;
  /** Subscribe to a NOTIFY channel; returns the unsubscribe function. */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  /** A session-level advisory lock held on a connection of its own, or null when another session holds it. */
  tryAdvisoryLock(key: string): Promise<AdvisoryLock | null>;
  close(): Promise<void>;
}

// int8 arrives as a string from node-pg; keep it a string (we parse positions to bigint
// ourselves) but make `count(*)`-style results usable by returning numbers for int4.
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (v) => Number(v));

export type ServerOptions = { url: string; poolSize?: number; applicationName?: string };

export const openServerDatabase = (opts: ServerOptions): Database => {
  const poolConfig = { connectionString: opts.url, application_name: opts.applicationName ?? 'opsledger' };
  const pool = new pg.Pool({ ...poolConfig, max: opts.poolSize ?? 10 });
  // An idle client that errors (server restart) must not crash the process.
  pool.on('error', () => undefined);
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });

  let listener: Promise<pg.Client> | null = null;
  const handlers = new Map<string, Set<(payload: string) => void>>();
  const connectListener = async (): Promise<pg.Client> => {
    // Named so that other instances can tell that someone listens (see othersListen).
    const client = new pg.Client({ ...poolConfig, application_name: LISTENER_APP });
    client.on('notification', (n) => handlers.get(n.channel)?.forEach((h) => h(n.payload ?? '')));
    client.on('error', () => {
      // Reconnect on the next tick and re-LISTEN; subscribers also run a slow safety poll.
      listener = null;
      if (handlers.size > 0) setTimeout(() => void ensureListening().catch(() => undefined), 250);
    });
    await client.connect();
    for (const channel of handlers.keys()) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    return client;
  };
  const ensureListening = (): Promise<pg.Client> => (listener ??= connectListener());
  const locks = new Set<pg.Client>();

  // A NOTIFY is a transaction of its own; with no other Opsledger process listening on
  // this database (one instance: the common case) it would only reach this process, which
  // can hand the payload to its own listeners directly. Whether anyone else listens is looked up at most
  // once a second; a listener that appears meanwhile is covered by its safety poll.
  let others = { known: true, at: 0 };
  let checking: Promise<void> | null = null;
  const othersListen = async (client: pg.Client): Promise<boolean> => {
    if (Date.now() - others.at > 1000) {
      checking ??= client.query(
        `select exists (select 1 from pg_stat_activity where application_name = $1 and datname = current_database()
           and pid <> pg_backend_pid()) as others`, [LISTENER_APP],
      ).then((r) => { others = { known: Boolean(r.rows[0].others), at: Date.now() }; }, () => { others = { known: true, at: Date.now() }; })
        .finally(() => { checking = null; });
      await checking;
    }
    return others.known;
  };

  return {
    kind: 'postgres',
    db,
    // On the listener's own connection: notifications never wait for a pooled one.
    async notify(channel, payload) {
      const client = await ensureListening();
      if (!(await othersListen(client))) {
        // Still reach this process's other listeners on the channel, as the NOTIFY would.
        handlers.get(channel)?.forEach((h) => h(payload));
        return;
      }
      await client.query(NOTIFY_SQL, [channel, payload]);
    },
    async hotQuery<R>(name: string, text: string, values: readonly unknown[]) {
      return (await pool.query({ name, text, values: [...values] })).rows as R[];
    },
    async listen(channel, onPayload) {
      const fresh = !handlers.has(channel);
      if (fresh) handlers.set(channel, new Set());
      handlers.get(channel)!.add(onPayload);
      const client = await ensureListening();
      if (fresh) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      return async () => {
        handlers.get(channel)?.delete(onPayload);
      };
    },
    async tryAdvisoryLock(key) {
      const client = new pg.Client(poolConfig);
      let markLost: () => void = () => undefined;
      const lost = new Promise<void>((resolve) => (markLost = resolve));
      client.on('error', () => markLost());
      client.on('end', () => markLost());
      await client.connect();
      const { rows } = await client.query('select pg_try_advisory_lock(hashtextextended($1, 0)) as ok', [key]);
      if (!rows[0].ok) {
        await client.end();
        return null;
      }
      locks.add(client);
      return {
        lost,
        async release() {
          locks.delete(client);
          client.removeAllListeners('end');
          await client.end().catch(() => undefined);
        },
      };
    },
    async close() {
      for (const c of locks) await c.end().catch(() => undefined);
      if (listener) await (await listener.catch(() => null))?.end().catch(() => undefined);
      handlers.clear();
      await db.destroy();
    },
  };
};

const INT8_OID = 20;

export type EmbeddedOptions = { dataDir?: string; loadDataDir?: Blob };

/** PGlite: one process, one connection. `dataDir` undefined means in memory. */
export const openEmbeddedDatabase = async (opts: EmbeddedOptions = {}): Promise<Database & { pglite: PGlite }> => {
  // int8 as a string, as node-pg gives it, so that read models look the same on both.
  const pglite = await PGlite.create({ dataDir: opts.dataDir, loadDataDir: opts.loadDataDir, parsers: { [INT8_OID]: (v: string) => v } });
  const db = new Kysely<Tables>({ dialect: new PGliteDialect(pglite) });
  const handlers = new Map<string, Set<(payload: string) => void>>();
  return {
    kind: 'pglite',
    db,
    async hotQuery<R>(_name: string, text: string, values: readonly unknown[]) {
      return (await db.executeQuery<R>(CompiledQuery.raw(text, [...values]))).rows;
    },
    pglite,
    // The data directory is this process's alone (infra/dataDirLock.ts), so every
    // notification is one of ours: handed to the listeners directly, not through a
    // statement on the single connection that appends and projects.
    async notify(channel, payload) {
      handlers.get(channel)?.forEach((h) => h(payload));
    },
    async listen(channel, onPayload) {
      if (!handlers.has(channel)) handlers.set(channel, new Set());
      handlers.get(channel)!.add(onPayload);
      return async () => {
        handlers.get(channel)?.delete(onPayload);
      };
    },
    // A lock file (infra/dataDirLock.ts) already makes this process the only one on the
    // data directory, so every lock asked for here is ours; on PGlite's single
    // connection a session lock would be re-entrant anyway.
    async tryAdvisoryLock() {
      return { lost: new Promise<void>(() => undefined), release: async () => undefined };
    },
    async close() {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
};

const LISTENER_APP = 'opsledger-listener';
const NOTIFY_SQL = `select set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`;
/** A cheap round trip, used by readiness checks. */
export const ping = async (database: Database): Promise<void> => {
  await sql`select 1`.execute(database.db);
};
