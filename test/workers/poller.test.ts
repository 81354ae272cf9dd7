// The poller against real loopback servers as nodes, with its records kept in memory and
// its clock in the test's hands.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import net from 'node:net';
import { expect } from 'chai';
import type { Check } from '../../domain/monitoring.ts';
import { createPoller, type PolledSnapshot, type PollerDeps, type PollTarget } from '../../workers/poller.ts';
import { closedPort, loopbackServers } from '../support/nodeServers.ts';
import { waitFor } from '../support/waitFor.ts';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const stops: Array<() => Promise<void>> = [];
const loop = loopbackServers();
const listen = async (server: Server | net.Server): Promise<number> => (await loop.listen(server)).port;
const httpNode = async (handler: Handler): Promise<string> => (await loop.http(handler)).url;
const freePort = closedPort;

const check = (o: Partial<Check> & Pick<Check, 'type'>): Check =>
  ({ url: null, port: null, expectStatus: null, timeoutMs: 2000, intervalS: null, retries: 0, ...o });
const target = (nodeId: string, c: Check, lastObservedAt: Date | null = null): PollTarget =>
  ({ nodeId, name: nodeId, address: '127.0.0.1', check: c, lastObservedAt });

const T0 = Date.parse('2030-01-01T00:00:00.000Z');

/** A poller over `targets` (mutable), recording into `records`, on a clock the test moves. */
const setup = (targets: PollTarget[], o: Partial<PollerDeps> = {}) => {
  const records: Array<{ nodeId: string } & PolledSnapshot> = [];
  const clock = { now: T0 };
  const poller = createPoller({
    listTargets: async () => targets,
    record: async (nodeId, snapshot) => void records.push({ nodeId, ...snapshot }),
    defaultIntervalS: 60,
    concurrency: 4,
    now: () => clock.now,
    ...o,
  });
  stops.push(async () => {
    await poller.stop();
  });
  const byNode = () => Object.fromEntries(records.map((r) => [r.nodeId, r]));
  return { poller, records, clock, byNode };
};

afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
  await loop.closeAll();
});

describe('poller', () => {
  describe('one tick', () => {
    it('checks each due node once and records what it found, as observed when the check started', async () => {
      const healthy = await httpNode((_req, res) => res.end(JSON.stringify({ version: '3.1.0', metrics: { orchestrators: 18 } })));
      const failing = await httpNode((_req, res) => res.writeHead(503).end());
      const slow = await httpNode(() => undefined);
      const badJson = await httpNode((_req, res) => res.end('{not json'));
      const tcpPort = await listen(net.createServer((s) => s.end()));
      const closedPort = await freePort();
      const targets = [
        target('healthy', check({ type: 'http', url: healthy })),
        target('failing', check({ type: 'http', url: failing })),
        target('slow', check({ type: 'http', url: slow, timeoutMs: 300 })),
        target('bad-json', check({ type: 'http', url: badJson }), new Date(T0 - 61_000)),
        target('tcp-up', check({ type: 'tcp', port: tcpPort })),
        target('tcp-down', check({ type: 'tcp', port: closedPort })),
        // Observed 10 s ago with a 60 s interval: not due yet.
        target('recent', check({ type: 'http', url: healthy }), new Date(T0 - 10_000)),
        target('pushed', check({ type: 'push' }), new Date(T0 - 10_000)),
      ];
      const { poller, records, byNode } = setup(targets);

      expect(await poller.runOnce()).to.deep.equal({ checked: 6, silent: 0 });

      expect(records.map((r) => r.nodeId).sort()).to.deep.equal(['bad-json', 'failing', 'healthy', 'slow', 'tcp-down', 'tcp-up']);
      const got = byNode();
      expect(got['healthy']).to.deep.include({ status: 'up', version: '3.1.0', metrics: { orchestrators: 18 }, error: null });
      expect(got['failing']).to.include({ status: 'down', error: 'HTTP 503 (expected 2xx)' });
      expect(got['slow']).to.include({ status: 'down', error: 'timed out after 300 ms', latencyMs: null });
      expect(got['bad-json']).to.include({ status: 'up', metrics: null, version: null });
      expect(got['tcp-up']).to.include({ status: 'up', error: null });
      expect(got['tcp-down']).to.include({ status: 'down', error: 'connection refused' });
      for (const r of records) expect(r).to.include({ source: 'poll', observedAt: new Date(T0).toISOString() });
      expect(poller.details?.()).to.include({ checks_in_flight: 0, checks_total: 6, last_tick_at: new Date(T0).toISOString(), last_error: null });
    });

    it('shares a tick already under way instead of starting a second one', async () => {
      let listed = 0;
      let release: (() => void) | null = null;
      const { poller } = setup([], {
        listTargets: () => {
          listed += 1;
          return new Promise((resolve) => (release = () => resolve([])));
        },
      });
      const first = poller.runOnce();
      const second = poller.runOnce();
      await waitFor(() => release, 'the tick to list the nodes');
      release!();
      expect(await Promise.all([first, second])).to.deep.equal([{ checked: 0, silent: 0 }, { checked: 0, silent: 0 }]);
      expect(listed).to.equal(1);
    });
  });

  describe('intervals', () => {
    it('checks a node again only once its interval has passed since its last check started', async () => {
      let hits = 0;
      const url = await httpNode((_req, res) => void (hits += 1, res.end('{}')));
      const targets = [
        target('default', check({ type: 'http', url })), // POLL_INTERVAL_SECONDS = 60
        target('fast', check({ type: 'http', url, intervalS: 10 })),
      ];
      const { poller, clock } = setup(targets);

      expect(await poller.runOnce()).to.deep.equal({ checked: 2, silent: 0 });
      expect(await poller.runOnce(), 'at the same time').to.deep.equal({ checked: 0, silent: 0 });
      clock.now = T0 + 9_999;
      expect(await poller.runOnce()).to.deep.equal({ checked: 0, silent: 0 });
      clock.now = T0 + 10_000;
      expect(await poller.runOnce(), 'the 10 s node').to.deep.equal({ checked: 1, silent: 0 });
      clock.now = T0 + 60_000;
      expect(await poller.runOnce(), 'both').to.deep.equal({ checked: 2, silent: 0 });
      expect(hits).to.equal(5);
    });

    it('forgets a node that is no longer listed', async () => {
      const url = await httpNode((_req, res) => res.end('{}'));
      const targets = [target('a', check({ type: 'http', url }))];
      const { poller } = setup(targets);
      expect(await poller.runOnce()).to.deep.equal({ checked: 1, silent: 0 });
      targets.pop();
      expect(await poller.runOnce()).to.deep.equal({ checked: 0, silent: 0 });
      // Back, never observed: checked at once, as if new.
      targets.push(target('a', check({ type: 'http', url })));
      expect(await poller.runOnce()).to.deep.equal({ checked: 1, silent: 0 });
    });
  });

  describe('concurrency', () => {
    it('never has more than `concurrency` checks in flight', async () => {
      let active = 0;
      let most = 0;
      let served = 0;
      const held: ServerResponse[] = [];
      const url = await httpNode((_req, res) => {
        active += 1;
        most = Math.max(most, active);
        res.on('finish', () => void (active -= 1, served += 1));
        held.push(res);
      });
      const targets = Array.from({ length: 20 }, (_, i) => target(`n${i}`, check({ type: 'http', url, timeoutMs: 30_000 })));
      const { poller, records } = setup(targets, { concurrency: 5 });

      const tick = poller.runOnce();
      await waitFor(() => held.length === 5, 'five requests held open');
      expect(poller.details?.()).to.include({ checks_in_flight: 5, checks_queued: 15 });
      // Answer one held request at a time; each answer lets exactly one more in.
      while (served < 20) {
        held.shift()!.end('{}');
        await waitFor(() => held.length === Math.min(5, 20 - served), 'the answered check to end and the next to take its slot');
      }
      expect(await tick).to.deep.equal({ checked: 20, silent: 0 });
      expect(most).to.equal(5);
      expect(records.filter((r) => r.status === 'up')).to.have.length(20);
    });

    it('does not let a slow node hold up the others, nor check it again while it is in flight', async () => {
      let slowHits = 0;
      const slow = await httpNode(() => void (slowHits += 1));
      const fast = await httpNode((_req, res) => res.end('{}'));
      const targets = [
        target('slow', check({ type: 'http', url: slow, timeoutMs: 30_000 })),
        ...Array.from({ length: 6 }, (_, i) => target(`fast${i}`, check({ type: 'http', url: fast }))),
      ];
      const { poller, records, clock } = setup(targets, { concurrency: 2 });
      const tick = poller.runOnce();
      await waitFor(() => records.length === 6, 'the six fast nodes to be recorded');
      expect(records.map((r) => r.nodeId)).not.to.include('slow');
      expect(poller.details?.()).to.include({ checks_in_flight: 1 });
      clock.now = T0 + 60_000;
      expect(await poller.runOnce(), 'an interval later: the fast ones only').to.deep.equal({ checked: 6, silent: 0 });
      expect(records).to.have.length(12);
      await poller.stop();
      await tick;
      expect(records).to.have.length(12);
      expect(slowHits).to.equal(1);
    });
  });

  describe('push nodes', () => {
    const every = 10; // s; silent after 2 × 10 s

    it('records one monitor `down` once silent for over twice the interval, then one per interval', async () => {
      // Last heard of long before the poller started: the wait still counts from its start.
      const silent = target('silent', check({ type: 'push', intervalS: every }), new Date(T0 - 3_600_000));
      const targets = [silent];
      const { poller, records, clock } = setup(targets);

      expect(await poller.runOnce(), 'at start').to.deep.equal({ checked: 0, silent: 0 });
      clock.now = T0 + 20_000;
      expect(await poller.runOnce(), 'exactly 2 × interval').to.deep.equal({ checked: 0, silent: 0 });
      clock.now = T0 + 21_000;
      expect(await poller.runOnce()).to.deep.equal({ checked: 0, silent: 1 });
      expect(records).to.deep.equal([{
        nodeId: 'silent', status: 'down', source: 'monitor', error: 'no report for 3621 s',
        latencyMs: null, version: null, metrics: null, observedAt: new Date(T0 + 21_000).toISOString(),
      }]);

      // The read model now shows the monitor's own snapshot as the last observation.
      silent.lastObservedAt = new Date(T0 + 21_000);
      clock.now = T0 + 30_000;
      expect(await poller.runOnce(), 'within the interval').to.deep.equal({ checked: 0, silent: 0 });
      clock.now = T0 + 31_000;
      expect(await poller.runOnce(), 'an interval later').to.deep.equal({ checked: 0, silent: 1 });
      expect(records[1]).to.include({ status: 'down', source: 'monitor', error: 'no report for 3631 s' });

      // It reports again: silent only after another 2 × interval from that report.
      silent.lastObservedAt = new Date(T0 + 35_000);
      clock.now = T0 + 55_000;
      expect(await poller.runOnce()).to.deep.equal({ checked: 0, silent: 0 });
      clock.now = T0 + 55_001;
      expect(await poller.runOnce()).to.deep.equal({ checked: 0, silent: 1 });
      expect(records[2]).to.include({ error: 'no report for 20 s' });
    });

    it('records nothing for a push node that reported recently, and never checks it', async () => {
      const node = target('chatty', check({ type: 'push', intervalS: every }), new Date(T0 + 40_000));
      const { poller, records, clock } = setup([node]);
      clock.now = T0 + 55_000;
      expect(await poller.runOnce()).to.deep.equal({ checked: 0, silent: 0 });
      expect(records).to.deep.equal([]);
    });
  });

  describe('failures', () => {
    it('goes on when a record is refused: a decommissioned node at debug, anything else as its last error', async () => {
      const url = await httpNode((_req, res) => res.end('{}'));
      const logged: string[] = [];
      const refusal = (code: string) => Object.assign(new Error(`refused: ${code}`), { code });
      const { poller } = setup([target('gone', check({ type: 'http', url })), target('broken', check({ type: 'http', url }))], {
        record: async (nodeId) => {
          throw refusal(nodeId === 'gone' ? 'NODE_DECOMMISSIONED' : 'DB_DOWN');
        },
        logger: { warn: (_o, msg) => void logged.push(`warn ${msg}`), debug: (_o, msg) => void logged.push(`debug ${msg}`) },
      });
      expect(await poller.runOnce()).to.deep.equal({ checked: 2, silent: 0 });
      expect(logged.sort()).to.deep.equal(['debug snapshot not recorded: the node is gone', 'warn could not record a snapshot']);
      expect(poller.details?.()).to.include({ last_error: 'recording a snapshot of broken: refused: DB_DOWN' });
    });
  });

  describe('start and stop', () => {
    it('polls on its timer, and stop() aborts a check stuck on a slow node promptly without recording it', async () => {
      const sockets: net.Socket[] = [];
      const slow = await httpNode((req) => void sockets.push(req.socket));
      const fast = await httpNode((_req, res) => res.end('{}'));
      const { poller, records } = setup(
        [target('stuck', check({ type: 'http', url: slow, timeoutMs: 60_000 })), target('ok', check({ type: 'http', url: fast }))],
        { tickMs: 20, now: Date.now },
      );
      await poller.start();
      await waitFor(() => sockets.length === 1 && records.length === 1, 'the stuck request to arrive and the other to be recorded');
      const stopping = Date.now();
      await poller.stop();
      expect(Date.now() - stopping).to.be.below(1000);
      expect(records.map((r) => r.nodeId)).to.deep.equal(['ok']);
      expect(poller.details?.()).to.include({ checks_in_flight: 0 });
      await waitFor(() => sockets[0]!.destroyed, 'the stuck connection to close');
    });
  });
});
