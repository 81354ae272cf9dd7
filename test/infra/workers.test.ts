// The worker registry: start, stop in reverse, failures kept to the worker that failed.
import { expect } from 'chai';
import { createWorkerRegistry, type Worker } from '../../infra/workers.ts';

const recorder = () => {
  const calls: string[] = [];
  const worker = (name: string, o: { failStart?: boolean; failStop?: boolean; details?: () => Record<string, unknown> } = {}): Worker => ({
    name,
    async start() {
      calls.push(`start ${name}`);
      if (o.failStart) throw new Error(`${name} cannot start`);
    },
    async stop() {
      calls.push(`stop ${name}`);
      if (o.failStop) throw new Error(`${name} cannot stop`);
    },
    ...(o.details ? { details: o.details } : {}),
  });
  return { calls, worker };
};

describe('worker registry', () => {
  it('starts every worker, stops them last-registered first, and shows their states', async () => {
    const { calls, worker } = recorder();
    const reg = createWorkerRegistry();
    await reg.register(worker('a'));
    await reg.register(worker('b', { details: () => ({ checkpoint: '7/7' }) }));
    expect(reg.status().map((s) => s.state)).to.deep.equal(['registered', 'registered']);
    await reg.start();
    expect(reg.status()).to.have.length(2);
    expect(reg.status()[1]).to.include({ name: 'b', state: 'running', checkpoint: '7/7', error: null });
    expect(Date.parse(reg.status()[0]!.since)).to.be.a('number').and.not.NaN;
    await reg.stop();
    expect(calls).to.deep.equal(['start a', 'start b', 'stop b', 'stop a']);
    expect(reg.status().map((s) => s.state)).to.deep.equal(['stopped', 'stopped']);
  });

  it('keeps a failure to the worker that failed, logs it, and still stops the others', async () => {
    const { calls, worker } = recorder();
    const logged: string[] = [];
    const reg = createWorkerRegistry({ logger: { error: (_o, msg) => void logged.push(msg ?? ''), info: () => undefined } });
    await reg.register(worker('ok'));
    await reg.register(worker('broken', { failStart: true }));
    await reg.register(worker('sticky', { failStop: true }));
    await reg.start();
    const byName = Object.fromEntries(reg.status().map((s) => [s.name, s]));
    expect(byName['ok']).to.include({ state: 'running', error: null });
    expect(byName['broken']).to.include({ state: 'failed', error: 'broken cannot start' });
    await reg.stop();
    expect(calls.filter((c) => c.startsWith('stop'))).to.deep.equal(['stop sticky', 'stop broken', 'stop ok']);
    const after = Object.fromEntries(reg.status().map((s) => [s.name, s]));
    expect(after['ok']!.state).to.equal('stopped');
    expect(after['sticky']).to.include({ state: 'failed', error: 'sticky cannot stop' });
    expect(logged).to.deep.equal(['a worker failed to start', 'a worker failed to stop cleanly']);
  });

  it('starts a worker registered after start() at once, and refuses a second worker of the same name', async () => {
    const { calls, worker } = recorder();
    const reg = createWorkerRegistry();
    await reg.start();
    await reg.register(worker('late'));
    expect(calls).to.deep.equal(['start late']);
    expect(reg.status()[0]!.state).to.equal('running');
    try {
      await reg.register(worker('late'));
      expect.fail('a duplicate name was accepted');
    } catch (err) {
      expect((err as Error).message).to.match(/already registered/);
    }
    await reg.stop();
  });

  it('shows a worker whose details() throws, with the reason, instead of failing the whole list', async () => {
    const { worker } = recorder();
    const reg = createWorkerRegistry();
    await reg.register(worker('odd', { details: () => { throw new Error('no details today'); } }));
    await reg.start();
    expect(reg.status()[0]).to.include({ name: 'odd', state: 'running', details_error: 'no details today' });
    await reg.stop();
  });
});
