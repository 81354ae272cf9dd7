// The composition root: the one place that sees every layer and wires them together.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import express from 'express';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../infra/config.ts';
import { acquireDataDirLock } from '../infra/dataDirLock.ts';
import { openEmbeddedDatabase, openServerDatabase, ping, type Database } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { createEsdbEventStore } from '../infra/eventStore/esdbEventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import { formatPosition } from '../infra/eventStore/position.ts';
import { createProjectionRuntime, type ProjectionRuntime } from '../projections/projectionRuntime.ts';
import { streamCatalogProjection } from '../projections/streamCatalog.ts';
import { healthRouter } from '../read-api/health.ts';

export const VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;

export const projectors = [streamCatalogProjection];

export type Kernel = {
  database: Database;
  store: EventStore;
  runtime: ProjectionRuntime;
  close(): Promise<void>;
};

const requireEventStoreUrl = (config: Config): string => {
  if (!config.eventStoreUrl) throw new ConfigError('EVENT_STORE=esdb needs EVENTSTORE_URL (esdb://host:2113?tls=false, or a cluster string)');
  return config.eventStoreUrl;
};

/** Database, migrations, event store and projection runtime (not started). */
export const openKernel = async (config: Config, logger: Logger): Promise<Kernel> => {
  const embedded = !config.databaseUrl;
  const lock = embedded ? await acquireDataDirLock(config.dataDir) : null;
  try {
    const database = embedded
      ? await openEmbeddedDatabase({ dataDir: join(config.dataDir, 'pgdata') })
      : openServerDatabase({ url: config.databaseUrl! });
    const applied = await migrateToLatest(database);
    if (applied.length > 0) logger.info({ migrations: applied }, 'database migrated');
    // Events on EventStoreDB when asked; the read models (and checkpoints) stay on PostgreSQL/PGlite.
    const store = config.eventStore === 'esdb'
      ? await createEsdbEventStore(requireEventStoreUrl(config))
      : await createPostgresEventStore(database);
    const runtime = createProjectionRuntime({ database, store, projectors, logger });
    return {
      database,
      store,
      runtime,
      async close() {
        await runtime.stop();
        await store.close();
        await database.close();
        await lock?.release();
      },
    };
  } catch (err) {
    await lock?.release();
    throw err;
  }
};

/**
 * Lag of each projection in events, counted up to a cap so the probe stays cheap. Counted
 * in the database's events table, so null when the events live on EventStoreDB.
 */
const projectionDetails = async (kernel: Kernel, countLag: boolean) => {
  const out = [];
  for (const s of kernel.runtime.status()) {
    if (!countLag) {
      out.push({ name: s.name, version: s.version, state: s.state, position: formatPosition(s.position), lag_events: null, last_error: s.lastError });
      continue;
    }
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from (select 1 from events
      where (transaction_id, global_position) > (${s.position.commit.toString()}::xid8, ${s.position.prepare.toString()}::bigint)
      limit 100001) t`.execute(kernel.database.db);
    out.push({ name: s.name, version: s.version, state: s.state, position: formatPosition(s.position), lag_events: rows[0]!.n, last_error: s.lastError });
  }
  return out;
};

export type RunningServer = { server: Server; url: string; kernel: Kernel; close(): Promise<void> };

export const startServer = async (config: Config, logger: Logger): Promise<RunningServer> => {
  const kernel = await openKernel(config, logger);
  await kernel.runtime.start();
  const app = express();
  app.disable('x-powered-by');
  app.use(healthRouter({
    version: VERSION,
    checks: {
      database: () => ping(kernel.database),
      event_store: async () => void (await kernel.store.headPosition()),
    },
    details: async () => ({ projections: await projectionDetails(kernel, config.eventStore === 'postgres') }),
  }));
  app.use((_req, res) => {
    res.status(404).type('application/problem+json').json({ type: 'about:blank', title: 'Not Found', status: 404, code: 'NOT_FOUND', detail: 'no such endpoint' });
  });
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  let closing: Promise<void> | null = null;
  return {
    server,
    url,
    kernel,
    close: () =>
      (closing ??= (async () => {
        // Drain: stop accepting, let in-flight requests finish, then stop the kernel.
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
        await kernel.close();
      })()),
  };
};
