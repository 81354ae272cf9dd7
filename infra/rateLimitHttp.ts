// The HTTP side of SPEC §3's rate limits: a bucket per user (or per IP when anonymous)
// on every request, and one per IP + username on login against password guessing.
// Every response says where its caller stands (X-RateLimit-*); a refusal is a 429
// problem with Retry-After.
import type { Request, RequestHandler, Response } from 'express';
import type { Config } from './config.ts';
import type { UserRole } from './auth/permissions.ts';
import { statusOf } from './http/errorStatus.ts';
import { sendProblem } from './http/problem.ts';
import type { RateDecision, RateLimiter, RateLimits } from './rateLimit.ts';

export type KeyedRateLimits = RateLimits & { key: string };

export type RateLimitDefaults = Pick<Config, 'defaultRateLimitPerSecond' | 'defaultRateLimitBurst' | 'adminRateLimitPerSecond' | 'adminRateLimitBurst'>;

/** What the limits of an authenticated caller depend on: the user's role and their own settings (null/undefined = the role's default). */
export type RateLimitedCaller = {
  userId: string;
  role: UserRole;
  rateLimitPerSecond?: number | null | undefined;
  rateLimitBurst?: number | null | undefined;
};

/** 5 attempts per minute, 5 at once, per IP + username. */
export const DEFAULT_LOGIN_LIMITS: Readonly<RateLimits> = { ratePerSecond: 5 / 60, burst: 5 };

const clientIp = (req: Request): string => req.ip ?? req.socket.remoteAddress ?? 'unknown';

/**
 * The bucket of a request: per user (their own limits, else their role's default), or per
 * IP with the user default when anonymous. An API token shares its owner's bucket.
 */
export const limitsForCaller = (defaults: RateLimitDefaults, caller: RateLimitedCaller | null | undefined, ip: string | undefined): KeyedRateLimits => {
  if (!caller) return { key: `ip:${ip ?? 'unknown'}`, ratePerSecond: defaults.defaultRateLimitPerSecond, burst: defaults.defaultRateLimitBurst };
  const admin = caller.role === 'admin';
  return {
    key: `user:${caller.userId}`,
    ratePerSecond: caller.rateLimitPerSecond ?? (admin ? defaults.adminRateLimitPerSecond : defaults.defaultRateLimitPerSecond),
    burst: caller.rateLimitBurst ?? (admin ? defaults.adminRateLimitBurst : defaults.defaultRateLimitBurst),
  };
};

/**
 * The login bucket's key. The username is folded (NFKC, trimmed, lower-cased) so that
 * spellings of one account share a bucket, and capped so a huge one cannot bloat the store.
 */
export const loginAttemptKey = (ip: string, username: unknown): string =>
  `login:${ip}:${(typeof username === 'string' ? username : '').normalize('NFKC').trim().toLowerCase().slice(0, 256)}`;

/**
 * Sets X-RateLimit-Limit/-Remaining/-Reset. When a request went through several buckets
 * (the caller's, then login's) the headers describe the one nearest to refusing.
 */
export const setRateLimitHeaders = (res: Response, d: RateDecision): void => {
  const shown = res.locals['rateLimit'] as RateDecision | undefined;
  if (shown && shown.remaining < d.remaining) return;
  res.locals['rateLimit'] = d;
  res.setHeader('X-RateLimit-Limit', String(d.limit));
  res.setHeader('X-RateLimit-Remaining', String(d.remaining));
  res.setHeader('X-RateLimit-Reset', String(d.resetEpochSeconds));
};

const perSecond = (rate: number) =>
  rate >= 1 ? `${+rate.toFixed(2)} per second` : `${+(rate * 60).toFixed(2)} per minute`;

/** Answers 429 with Retry-After and a RATE_LIMITED problem saying when to come back. */
export const sendRateLimited = (res: Response, d: RateDecision, limits: RateLimits, what = 'requests'): void => {
  setRateLimitHeaders(res, d);
  res.set('Retry-After', String(d.retryAfterSeconds));
  const at = new Date(Math.ceil(Date.now() / 1000 + d.retryAfterSeconds) * 1000).toISOString().replace('.000Z', 'Z');
  sendProblem(res, {
    status: statusOf('RATE_LIMITED'),
    code: 'RATE_LIMITED',
    detail: `Too many ${what}: at most ${limits.burst} at once and ${perSecond(limits.ratePerSecond)}. Retry in ${d.retryAfterSeconds} s (at ${at}).`,
    extra: { retry_after: d.retryAfterSeconds },
  });
};

/** A bucket to take from: its key, its limits, and what it counts (for the 429's detail). */
export type Bucket = readonly [key: string, limits: RateLimits, what: string];

/**
 * Takes one from each bucket in turn and sets X-RateLimit-*; at the first empty one it
 * answers 429 and resolves false (the caller stops there).
 */
export const takeFromBuckets = async (limiter: RateLimiter, res: Response, buckets: readonly Bucket[]): Promise<boolean> => {
  for (const [key, limits, what] of buckets) {
    const d = await limiter.consume(key, limits);
    if (!d.allowed) {
      sendRateLimited(res, d, limits, what);
      return false;
    }
    setRateLimitHeaders(res, d);
  }
  return true;
};

/**
 * Rate limits every request that limitsFor gives a bucket (null = not limited, e.g. health
 * checks). Mount after authentication so limitsFor can see the caller. The limiter never
 * rejects for a store outage (it fails open, see createRateLimiter); bad limits are a bug
 * and reach the error handler.
 */
export const rateLimitMiddleware = (opts: {
  limiter: RateLimiter;
  limitsFor: (req: Request, res: Response) => KeyedRateLimits | null | Promise<KeyedRateLimits | null>;
}): RequestHandler =>
  async (req, res, next) => {
    const limits = await opts.limitsFor(req, res);
    if (!limits || (await takeFromBuckets(opts.limiter, res, [[limits.key, limits, 'requests']]))) next();
  };

/**
 * For the login route, after the body is parsed and in addition to rateLimitMiddleware:
 * a bucket per client IP + username, so one address cannot guess one account's password
 * faster than `ratePerSecond` (default DEFAULT_LOGIN_LIMITS). Every attempt counts.
 */
export const loginAttemptGuard = (opts: {
  limiter: RateLimiter;
  ratePerSecond?: number;
  burst?: number;
  usernameOf?: (req: Request) => unknown;
}): RequestHandler => {
  const limits: RateLimits = { ratePerSecond: opts.ratePerSecond ?? DEFAULT_LOGIN_LIMITS.ratePerSecond, burst: opts.burst ?? DEFAULT_LOGIN_LIMITS.burst };
  const usernameOf = opts.usernameOf ?? ((req: Request) => (req.body as { username?: unknown } | undefined)?.username);
  return async (req, res, next) => {
    const key = loginAttemptKey(clientIp(req), usernameOf(req));
    if (await takeFromBuckets(opts.limiter, res, [[key, limits, 'login attempts for this user from this address']])) next();
  };
};
