// kill -9 during appends: nothing acknowledged is lost, and the projection restarts
// from its checkpoint and converges on exactly the rows of a full replay.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { openEmbeddedDatabase, openServerDatabase, type Database } from '../../infra/db/database.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { createProjectionRuntime } from '../../projections/projectionRuntime.ts';
import { streamCatalogProjection } from '../../projections/streamCatalog.ts';
import { freshDatabaseUrl, FLAVOURS } from '../support/databases.ts';

const CHILD = new URL('../support/crashAppender.ts', import.meta.url).pathname;

/** Runs the appender until it has acknowledged `count` appends, then SIGKILLs it; returns the acked event ids. */
const appendThenKill = (target: string, count: number): Promise<string[]> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, target], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acked: string[] = [];
    let appends = 0;
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('ack ')) return;
      acked.push(...line.slice(4).split(','));
      if (++appends === count) child.kill('SIGKILL');
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve(acked);
      else reject(new Error(`appender exited early (${code}): ${stderr}`));
    });
  });

const catalogRows = (database: Database) =>
  database.db.selectFrom('stream_catalog').selectAll().orderBy('stream_id').execute();

for (const flavour of FLAVOURS) {
  describe(`crash recovery (${flavour})`, () => {
    const dirs: string[] = [];
    after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

    it('loses no acknowledged event to kill -9 and converges on the rows of a full replay', async function () {
      this.timeout(120_000);
      let target: string;
      if (flavour === 'postgres') target = await freshDatabaseUrl();
      else dirs.push((target = mkdtempSync(join(tmpdir(), 'opl-crash-'))));
      const acked = await appendThenKill(target, 300);

      const database = flavour === 'postgres' ? openServerDatabase({ url: target }) : await openEmbeddedDatabase({ dataDir: target });
      const store = await createPostgresEventStore(database);
      try {
        const stored = new Set((await database.db.selectFrom('events').select('event_id').execute()).map((r) => r.event_id));
        const lost = acked.filter((id) => !stored.has(id));
        expect(lost, `${lost.length} acknowledged events lost`).to.deep.equal([]);
        expect(stored.size).to.be.at.least(acked.length);

        // Restart from the checkpoint the crash left behind.
        const runtime = createProjectionRuntime({ database, store, projectors: [streamCatalogProjection] });
        await runtime.start();
        await runtime.whenCaughtUp(await store.headPosition(), { timeoutMs: 30_000 });
        await runtime.stop();
        const resumed = await catalogRows(database);
        const total = resumed.reduce((n, r) => n + Number(r.event_count), 0);
        expect(total).to.equal(stored.size);

        await runtime.replay('stream_catalog');
        expect(await catalogRows(database)).to.deep.equal(resumed);
      } finally {
        await store.close();
        await database.close();
      }
    });
  });
}
