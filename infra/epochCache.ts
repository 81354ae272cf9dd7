// A memory cache of read-model rows that is exact, not "fresh enough": every entry belongs
// to one epoch of the read models it was read from (the projection runtime's generation,
// which moves whenever a batch commits here or the leader instance reports one), and a
// new epoch empties the cache. Read-your-writes holds because a command answers only once
// its projections have committed, which has already moved the epoch.
//
// A value is remembered only if the epoch did not move while it was being read: a query
// that started before a commit and ended after it must not be kept as current.

export type EpochCache<V> = {
  /** The cached value, or undefined. */
  get(key: string): V | undefined;
  /** `get`, or `load()` remembered when the read models stood still while it ran. */
  through(key: string, load: () => Promise<V>): Promise<V>;
};

export type EpochCacheOptions = {
  /** Changes whenever the underlying read models may have changed. */
  epoch: () => number | string;
  /** Entries at most; when full the cache starts over (entries are cheap to read again). */
  max?: number;
};

export const createEpochCache = <V>(opts: EpochCacheOptions): EpochCache<V> => {
  const max = opts.max ?? 10_000;
  const entries = new Map<string, V>();
  let current: number | string | null = null;
  // Empties the cache when the epoch moved; returns the epoch now.
  const sync = (): number | string => {
    const epoch = opts.epoch();
    if (epoch !== current) {
      entries.clear();
      current = epoch;
    }
    return epoch;
  };
  const get = (key: string): V | undefined => {
    sync();
    return entries.get(key);
  };
  return {
    get,
    async through(key, load) {
      const epoch = sync();
      const hit = entries.get(key);
      if (hit !== undefined) return hit;
      const value = await load();
      if (sync() === epoch && value !== undefined) {
        if (entries.size >= max) entries.clear();
        entries.set(key, value);
      }
      return value;
    },
  };
};

/** For callers that run without a projection runtime (tests, tools): never caches. */
export const noCache = <V>(): EpochCache<V> => ({ get: () => undefined, through: (_key, load) => load() });
