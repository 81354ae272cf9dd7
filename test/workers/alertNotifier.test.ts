// The alert notifier against real databases, a real vault and a real webhook receiver on
// loopback: what arrives, retries, final failure, restarts, several instances, cancellation.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { Subject } from 'rxjs';
import { openServerDatabase, type Database } from '../../infra/db/database.ts';
import { createVault, type Vault } from '../../infra/vault.ts';
import { verifyWebhook, WEBHOOK_HEADERS } from '../../infra/webhook.ts';
import { createAlertNotifier, defaultBackoffMs, type AlertNotifier } from '../../workers/alertNotifier.ts';
import { FLAVOURS, freshDatabase, freshServerDatabase } from '../support/databases.ts';
import { waitFor } from '../support/waitFor.ts';

type Request = { headers: IncomingHttpHeaders; body: string };
/** What the receiver does with a request: answer a status now, or hold the response. */
type Answer = (req: Request, index: number, res: ServerResponse) => number | 'hold';

/** A webhook receiver on 127.0.0.1 that records every request. */
const startReceiver = async (answer: Answer = () => 200) => {
  const requests: Request[] = [];
  const held: ServerResponse[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      requests.push(r);
      const status = answer(r, requests.length - 1, res);
      if (status === 'hold') held.push(res);
      else res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: `http://127.0.0.1:${port}/alerts`,
    requests,
    held,
    ids: () => requests.map((r) => r.headers[WEBHOOK_HEADERS.delivery]),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
};
type Receiver = Awaited<ReturnType<typeof startReceiver>>;

const SECRET = 'whsec_notifier-test-secret';
const PAYLOAD = { event: 'node.down', node: { id: 'n-1', name: 'orch-1', project: 'default' }, at: '2025-01-01T00:00:00.000Z' };

/** A mutable clock: tests move time instead of sleeping. */
const clock = (start = new Date('2025-01-01T00:00:00.000Z')) => {
  let t = start.getTime();
  return { now: () => new Date(t), advance: (ms: number) => void (t += ms), at: () => t };
};

const captureLogs = () => {
  const lines: Array<{ level: string; o: object; msg?: string }> = [];
  return {
    lines,
    logger: {
      warn: (o: object, msg?: string) => void lines.push({ level: 'warn', o, msg }),
      info: (o: object, msg?: string) => void lines.push({ level: 'info', o, msg }),
    },
  };
};

describe('alert notifier backoff', () => {
  it('doubles from 1 s, jitters by ±20 % and stops growing at 5 min', () => {
    expect(defaultBackoffMs(1, () => 0.5)).to.equal(1000);
    expect(defaultBackoffMs(1, () => 0)).to.equal(800);
    expect(defaultBackoffMs(1, () => 1)).to.equal(1200);
    expect(defaultBackoffMs(4, () => 0.5)).to.equal(8000);
    expect(defaultBackoffMs(9, () => 0.5)).to.equal(256_000);
    expect(defaultBackoffMs(10, () => 0.5)).to.equal(300_000);
    expect(defaultBackoffMs(1000, () => 1)).to.equal(300_000);
    expect(defaultBackoffMs(1000, () => 0)).to.equal(240_000);
  });
});

for (const flavour of FLAVOURS) {
  describe(`alert notifier (${flavour})`, () => {
    let database: Database;
    let vault: Vault;
    const cleanups: Array<() => Promise<void>> = [];

    beforeEach(async () => {
      database = await freshDatabase(flavour);
      vault = createVault(database.db, randomBytes(32));
    });
    afterEach(async () => {
      // Notifiers first, then receivers, then databases.
      for (const c of cleanups.splice(0)) await c();
      await database?.close();
    });

    const receiver = async (answer?: Answer): Promise<Receiver> => {
      const r = await startReceiver(answer);
      cleanups.push(async () => {
        r.held.forEach((res) => res.destroy());
        await r.close();
      });
      return r;
    };
    const notifier = (deps: Partial<Parameters<typeof createAlertNotifier>[0]> = {}, db: Database = database): AlertNotifier => {
      const n = createAlertNotifier({ db: db.db, vault, ...deps });
      cleanups.unshift(async () => n.stop());
      return n;
    };

    const addChannel = async (url: string, o: { deleted?: boolean; secretRef?: string } = {}): Promise<string> => {
      const id = randomUUID();
      const secretRef = o.secretRef ?? (await vault.put(`alert-channel:${id}`, 'webhook-secret', SECRET));
      await database.db.insertInto('alert_channels').values({
        id, project: 'default', name: `hook-${id.slice(0, 8)}`, url, events: JSON.stringify(['node.down', 'node.up']),
        secret_ref: secretRef, deleted: o.deleted ?? false, created_at: new Date(), revision: 0,
      }).execute();
      return id;
    };
    const addDelivery = async (channelId: string, o: { id?: string; at?: Date; payload?: object } = {}): Promise<string> => {
      const id = o.id ?? `node.down:${randomUUID()}:${channelId}`;
      const at = o.at ?? new Date('2025-01-01T00:00:00.000Z');
      await database.db.insertInto('alert_deliveries').values({
        id, channel_id: channelId, event: 'node.down', payload: JSON.stringify(o.payload ?? PAYLOAD),
        state: 'pending', attempts: 0, next_attempt_at: at, created_at: at, last_error: null, last_status: null, delivered_at: null,
      }).execute();
      return id;
    };
    const row = (id: string) => database.db.selectFrom('alert_deliveries').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

    it('sends the payload with its delivery id, signed over the body as sent, and marks it delivered once', async () => {
      const r = await receiver(() => 202);
      const id = await addDelivery(await addChannel(r.url));
      const time = clock(new Date('2025-01-01T00:00:05.000Z'));
      const n = notifier({ now: time.now });

      expect(await n.runOnce()).to.deep.equal({ delivered: 1, failed: 0, retried: 0, cancelled: 0 });
      expect(r.requests).to.have.length(1);
      const { headers, body } = r.requests[0]!;
      expect(headers).to.include({
        'content-type': 'application/json', 'user-agent': 'opsledger-webhook/1',
        [WEBHOOK_HEADERS.event]: 'node.down', [WEBHOOK_HEADERS.delivery]: id, [WEBHOOK_HEADERS.timestamp]: String(time.at() / 1000),
      });
      expect(verifyWebhook(SECRET, Number(headers[WEBHOOK_HEADERS.timestamp]), body, String(headers[WEBHOOK_HEADERS.signature]))).to.equal(true);
      expect(JSON.parse(body)).to.deep.equal({ id, ...PAYLOAD });
      expect(Object.keys(JSON.parse(body))[0]).to.equal('id');

      const after = await row(id);
      expect(after).to.include({ state: 'delivered', attempts: 1, last_status: 202, last_error: null });
      expect(after.delivered_at?.getTime()).to.equal(time.at());
      expect(await n.runOnce()).to.deep.equal({ delivered: 0, failed: 0, retried: 0, cancelled: 0 });
      expect(r.requests).to.have.length(1);
    });

    it('retries a failing receiver after its backoff, then delivers exactly once', async () => {
      const r = await receiver((_req, i) => [500, 503][i] ?? 200);
      const id = await addDelivery(await addChannel(r.url));
      const time = clock();
      const n = notifier({ now: time.now, backoffMs: (attempt) => attempt * 60_000 });

      expect(await n.runOnce()).to.include({ retried: 1, delivered: 0 });
      expect(await row(id)).to.include({ state: 'pending', attempts: 1, last_status: 500, last_error: 'HTTP 500' });
      expect((await row(id)).next_attempt_at.getTime()).to.equal(time.at() + 60_000);

      // Not due yet: nothing is sent.
      time.advance(59_999);
      expect(await n.runOnce()).to.include({ retried: 0, delivered: 0 });
      expect(r.requests).to.have.length(1);

      time.advance(1);
      expect(await n.runOnce()).to.include({ retried: 1 });
      expect(await row(id)).to.include({ state: 'pending', attempts: 2, last_status: 503, last_error: 'HTTP 503' });
      expect((await row(id)).next_attempt_at.getTime()).to.equal(time.at() + 120_000);

      time.advance(120_000);
      expect(await n.runOnce()).to.include({ delivered: 1 });
      expect(await row(id)).to.include({ state: 'delivered', attempts: 3, last_status: 200, last_error: null });

      time.advance(3_600_000);
      expect(await n.runOnce()).to.include({ delivered: 0, retried: 0 });
      expect(r.ids()).to.deep.equal([id, id, id]);
      expect(n.details()).to.include({ delivered_total: 1, failed_total: 0, in_flight: 0, pending: 0 });
    });

    it('fails a row after maxAttempts and logs neither the secret nor the credentials or query of its URL', async () => {
      const r = await receiver(() => 500);
      const url = `http://hook:pw-in-url@127.0.0.1:${r.port}/alerts?token=token-in-url`;
      const id = await addDelivery(await addChannel(url));
      const logs = captureLogs();
      const n = notifier({ maxAttempts: 3, backoffMs: () => 0, logger: logs.logger });

      expect(await n.runOnce()).to.include({ retried: 1 });
      expect(await n.runOnce()).to.include({ retried: 1 });
      expect(await n.runOnce()).to.include({ failed: 1, retried: 0 });
      expect(await n.runOnce()).to.include({ failed: 0, retried: 0 });
      expect(r.requests).to.have.length(3);
      expect(r.requests[0]!.headers.authorization).to.equal(`Basic ${Buffer.from('hook:pw-in-url').toString('base64')}`);
      expect(await row(id)).to.include({ state: 'failed', attempts: 3, last_status: 500, last_error: 'HTTP 500' });
      expect(n.details()).to.include({ failed_total: 1, last_error: 'HTTP 500' });

      const warnings = logs.lines.filter((l) => l.level === 'warn');
      expect(warnings).to.have.length(1);
      expect(warnings[0]!.o).to.include({ delivery: id, url: `http://127.0.0.1:${r.port}`, attempts: 3, error: 'HTTP 500' });
      const logged = JSON.stringify(logs.lines);
      for (const secret of [SECRET, 'pw-in-url', 'token-in-url', '/alerts']) expect(logged).to.not.include(secret);
    });

    it('never sends a delivered row again after a restart, and the new instance delivers what is new', async () => {
      const r = await receiver();
      const channel = await addChannel(r.url);
      const first = await addDelivery(channel);
      expect(await notifier().runOnce()).to.include({ delivered: 1 });

      // A new instance on the same database, running in the background on its poll.
      const second = await addDelivery(channel);
      const restarted = notifier({ pollMs: 20 });
      await restarted.start();
      await waitFor(async () => (await row(second)).state === 'delivered', 'the second delivery');
      await restarted.stop();
      expect(r.ids()).to.deep.equal([first, second]);
      expect(restarted.details()).to.include({ delivered_total: 1, in_flight: 0 });
    });

    it('looks at once on a wake-up, and stop() waits for the delivery in flight', async () => {
      const r = await receiver(() => 'hold');
      const wakeups = new Subject<unknown>();
      // A poll too slow to matter: only the wake-up can make it look.
      const n = notifier({ wakeups, pollMs: 3_600_000 });
      await n.start();
      const id = await addDelivery(await addChannel(r.url));
      wakeups.next('projection changed');
      await waitFor(() => r.held.length === 1, 'the request to arrive');
      expect(n.details()).to.include({ in_flight: 1 });

      let stopped = false;
      const stopping = Promise.resolve(n.stop()).then(() => void (stopped = true));
      expect(await row(id)).to.include({ state: 'pending' });
      expect(stopped, 'stop() returned with a delivery in flight').to.equal(false);
      r.held[0]!.writeHead(200).end();
      await stopping;
      // Recorded before stop() returned: nothing is left leased.
      expect(await row(id)).to.include({ state: 'delivered', attempts: 1 });
      expect(n.details()).to.include({ in_flight: 0, delivered_total: 1 });
    });

    it('cancels, without sending, deliveries whose channel was deleted or never existed', async () => {
      const r = await receiver();
      const deleted = await addDelivery(await addChannel(r.url, { deleted: true }));
      const orphan = await addDelivery(randomUUID());
      expect(await notifier().runOnce()).to.deep.equal({ delivered: 0, failed: 0, retried: 0, cancelled: 2 });
      expect(await row(deleted)).to.include({ state: 'cancelled', attempts: 0, last_error: 'the channel was deleted' });
      expect(await row(orphan)).to.include({ state: 'cancelled', attempts: 0, last_error: 'the channel does not exist' });
      expect(r.requests).to.have.length(0);
    });

    it('fails, without sending, deliveries whose channel secret is missing or cannot be decrypted', async () => {
      const r = await receiver();
      const missing = await addDelivery(await addChannel(r.url, { secretRef: randomUUID() }));
      expect(await notifier().runOnce()).to.include({ failed: 1 });
      expect(await row(missing)).to.include({ state: 'failed', last_error: 'the channel secret is missing from the vault' });

      const undecryptable = await addDelivery(await addChannel(r.url));
      const wrongKey = createVault(database.db, randomBytes(32));
      expect(await notifier({ vault: wrongKey }).runOnce()).to.include({ failed: 1 });
      expect(await row(undecryptable)).to.include({ state: 'failed', last_error: 'the channel secret could not be decrypted' });
      expect(r.requests).to.have.length(0);
    });

    if (flavour === 'postgres') {
      it('two instances running at once deliver each row exactly once', async () => {
        // Two connection pools on one database, as two processes would have.
        const { database: a, url } = await freshServerDatabase({ poolSize: 4 });
        const b = openServerDatabase({ url, poolSize: 4 });
        // The helpers above use `database`; the one beforeEach opened is closed here instead.
        const original = database;
        cleanups.push(async () => {
          await b.close();
          await original.close();
        });
        database = a;
        vault = createVault(a.db, randomBytes(32));

        // Hold the first responses until 8 requests are open at once: with 4 slots each,
        // only two instances working side by side can get there.
        let released = false;
        const r = await receiver(() => {
          if (released) return 200;
          if (r.held.length < 7) return 'hold';
          released = true;
          r.held.splice(0).forEach((h) => h.writeHead(200).end());
          return 200;
        });
        const channel = await addChannel(r.url);
        const ids: string[] = [];
        for (let i = 0; i < 40; i++) ids.push(await addDelivery(channel, { at: new Date(Date.UTC(2025, 0, 1, 0, 0, i)) }));

        const one = notifier({ concurrency: 4, pollMs: 10 }, a);
        const two = notifier({ concurrency: 4, pollMs: 10 }, b);
        await Promise.all([one.start(), two.start()]);
        await waitFor(async () => {
          const left = await a.db.selectFrom('alert_deliveries').select('id').where('state', '!=', 'delivered').execute();
          return left.length === 0;
        }, 'every row to be delivered', 30_000);
        await Promise.all([one.stop(), two.stop()]);

        expect(released).to.equal(true);
        expect(r.ids().slice().sort()).to.deep.equal(ids.slice().sort());
        const [byOne, byTwo] = [one, two].map((n) => n.details().delivered_total);
        expect(byOne! + byTwo!).to.equal(40);
        expect(byOne).to.be.greaterThan(0);
        expect(byTwo).to.be.greaterThan(0);
      });
    }
  });
}
