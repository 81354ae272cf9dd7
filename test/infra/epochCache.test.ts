import { expect } from 'chai';
import { createEpochCache, noCache } from '../../infra/epochCache.ts';

/** A loader that counts its calls and answers `value(key)`. */
const countingLoader = <V>(value: (key: string) => V) => {
  const calls: string[] = [];
  return {
    calls,
    for: (key: string) => async (): Promise<V> => {
      calls.push(key);
      return value(key);
    },
  };
};

describe('epochCache', () => {
  describe('createEpochCache', () => {
    it('serves a value loaded through it from memory on the next call', async () => {
      const cache = createEpochCache<string>({ epoch: () => 1 });
      const loader = countingLoader((k) => `value of ${k}`);

      expect(cache.get('a')).to.equal(undefined);
      expect(await cache.through('a', loader.for('a'))).to.equal('value of a');
      expect(await cache.through('a', loader.for('a'))).to.equal('value of a');
      expect(cache.get('a')).to.equal('value of a');
      expect(loader.calls).to.deep.equal(['a']);

      // Another key is its own entry.
      expect(await cache.through('b', loader.for('b'))).to.equal('value of b');
      expect(await cache.through('a', loader.for('a'))).to.equal('value of a');
      expect(loader.calls).to.deep.equal(['a', 'b']);
    });

    it('empties the cache when the epoch moves', async () => {
      let epoch = 1;
      const cache = createEpochCache<string>({ epoch: () => epoch });
      let version = 1;
      const loader = countingLoader((k) => `${k}@v${version}`);

      expect(await cache.through('a', loader.for('a'))).to.equal('a@v1');
      expect(await cache.through('b', loader.for('b'))).to.equal('b@v1');
      version = 2;
      epoch = 2;
      expect(cache.get('a')).to.equal(undefined);
      expect(cache.get('b')).to.equal(undefined);
      expect(await cache.through('a', loader.for('a'))).to.equal('a@v2');
      expect(loader.calls).to.deep.equal(['a', 'b', 'a']);
      // And within the new epoch it is remembered again.
      expect(await cache.through('a', loader.for('a'))).to.equal('a@v2');
      expect(loader.calls).to.deep.equal(['a', 'b', 'a']);
    });

    it('accepts string epochs', async () => {
      let epoch = 'g1';
      const cache = createEpochCache<number>({ epoch: () => epoch });
      let loads = 0;
      const load = async () => ++loads;
      expect(await cache.through('k', load)).to.equal(1);
      expect(await cache.through('k', load)).to.equal(1);
      epoch = 'g2';
      expect(await cache.through('k', load)).to.equal(2);
      expect(loads).to.equal(2);
    });

    it('does not remember a value whose load ran while the epoch moved, but still returns it', async () => {
      let epoch = 1;
      const cache = createEpochCache<string>({ epoch: () => epoch });
      let loads = 0;
      const racingLoad = async () => {
        loads++;
        await Promise.resolve();
        epoch++; // a commit lands while the query runs
        return 'read before the commit';
      };

      expect(await cache.through('a', racingLoad)).to.equal('read before the commit');
      expect(cache.get('a')).to.equal(undefined);

      const loader = countingLoader(() => 'read after the commit');
      expect(await cache.through('a', loader.for('a'))).to.equal('read after the commit');
      expect(loader.calls).to.deep.equal(['a']);
      expect(loads).to.equal(1);
      // The epoch stood still during this load, so now it is remembered.
      expect(await cache.through('a', loader.for('a'))).to.equal('read after the commit');
      expect(loader.calls).to.deep.equal(['a']);
    });

    it('does not cache errors thrown by load', async () => {
      const cache = createEpochCache<string>({ epoch: () => 1 });
      let calls = 0;
      const failing = async (): Promise<string> => {
        calls++;
        throw new Error('database unavailable');
      };
      let caught: unknown;
      try {
        await cache.through('a', failing);
      } catch (e) {
        caught = e;
      }
      expect(caught).to.be.instanceOf(Error).with.property('message', 'database unavailable');
      expect(cache.get('a')).to.equal(undefined);

      const loader = countingLoader(() => 'recovered');
      expect(await cache.through('a', loader.for('a'))).to.equal('recovered');
      expect(await cache.through('a', loader.for('a'))).to.equal('recovered');
      expect(loader.calls).to.deep.equal(['a']);
      expect(calls).to.equal(1);
    });

    it('caches null (not found is a value) but not undefined', async () => {
      const cache = createEpochCache<string | null | undefined>({ epoch: () => 1 });

      const nullLoader = countingLoader(() => null);
      expect(await cache.through('missing', nullLoader.for('missing'))).to.equal(null);
      expect(await cache.through('missing', nullLoader.for('missing'))).to.equal(null);
      expect(cache.get('missing')).to.equal(null);
      expect(nullLoader.calls).to.deep.equal(['missing']);

      const undefinedLoader = countingLoader(() => undefined);
      expect(await cache.through('u', undefinedLoader.for('u'))).to.equal(undefined);
      expect(await cache.through('u', undefinedLoader.for('u'))).to.equal(undefined);
      expect(undefinedLoader.calls).to.deep.equal(['u', 'u']);
    });

    it('caches falsy values other than undefined (0, empty string, false)', async () => {
      const cache = createEpochCache<number | string | boolean>({ epoch: () => 1 });
      for (const [key, value] of [['zero', 0], ['empty', ''], ['no', false]] as const) {
        const loader = countingLoader(() => value);
        expect(await cache.through(key, loader.for(key))).to.equal(value);
        expect(await cache.through(key, loader.for(key))).to.equal(value);
        expect(loader.calls, key).to.deep.equal([key]);
      }
    });

    it('past max entries starts over, and still answers every key correctly', async () => {
      const cache = createEpochCache<string>({ epoch: () => 1, max: 2 });
      const loader = countingLoader((k) => `value of ${k}`);

      await cache.through('a', loader.for('a'));
      await cache.through('b', loader.for('b'));
      expect(cache.get('a')).to.equal('value of a');
      expect(cache.get('b')).to.equal('value of b');

      // The third entry does not fit: the cache starts over with it.
      expect(await cache.through('c', loader.for('c'))).to.equal('value of c');
      expect(cache.get('c')).to.equal('value of c');
      expect(cache.get('a')).to.equal(undefined);
      expect(cache.get('b')).to.equal(undefined);

      expect(await cache.through('a', loader.for('a'))).to.equal('value of a');
      expect(loader.calls).to.deep.equal(['a', 'b', 'c', 'a']);
    });

    it('answers correctly under churn with a small max', async () => {
      const cache = createEpochCache<string>({ epoch: () => 7, max: 3 });
      const loader = countingLoader((k) => `value of ${k}`);
      const keys = Array.from({ length: 20 }, (_, i) => `k${i % 7}`);
      for (const key of keys) {
        expect(await cache.through(key, loader.for(key))).to.equal(`value of ${key}`);
        expect(cache.get(key)).to.equal(`value of ${key}`);
      }
      // A key looked up twice in a row is a hit the second time.
      await cache.through('k3', loader.for('k3'));
      const before = loader.calls.length;
      expect(await cache.through('k3', loader.for('k3'))).to.equal('value of k3');
      expect(loader.calls.length).to.equal(before);
    });
  });

  describe('noCache', () => {
    it('always loads and never remembers', async () => {
      const cache = noCache<string | null>();
      const loader = countingLoader(() => null);
      expect(await cache.through('a', loader.for('a'))).to.equal(null);
      expect(await cache.through('a', loader.for('a'))).to.equal(null);
      expect(cache.get('a')).to.equal(undefined);

      const values = countingLoader((k) => `value of ${k}`);
      expect(await cache.through('b', values.for('b'))).to.equal('value of b');
      expect(await cache.through('b', values.for('b'))).to.equal('value of b');
      expect(cache.get('b')).to.equal(undefined);
      expect(loader.calls).to.deep.equal(['a', 'a']);
      expect(values.calls).to.deep.equal(['b', 'b']);
    });

    it('passes on errors from load', async () => {
      const cache = noCache<string>();
      let caught: unknown;
      try {
        await cache.through('a', async () => {
          throw new Error('boom');
        });
      } catch (e) {
        caught = e;
      }
      expect(caught).to.be.instanceOf(Error).with.property('message', 'boom');
    });
  });
});
