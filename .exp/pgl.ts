import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openEmbeddedDatabase } from '/work/main/infra/db/database.ts';
import { migrateToLatest } from '/work/main/infra/db/migrate.ts';
import { createPostgresEventStore } from '/work/main/infra/eventStore/postgresEventStore.ts';
import { createProjectionRuntime } from '/work/main/projections/projectionRuntime.ts';
import { projectors } from '/work/main/bin/app.ts';
import { nodeCommandRunner, nodeIdFor, recordSnapshot } from '/work/main/commands/nodes.ts';
import { createSnapshotRecorder } from '/work/main/commands/snapshotRecorder.ts';

const disk = process.argv[2] === 'disk';
const database = await openEmbeddedDatabase(disk ? { dataDir: join(mkdtempSync(join(tmpdir(), 'pgl-')), 'pg') } : {});
await migrateToLatest(database);
const store = await createPostgresEventStore(database);
const runtime = createProjectionRuntime({ database, store, projectors: process.argv[3] === 'noproj' ? [] : projectors });
await runtime.start();
const ids: string[] = [];
for (let i = 0; i < 50; i++) {
  const nodeId = nodeIdFor('default', `n${i}`); ids.push(nodeId);
  await nodeCommandRunner(store)(nodeId, { type: 'RegisterNode', data: { nodeId, name: `n${i}`, project: 'default', address: '127.0.0.1', pubkey: null, labels: {}, check: { type: 'push', url: null, port: null, expectStatus: null, timeoutMs: 5000, intervalS: 3600, retries: 0 }, active: true } }, {});
}
const rec = createSnapshotRecorder(store);
let n = 0;
const t = performance.now();
const N = 2000;
let last: any;
await Promise.all(Array.from({ length: 50 }, async (_, w) => {
  while (n < N) { n++; last = await recordSnapshot({ recorder: rec }, { nodeId: ids[w]!, name: 'x', project: 'default', decommissioned: false }, ids[w]!, { status: 'up', latencyMs: 1, version: null, metrics: { a: 1 }, observedAt: null, source: 'push', error: null }, {}); }
}));
const tAppend = performance.now() - t;
if (process.argv[3] !== 'noproj') await runtime.whenCaughtUp(last.position, { timeoutMs: 120000 });
const total = performance.now() - t;
console.log(disk ? 'disk' : 'memory', process.argv[3] ?? '', 'appended/s', Math.round(N / tAppend * 1000), 'projected/s', Math.round(N / total * 1000), rec.stats());
await runtime.stop(); await store.close(); await database.close();
