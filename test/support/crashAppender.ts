// Child process for the kill -9 test: appends as fast as it can (4 writers, single and
// batched appends) with the projection runtime running, and prints one `ack` line per
// acknowledged append. The parent kills it with SIGKILL mid-flight.
import { randomUUID } from 'node:crypto';
import { openEmbeddedDatabase, openServerDatabase } from '../../infra/db/database.ts';
import { migrateToLatest } from '../../infra/db/migrate.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { createProjectionRuntime } from '../../projections/projectionRuntime.ts';
import { streamCatalogProjection } from '../../projections/streamCatalog.ts';

const [target] = process.argv.slice(2);
if (!target) throw new Error('usage: crashAppender.ts <postgres url | pglite data dir>');
const database = target.startsWith('postgres') ? openServerDatabase({ url: target, poolSize: 6 }) : await openEmbeddedDatabase({ dataDir: target });
await migrateToLatest(database);
const store = await createPostgresEventStore(database);
const runtime = createProjectionRuntime({ database, store, projectors: [streamCatalogProjection], batchSize: 20 });
await runtime.start();
process.stdout.write('ready\n');

const writer = async (w: number) => {
  for (let i = 0; ; i++) {
    const size = i % 3 === 0 ? 5 : 1;
    const events = Array.from({ length: size }, (_, k) => ({
      id: randomUUID(), type: k % 2 ? 'Beta' : 'Alpha', data: { w, i, k }, metadata: { occurred_at: new Date().toISOString(), schema_version: 1 },
    }));
    await store.append(`crash-${w}-${i % 7}`, events, { expectedRevision: 'any' });
    process.stdout.write(`ack ${events.map((e) => e.id).join(',')}\n`);
  }
};
await Promise.all([0, 1, 2, 3].map(writer));
