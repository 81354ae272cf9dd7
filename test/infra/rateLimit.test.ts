// SPEC §3 rate limits: the token bucket itself (in memory and in Redis, same behaviour
// tests for both), the HTTP contract through a real express app, and Redis' extras:
// buckets shared between instances, failing open while Redis is away.
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { expect } from 'chai';
import express, { type Request } from 'express';
import { Redis } from 'ioredis';
import { loadConfig } from '../../infra/config.ts';
import { sendProblem } from '../../infra/http/problem.ts';
import { createRateLimiter, type RateDecision, type RateLimiter, type RateLimitLogger, type RateLimits } from '../../infra/rateLimit.ts';
import {
  DEFAULT_LOGIN_LIMITS, limitsForCaller, loginAttemptGuard, loginAttemptKey, rateLimitMiddleware, type RateLimitDefaults, type RateLimitedCaller,
} from '../../infra/rateLimitHttp.ts';
import { freePort } from '../support/postgresServer.ts';
import { startRedisServer, type RedisServer } from '../support/redisServer.ts';
import { waitFor } from '../support/waitFor.ts';

/** A clock the tests read (epoch ms) and move forward one poll at a time. */
type TestClock = { now(): number; tick(): Promise<void>; exact: boolean };

const fakeClock = (): TestClock => {
  let t = Date.UTC(2030, 0, 1, 0, 0, 0, 250);
  return { now: () => t, tick: async () => void (t += 1), exact: true };
};
const realClock = (): TestClock => ({ now: () => Date.now(), tick: () => new Promise((r) => setTimeout(r, 2)), exact: false });

type Flavour = { name: string; clock: () => TestClock; limiter: (clock: TestClock, keyPrefix: string) => RateLimiter };

const quietLogger = (): RateLimitLogger & { lines: { level: string; msg: string; obj: Record<string, unknown> }[] } => {
  const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  return {
    lines,
    warn: (obj, msg) => void lines.push({ level: 'warn', msg, obj }),
    info: (obj, msg) => void lines.push({ level: 'info', msg, obj }),
  };
};

let redis: RedisServer;
const flavours: Flavour[] = [
  { name: 'memory', clock: fakeClock, limiter: (clock, keyPrefix) => createRateLimiter({ keyPrefix, now: clock.now }) },
  {
    name: 'redis',
    clock: realClock,
    limiter: (clock, keyPrefix) => createRateLimiter({ redisUrl: redis.url, keyPrefix, now: clock.now, logger: quietLogger() }),
  },
];

/** Polls (a refused consume takes nothing) until allowed; the elapsed clock time and the decision. */
const consumeWhenAllowed = async (clock: TestClock, limiter: RateLimiter, key: string, limits: RateLimits) => {
  const start = clock.now();
  const deadline = Date.now() + 5000;
  for (;;) {
    const d = await limiter.consume(key, limits);
    if (d.allowed) return { elapsed: clock.now() - start, d };
    if (Date.now() > deadline) throw new Error('no token came back within 5 s');
    await clock.tick();
  }
};

const burstOf = async (limiter: RateLimiter, key: string, limits: RateLimits, n: number): Promise<RateDecision[]> => {
  const out: RateDecision[] = [];
  for (let i = 0; i < n; i++) out.push(await limiter.consume(key, limits));
  return out;
};

/** The X-RateLimit-Reset of a bucket that took `tokens` between t0 and t1 (one value when the clock stood still). */
const resetRange = (t0: number, t1: number, msToFull: number): [number, number] => [Math.ceil((t0 + msToFull - 5) / 1000), Math.ceil((t1 + msToFull) / 1000)];
const expectWithin = (actual: number, [lo, hi]: [number, number], what: string) =>
  expect(actual, `${what}: ${actual} not in [${lo}, ${hi}]`).to.be.within(lo, hi);

// ---- an app as the API would wire it, with a stand-in for authentication ----

const TEST_DEFAULTS: RateLimitDefaults = { defaultRateLimitPerSecond: 1, defaultRateLimitBurst: 10, adminRateLimitPerSecond: 20, adminRateLimitBurst: 50 };
const CALLERS: Record<string, RateLimitedCaller> = {
  alice: { userId: 'u-alice', role: 'user' },
  root: { userId: 'u-root', role: 'admin' },
  bob: { userId: 'u-bob', role: 'user', rateLimitPerSecond: 0.5, rateLimitBurst: 2 },
};

const startApp = async (limiter: RateLimiter): Promise<{ url: string; close(): Promise<void> }> => {
  const app = express();
  app.set('trust proxy', true); // the tests pick the client address with X-Forwarded-For
  app.use((req, res, next) => {
    res.locals['requestId'] = req.get('x-request-id') ?? randomUUID();
    next();
  });
  app.use(express.json());
  const callerOf = (req: Request) => CALLERS[req.get('x-test-user') ?? ''] ?? null;
  app.use(rateLimitMiddleware({ limiter, limitsFor: (req) => (req.path === '/health' ? null : limitsForCaller(TEST_DEFAULTS, callerOf(req), req.ip)) }));
  app.get('/health', (_req, res) => void res.json({ ok: true }));
  app.get('/things', (_req, res) => void res.json({ items: [] }));
  app.get('/missing', (_req, res) => sendProblem(res, { status: 404, code: 'NOT_FOUND', detail: 'no such thing' }));
  app.post('/login', loginAttemptGuard({ limiter }), (_req, res) => void res.status(401).json({ code: 'UNAUTHORIZED' }));
  app.post('/login-strict', loginAttemptGuard({ limiter, ratePerSecond: 1 / 60, burst: 2 }), (_req, res) => void res.json({ ok: true }));
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
};

const limitHeaders = (r: globalThis.Response) => ({
  limit: r.headers.get('x-ratelimit-limit'),
  remaining: r.headers.get('x-ratelimit-remaining'),
  reset: Number(r.headers.get('x-ratelimit-reset')),
});

describe('rate limits (SPEC §3)', function () {
  before(async () => {
    redis = await startRedisServer();
  });
  after(() => redis?.stop());

  for (const flavour of flavours) {
    describe(`token bucket, ${flavour.name} store`, () => {
      let clock: TestClock;
      let limiter: RateLimiter;
      const LIMITS: RateLimits = { ratePerSecond: 5, burst: 3 }; // a token every 200 ms
      beforeEach(async () => {
        clock = flavour.clock();
        limiter = flavour.limiter(clock, `t-${randomUUID()}`);
        expect(await limiter.ready(), 'the store is connected').to.equal(true);
        expect(limiter.store).to.equal(flavour.name);
      });
      afterEach(() => limiter.close());

      it('a full bucket lets exactly `burst` requests through at once, then refuses', async () => {
        const t0 = clock.now();
        const ds = await burstOf(limiter, 'k', LIMITS, 5);
        const t1 = clock.now();
        expect(ds.map((d) => [d.allowed, d.limit, d.remaining, d.retryAfterSeconds])).to.deep.equal([
          [true, 3, 2, 0], [true, 3, 1, 0], [true, 3, 0, 0], [false, 3, 0, 1], [false, 3, 0, 1],
        ]);
        // Full again 3 tokens × 200 ms after the first request.
        for (const d of ds.slice(2)) expectWithin(d.resetEpochSeconds, resetRange(t0, t1, 600), 'reset');
        expectWithin(ds[0]!.resetEpochSeconds, resetRange(t0, t1, 200), 'reset after one request');
      });

      it('gives one token back every 1/r s: the next request passes after 200 ms, not before, and only one', async () => {
        await burstOf(limiter, 'k', LIMITS, 3);
        // Polling makes many refused requests: they take nothing and do not push the refill back.
        const { elapsed, d } = await consumeWhenAllowed(clock, limiter, 'k', LIMITS);
        if (clock.exact) expect(elapsed).to.equal(200);
        else expect(elapsed).to.be.within(195, 200 + 150);
        expect(d.remaining).to.equal(0);
        expect((await limiter.consume('k', LIMITS)).allowed, 'only one token came back').to.equal(false);
      });

      it('sustains r per second once the burst is spent', async () => {
        await burstOf(limiter, 'k', LIMITS, 3);
        const start = clock.now();
        let passed = 0;
        while (clock.now() - start <= 1000) {
          if ((await limiter.consume('k', LIMITS)).allowed) passed++;
          await clock.tick();
        }
        if (clock.exact) expect(passed).to.equal(5);
        else expect(passed).to.be.within(4, 5);
      });

      it('keeps one bucket per key, and different (rate, burst) side by side', async () => {
        await burstOf(limiter, 'a', LIMITS, 3);
        expect((await limiter.consume('a', LIMITS)).allowed).to.equal(false);
        expect(await limiter.consume('b', LIMITS)).to.include({ allowed: true, remaining: 2 });
        const wide = { ratePerSecond: 100, burst: 10 };
        const ds = await burstOf(limiter, 'c', wide, 11);
        expect(ds.map((d) => d.remaining)).to.deep.equal([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]);
        expect(ds.map((d) => d.limit)).to.deep.equal(Array(11).fill(10));
        expect(ds.at(-1)!.allowed).to.equal(false);
        // 1/3 s intervals: no rounding drift lets a 4th request through or refuses a 3rd.
        const thirds = await burstOf(limiter, 'd', { ratePerSecond: 3, burst: 3 }, 4);
        expect(thirds.map((d) => d.allowed)).to.deep.equal([true, true, true, false]);
      });

      it('applies a key\'s new limits at once, keeping what the bucket has used', async () => {
        await burstOf(limiter, 'k', LIMITS, 3);
        const raised = await burstOf(limiter, 'k', { ratePerSecond: 5, burst: 6 }, 4);
        expect(raised.map((d) => [d.allowed, d.remaining])).to.deep.equal([[true, 2], [true, 1], [true, 0], [false, 0]]);
      });

      it('refuses bad limits as a programming error', async () => {
        for (const bad of [{ ratePerSecond: 0, burst: 1 }, { ratePerSecond: 1, burst: 0 }, { ratePerSecond: 1, burst: 1.5 }, { ratePerSecond: NaN, burst: 1 }]) {
          let error: unknown;
          await limiter.consume('k', bad).catch((e: unknown) => (error = e));
          expect(error, JSON.stringify(bad)).to.be.instanceOf(RangeError);
        }
      });
    });

    describe(`over HTTP, ${flavour.name} store`, () => {
      let clock: TestClock;
      let limiter: RateLimiter;
      let app: { url: string; close(): Promise<void> };
      beforeEach(async () => {
        clock = flavour.clock();
        limiter = flavour.limiter(clock, `h-${randomUUID()}`);
        expect(await limiter.ready()).to.equal(true);
        app = await startApp(limiter);
      });
      afterEach(async () => {
        await app.close();
        await limiter.close();
      });
      const get = (path: string, headers: Record<string, string> = {}) => fetch(`${app.url}${path}`, { headers });
      const login = (username: string, ip: string, path = '/login') =>
        fetch(`${app.url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-forwarded-for': ip },
          body: JSON.stringify({ username, password: 'guess' }),
        });

      it('puts X-RateLimit-Limit/-Remaining/-Reset on every response, then answers 429 with Retry-After and a problem', async () => {
        const alice = { 'x-test-user': 'alice', 'x-request-id': 'req-42' };
        const t0 = clock.now();
        const ok = await get('/things', alice);
        const t1 = clock.now();
        expect(ok.status).to.equal(200);
        expect(limitHeaders(ok)).to.include({ limit: '10', remaining: '9' });
        expectWithin(limitHeaders(ok).reset, resetRange(t0, t1, 1000), 'reset after one request');
        const notFound = await get('/missing', alice);
        expect(notFound.status).to.equal(404);
        expect(limitHeaders(notFound)).to.include({ limit: '10', remaining: '8' });
        for (let i = 0; i < 8; i++) expect((await get('/things', alice)).status).to.equal(200);

        const refused = await get('/things', alice);
        const t2 = clock.now();
        expect(refused.status).to.equal(429);
        expect(refused.headers.get('retry-after')).to.equal('1');
        expect(limitHeaders(refused)).to.include({ limit: '10', remaining: '0' });
        expectWithin(limitHeaders(refused).reset, resetRange(t0, t2, 10_000), 'reset of the spent bucket');
        expect(refused.headers.get('content-type')).to.match(/^application\/problem\+json/);
        const body = (await refused.json()) as Record<string, unknown>;
        expect(body).to.include({
          type: 'https://opsledger.dev/problems/rate-limited', title: 'Too Many Requests', status: 429,
          code: 'RATE_LIMITED', request_id: 'req-42', retry_after: 1,
        });
        expect(body['detail']).to.match(/^Too many requests: at most 10 at once and 1 per second\. Retry in 1 s \(at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)\.$/);
        expect(Object.keys(body).sort()).to.deep.equal(['code', 'detail', 'request_id', 'retry_after', 'status', 'title', 'type']);
        // Routes without a bucket stay open and carry no headers.
        const health = await get('/health', alice);
        expect(health.status).to.equal(200);
        expect(health.headers.get('x-ratelimit-limit')).to.equal(null);
      });

      it('limits each user by their own settings, or their role\'s default', async () => {
        const root = await get('/things', { 'x-test-user': 'root' });
        expect(limitHeaders(root)).to.include({ limit: '50', remaining: '49' });
        const bob = { 'x-test-user': 'bob' };
        const statuses = [];
        for (let i = 0; i < 3; i++) statuses.push((await get('/things', bob)).status);
        expect(statuses).to.deep.equal([200, 200, 429]);
        const refused = await get('/things', bob);
        expect(refused.headers.get('retry-after'), 'bob gets a token every 2 s').to.equal('2');
        expect(limitHeaders(refused)).to.include({ limit: '2', remaining: '0' });
        expect(limitHeaders(await get('/things', { 'x-test-user': 'alice' }))).to.include({ limit: '10', remaining: '9' });
      });

      it('limits anonymous requests per IP with the user default', async () => {
        const from = (ip: string) => get('/things', { 'x-forwarded-for': ip });
        for (let i = 0; i < 10; i++) expect((await from('203.0.113.7')).status).to.equal(200);
        expect((await from('203.0.113.7')).status).to.equal(429);
        expect(limitHeaders(await from('203.0.113.8'))).to.include({ limit: '10', remaining: '9' });
        // A signed-in user at the spent address has their own bucket.
        expect((await get('/things', { 'x-forwarded-for': '203.0.113.7', 'x-test-user': 'alice' })).status).to.equal(200);
      });

      it('limits login attempts per IP + username (case-insensitive): 5 a minute by default', async () => {
        const statuses = [];
        for (let i = 0; i < 5; i++) {
          const r = await login('Admin', '198.51.100.1');
          statuses.push(r.status);
          // The headers show the bucket nearest to refusing: login's, not the address'.
          expect(limitHeaders(r)).to.include({ limit: '5', remaining: String(4 - i) });
        }
        expect(statuses).to.deep.equal([401, 401, 401, 401, 401]);
        const refused = await login('aDMIN ', '198.51.100.1');
        expect(refused.status).to.equal(429);
        expect(refused.headers.get('retry-after'), 'a token every 12 s').to.equal('12');
        expect(limitHeaders(refused)).to.include({ limit: '5', remaining: '0' });
        const body = (await refused.json()) as Record<string, unknown>;
        expect(body).to.include({ code: 'RATE_LIMITED', status: 429, retry_after: 12 });
        expect(body['detail']).to.match(/^Too many login attempts for this user from this address: at most 5 at once and 5 per minute\. Retry in 12 s/);
        // Another account from the same address, and the same account from elsewhere, are unaffected.
        expect((await login('alice', '198.51.100.1')).status).to.equal(401);
        expect((await login('admin', '198.51.100.2')).status).to.equal(401);
      });

      it('takes login limits from its options', async () => {
        const statuses = [];
        for (let i = 0; i < 3; i++) statuses.push((await login('carol', '198.51.100.9', '/login-strict')).status);
        expect(statuses).to.deep.equal([200, 200, 429]);
        const refused = await login('carol', '198.51.100.9', '/login-strict');
        expect(refused.headers.get('retry-after')).to.equal('60');
      });
    });
  }

  describe('Redis store', () => {
    const limits: RateLimits = { ratePerSecond: 1, burst: 4 };

    it('two instances (two API processes) share every bucket', async () => {
      const keyPrefix = `s-${randomUUID()}`;
      const a = createRateLimiter({ redisUrl: redis.url, keyPrefix, logger: quietLogger() });
      const b = createRateLimiter({ redisUrl: redis.url, keyPrefix, logger: quietLogger() });
      try {
        expect(await a.ready()).to.equal(true);
        expect(await b.ready()).to.equal(true);
        const seen = [await a.consume('user:1', limits), await b.consume('user:1', limits), await a.consume('user:1', limits), await b.consume('user:1', limits)];
        expect(seen.map((d) => d.remaining)).to.deep.equal([3, 2, 1, 0]);
        expect((await a.consume('user:1', limits)).allowed).to.equal(false);
        expect((await b.consume('user:1', limits)).allowed).to.equal(false);
        expect((await b.consume('user:2', limits)).remaining).to.equal(3);
        // The bucket lives in Redis under the prefix and expires once full again.
        const probe = new Redis(redis.url);
        try {
          const ttl = await probe.pttl(`${keyPrefix}:user:1`);
          expect(ttl).to.be.within(3000, 4000);
        } finally {
          probe.disconnect();
        }
      } finally {
        await a.close();
        await b.close();
      }
    });

    it('fails open to per-instance buckets with a warning while Redis is away, and shares again once it is back', async () => {
      const port = await freePort();
      const logger = quietLogger();
      const limiter = createRateLimiter({ redisUrl: `redis://127.0.0.1:${port}`, keyPrefix: `o-${randomUUID()}`, logger });
      let server: RedisServer | undefined;
      try {
        // Nothing listens yet: requests are still limited, by this process alone.
        const down = await burstOf(limiter, 'k', limits, 5);
        expect(down.map((d) => [d.allowed, d.remaining])).to.deep.equal([[true, 3], [true, 2], [true, 1], [true, 0], [false, 0]]);
        const warnings = logger.lines.filter((l) => l.level === 'warn');
        expect(warnings, 'warned once, not per request').to.have.length(1);
        expect(warnings[0]!.msg).to.match(/Redis unavailable, failing open/);
        expect(warnings[0]!.obj['err']).to.be.a('string').and.not.equal('');

        server = await startRedisServer({ port });
        expect(await limiter.ready(8000), 'reconnected').to.equal(true);
        await waitFor(() => logger.lines.some((l) => l.level === 'info' && /Redis is back/.test(l.msg)), 'the recovery line');
        // Redis has its own (fresh) bucket for the key: the per-instance one is not copied.
        expect(await limiter.consume('k', limits)).to.include({ allowed: true, remaining: 3 });

        // Redis going away mid-flight: back to this instance's buckets ('k' is still spent in it), warned again.
        server.stop();
        expect(await limiter.consume('fresh', limits), 'Redis stopping does not refuse requests').to.include({ allowed: true, remaining: 3 });
        expect((await limiter.consume('k', limits)).allowed).to.equal(false);
        expect(logger.lines.filter((l) => l.level === 'warn')).to.have.length(2);
      } finally {
        await limiter.close();
        server?.stop();
      }
    });
  });

  describe('limits per caller (defaults from SPEC §12)', () => {
    const defaults = loadConfig({});

    it('admin 100/s burst 200, user 10/s burst 20, anonymous per IP at the user default', () => {
      expect(limitsForCaller(defaults, { userId: 'u1', role: 'admin' }, '10.0.0.1')).to.deep.equal({ key: 'user:u1', ratePerSecond: 100, burst: 200 });
      expect(limitsForCaller(defaults, { userId: 'u2', role: 'user' }, '10.0.0.1')).to.deep.equal({ key: 'user:u2', ratePerSecond: 10, burst: 20 });
      expect(limitsForCaller(defaults, null, '10.0.0.1')).to.deep.equal({ key: 'ip:10.0.0.1', ratePerSecond: 10, burst: 20 });
    });

    it('a user\'s own rate_limit_per_second / rate_limit_burst win over the defaults, one at a time', () => {
      expect(limitsForCaller(defaults, { userId: 'u', role: 'admin', rateLimitPerSecond: 3, rateLimitBurst: null }, 'x'))
        .to.deep.equal({ key: 'user:u', ratePerSecond: 3, burst: 200 });
      expect(limitsForCaller(defaults, { userId: 'u', role: 'user', rateLimitBurst: 7 }, 'x')).to.deep.equal({ key: 'user:u', ratePerSecond: 10, burst: 7 });
    });

    it('login buckets fold the username; 5 attempts a minute by default', () => {
      expect(loginAttemptKey('1.2.3.4', '  Admin ')).to.equal(loginAttemptKey('1.2.3.4', 'admin'));
      expect(loginAttemptKey('1.2.3.4', 'admin')).to.not.equal(loginAttemptKey('1.2.3.5', 'admin'));
      expect(loginAttemptKey('1.2.3.4', undefined)).to.equal('login:1.2.3.4:');
      expect(loginAttemptKey('1.2.3.4', 'x'.repeat(10_000))).to.have.length('login:1.2.3.4:'.length + 256);
      expect(DEFAULT_LOGIN_LIMITS).to.deep.equal({ ratePerSecond: 5 / 60, burst: 5 });
    });
  });
});
