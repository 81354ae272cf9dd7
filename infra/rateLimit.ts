// Token-bucket rate limiting per key (SPEC §3): a bucket of rate r/s and burst b lets b
// requests through at once, then one more every 1/r s. In process by default; shared
// between API instances through Redis when REDIS_URL is set.
//
// Why not rate-limiter-flexible's stock limiters: they count in fixed windows. Measured
// with r = 10/s, b = 3: `points: b, duration: b/r` refuses for the whole window after
// the burst (no token back after 1/r s); `execEvenly` delays instead of refusing and lets
// the 4th request through; `BurstyRateLimiter` (1 per 1/r s + b-1 per (b-1)/r s) passes
// 34 requests in 2 s where the bucket allows 23, and its sub-second windows never expire
// in Redis (the library floors durations to whole seconds). So the bucket is the GCRA
// arithmetic (a "level" in time units that drains at 1 s/s), run
//   - in Redis by the library's own RateLimiterRedis, through its documented
//     `customIncrTtlLuaScript` hook: one atomic script per request, clocked by Redis
//     `TIME` so every API instance sees the same time;
//   - in process by MemoryBuckets below (the same arithmetic over a Map).
// Refused requests take nothing from the bucket, so hammering does not push the refill back.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { createLogger } from './logger.ts';

export type RateLimits = { ratePerSecond: number; burst: number };

export type RateDecision = {
  allowed: boolean;
  /** The burst: how many requests a full bucket lets through at once. */
  limit: number;
  /** Whole requests that would still pass right now, after this one. */
  remaining: number;
  /** Epoch seconds (rounded up) when the bucket is full again. */
  resetEpochSeconds: number;
  /** 0 when allowed; otherwise whole seconds (≥ 1) until one request will pass. */
  retryAfterSeconds: number;
};

export type RateLimiter = {
  consume(key: string, limits: RateLimits): Promise<RateDecision>;
  /** Resolves true once the shared store is connected (always true in memory), false after timeoutMs. */
  ready(timeoutMs?: number): Promise<boolean>;
  readonly store: 'memory' | 'redis';
  close(): Promise<void>;
};

export type RateLimitLogger = {
  warn(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
};

export type RateLimiterOptions = {
  /** redis:// or rediss:// URL; unset keeps the buckets in this process. */
  redisUrl?: string | undefined;
  /** Namespace of the bucket keys (in Redis: `${keyPrefix}:${key}`). */
  keyPrefix: string;
  /** Epoch milliseconds. Clocks the in-process buckets and every X-RateLimit-Reset; Redis buckets use Redis' clock. */
  now?: () => number;
  logger?: RateLimitLogger;
  /** A Redis call slower than this counts as Redis being down (default 500 ms). */
  redisCommandTimeoutMs?: number;
};

/** Outcome of one take from a bucket, in milliseconds. */
type Take = { allowed: boolean; remaining: number; msToFull: number; msToNext: number };

const checkLimits = ({ ratePerSecond, burst }: RateLimits): void => {
  if (!(Number.isFinite(ratePerSecond) && ratePerSecond > 0)) throw new RangeError(`ratePerSecond must be a positive number (got ${ratePerSecond})`);
  if (!(Number.isSafeInteger(burst) && burst >= 1)) throw new RangeError(`burst must be a positive integer (got ${burst})`);
};

/** ms between two tokens. */
const intervalOf = (l: RateLimits) => 1000 / l.ratePerSecond;

const toDecision = (t: Take, limits: RateLimits, nowMs: number): RateDecision => ({
  allowed: t.allowed,
  limit: limits.burst,
  remaining: t.remaining,
  resetEpochSeconds: Math.ceil((nowMs + t.msToFull) / 1000),
  retryAfterSeconds: t.allowed ? 0 : Math.max(1, Math.ceil(t.msToNext / 1000)),
});

// ---- in process ----

/**
 * Buckets as (level, at): `level` is how long (ms) the bucket needs to be full again as of
 * `at`; each request adds one interval (1000/r ms), capacity is burst × interval. Levels
 * are small numbers and `now - at` is an exact subtraction, so no rounding piles up.
 */
export class MemoryBuckets {
  private readonly buckets = new Map<string, { level: number; at: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly now: () => number = Date.now) {
    // Full buckets hold no information: drop them now and then so idle keys cost nothing.
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  take(key: string, limits: RateLimits): Take {
    checkLimits(limits);
    const now = this.now();
    const interval = intervalOf(limits);
    const capacity = limits.burst * interval;
    const b = this.buckets.get(key);
    // A clock that steps back drains nothing rather than filling the bucket.
    const level = b ? Math.max(0, b.level - Math.max(0, now - b.at)) : 0;
    const after = level + interval;
    if (after > capacity * (1 + 1e-12)) return { allowed: false, remaining: 0, msToFull: level, msToNext: after - capacity };
    this.buckets.set(key, { level: after, at: now });
    return { allowed: true, remaining: Math.floor((capacity - after) / interval + 1e-9), msToFull: after, msToNext: 0 };
  }

  sweep(): void {
    const now = this.now();
    for (const [key, b] of this.buckets) if (b.level <= now - b.at) this.buckets.delete(key);
  }

  get size(): number {
    return this.buckets.size;
  }

  close(): void {
    clearInterval(this.sweeper);
    this.buckets.clear();
  }
}

// ---- in Redis ----

/**
 * The same bucket as MemoryBuckets, as RateLimiterRedis' increment script. The library
 * calls it with KEYS[1] = prefixed key and ARGV = [points to take, whole-second duration
 * (unused), limiter points (= burst), limiter duration (= burst / rate, in seconds)] and
 * reads back {consumed, ms}: consumed > burst means refused. We answer consumed =
 * burst - remaining with ms = time until the bucket is full when allowed, and consumed =
 * burst + n with ms = time until n tokens are free when refused (the library's
 * msBeforeNext meaning). State: "level_us at_us", expiring when the bucket is full.
 */
export const TOKEN_BUCKET_LUA = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local n = tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
local interval = tonumber(ARGV[4]) * 1000000 / burst
local capacity = burst * interval
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local level = 0
local v = redis.call('GET', KEYS[1])
if v then
  local l, at = string.match(v, '^(%S+) (%S+)$')
  l = tonumber(l)
  at = tonumber(at)
  if l and at then level = math.max(0, l - math.max(0, now - at)) end
end
local after = level + n * interval
if after > capacity * (1 + 1e-12) then
  return {burst + n, math.ceil((after - capacity) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.17g %.0f', after, now), 'PX', math.max(1, math.ceil(after / 1000)))
local remaining = math.floor((capacity - after) / interval + 1e-9)
return {burst - remaining, math.ceil(after / 1000)}
`;

const MAX_CACHED_LIMITERS = 10_000;

const errorText = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * One limiter for the whole process; buckets per key, whatever (rate, burst) each call
 * names (users have their own limits). A key's bucket is kept in time units, so changing
 * a key's limits takes effect at once without resetting its level.
 *
 * Redis down (at start or later): FAIL OPEN to this process' own buckets, with a warning
 * (repeated at most once a minute while it lasts, and an info line when Redis is back).
 * Rate limiting protects the service; an outage of the store that coordinates it must not
 * become an outage of the API (fail closed) nor a free-for-all (no limits at all). So each
 * instance keeps enforcing the same limits on what it sees itself — a caller spreading
 * over N instances gets at most N× the limit until Redis returns. Buckets are not copied
 * either way at the switch: Redis starts from the state it kept.
 */
export const createRateLimiter = (opts: RateLimiterOptions): RateLimiter => {
  const now = opts.now ?? Date.now;
  const memory = new MemoryBuckets(now);
  const prefixed = (key: string) => `${opts.keyPrefix}:${key}`;
  const takeInMemory = (key: string, limits: RateLimits) => toDecision(memory.take(prefixed(key), limits), limits, now());

  if (!opts.redisUrl) {
    return {
      store: 'memory',
      consume: async (key, limits) => takeInMemory(key, limits),
      ready: async () => true,
      close: async () => memory.close(),
    };
  }

  const logger = opts.logger ?? createLogger({ logLevel: 'info' });
  const client = new Redis(opts.redisUrl, {
    // While disconnected, fail at once (and fall back) instead of queueing requests behind a reconnect.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: opts.redisCommandTimeoutMs ?? 500,
    connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
    // A distinct name in CLIENT LIST helps whoever looks at a busy Redis.
    connectionName: `opsledger-rate-limit-${randomUUID().slice(0, 8)}`,
  });

  let degradedSince: number | null = null;
  let lastWarning = 0;
  const degrade = (err: unknown) => {
    const t = Date.now();
    if (degradedSince === null || t - lastWarning >= 60_000) {
      degradedSince ??= t;
      lastWarning = t;
      logger.warn({ err: errorText(err) }, 'rate limiter: Redis unavailable, failing open to per-instance limits');
    }
  };
  // ioredis reports connection trouble as 'error' events (an unhandled one would crash the process).
  client.on('error', degrade);
  client.on('ready', () => {
    if (degradedSince === null) return;
    logger.info({ downForMs: Date.now() - degradedSince }, 'rate limiter: Redis is back, limits are shared again');
    degradedSince = null;
  });

  const limiters = new Map<string, RateLimiterRedis>();
  const limiterFor = (limits: RateLimits): RateLimiterRedis => {
    const id = `${limits.ratePerSecond}/${limits.burst}`;
    let limiter = limiters.get(id);
    if (!limiter) {
      if (limiters.size >= MAX_CACHED_LIMITERS) limiters.clear();
      limiter = new RateLimiterRedis({
        storeClient: client,
        keyPrefix: opts.keyPrefix,
        points: limits.burst,
        // Seconds to fill an empty bucket: the script reads the rate back as points / duration.
        duration: limits.burst / limits.ratePerSecond,
        customIncrTtlLuaScript: TOKEN_BUCKET_LUA,
        rejectIfRedisNotReady: true,
      });
      limiters.set(id, limiter);
    }
    return limiter;
  };

  const consume = async (key: string, limits: RateLimits): Promise<RateDecision> => {
    checkLimits(limits);
    const limiter = limiterFor(limits);
    // The library only runs the script for durations of a whole second or more; the bucket ignores this value.
    const options = { customDuration: Math.max(1, Math.ceil(limits.burst / limits.ratePerSecond)) };
    let take: Take;
    try {
      const res = await limiter.consume(key, 1, options);
      take = { allowed: true, remaining: res.remainingPoints, msToFull: res.msBeforeNext, msToNext: 0 };
    } catch (err) {
      if (err instanceof RateLimiterRes) {
        const msToNext = err.msBeforeNext;
        take = { allowed: false, remaining: 0, msToFull: msToNext + (limits.burst - 1) * intervalOf(limits), msToNext };
      } else {
        degrade(err);
        return takeInMemory(key, limits);
      }
    }
    return toDecision(take, limits, now());
  };

  return {
    store: 'redis',
    consume,
    ready: (timeoutMs = 5000) =>
      client.status === 'ready'
        ? Promise.resolve(true)
        : new Promise<boolean>((resolve) => {
            const done = (ok: boolean) => {
              clearTimeout(timer);
              client.off('ready', onReady);
              resolve(ok);
            };
            const onReady = () => done(true);
            const timer = setTimeout(() => done(false), timeoutMs);
            client.on('ready', onReady);
          }),
    close: async () => {
      memory.close();
      if (client.status === 'ready') {
        await client.quit().catch(() => client.disconnect());
      } else {
        client.disconnect();
      }
    },
  };
};
