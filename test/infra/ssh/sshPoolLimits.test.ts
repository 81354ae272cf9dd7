// The SSH adapter against sshd's own limits, as real hosts have them: MaxSessions 10
// channels per connection and MaxStartups 10:30:100 unauthenticated connections
// (SERVICES.md). Executions must queue, reuse connections and retry, never fail for it.
import { expect } from 'chai';
import { createSshPool, type ExecResult, type SshCredentials, type SshPool, type SshTarget } from '../../../infra/ssh/sshPool.ts';
import { startSshServer, type SshServer } from '../../support/sshServer.ts';

const targetFor = (server: SshServer, credentials?: SshCredentials, pin: string | null = null): SshTarget => ({
  host: server.host, port: server.port, username: server.username,
  credentials: credentials ?? { privateKey: server.privateKey }, hostKeyFingerprint: pin,
});

/** Runs `count` concurrent `whoami`s; returns their outputs and the most connections/sessions seen. */
const burst = async (pool: SshPool, target: SshTarget, count: number) => {
  let connections = 0;
  let sessions = 0;
  const sample = () => {
    const s = pool.stats();
    connections = Math.max(connections, s.connections);
    sessions = Math.max(sessions, s.sessions);
  };
  const runs = Array.from({ length: count }, async () => {
    let out = '';
    const r: ExecResult = await pool.exec(target, 'whoami', { timeoutMs: 20_000, onStart: sample, onStdout: (c) => (out += c.toString()) });
    sample();
    return { ...r, out };
  });
  return { results: await Promise.all(runs), connections, sessions };
};

describe('sshPool with sshd default limits', () => {
  let server: SshServer;
  const pools: SshPool[] = [];
  const newPool = (maxSessionsPerHost: number) => {
    const debug: string[] = [];
    const pool = createSshPool({ maxSessionsPerHost, logger: { debug: (_o, m) => void debug.push(m ?? ''), warn: () => undefined } });
    pools.push(pool);
    return { pool, debug };
  };

  before(async () => {
    server = await startSshServer({ defaults: true });
  });

  after(async () => {
    for (const p of pools) await p.close();
    await server?.stop();
  });

  it('runs 50 concurrent executions 4 at a time over one connection', async () => {
    const { pool } = newPool(4);
    const { results, connections, sessions } = await burst(pool, targetFor(server), 50);
    expect(results.filter((r) => r.exitCode === 0 && r.out === `${server.username}\n`)).to.have.length(50);
    expect(sessions).to.be.at.most(4);
    expect(connections).to.equal(1);
  });

  it('runs 50 concurrent executions 20 at a time, more than MaxSessions allows on one connection', async () => {
    const { pool, debug } = newPool(20);
    const { results, connections, sessions } = await burst(pool, targetFor(server), 50);
    expect(results.filter((r) => r.exitCode === 0 && r.out === `${server.username}\n`)).to.have.length(50);
    expect(sessions).to.be.at.most(20);
    // MaxSessions 10 → two connections carry the 20 channels; a third at most while one is replaced.
    expect(connections).to.be.within(2, 3);
    expect(debug).to.include('ssh channel refused, retrying'); // the limit was really hit and ridden out
  });

  it('retries connections sshd drops past MaxStartups', async () => {
    const strict = await startSshServer({ maxStartups: '1:100:1' }); // a second handshake at once is dropped
    try {
      const { pool, debug } = newPool(10);
      // Four different credentials/pins: four connections, opened three at a time by the pool.
      const password = { password: strict.password };
      const pin = strict.hostKeyFingerprint;
      const targets = [targetFor(strict), targetFor(strict, password), targetFor(strict, undefined, pin), targetFor(strict, password, pin)];
      const results = await Promise.all(targets.map((t) => pool.exec(t, 'true', { timeoutMs: 10_000 })));
      expect(results.map((r) => r.exitCode)).to.deep.equal([0, 0, 0, 0]);
      expect(debug).to.include('ssh connection dropped, retrying');
    } finally {
      await strict.stop();
    }
  });
});
