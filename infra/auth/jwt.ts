// Session tokens: HS256 JWTs signed with SECRET_KEY (SPEC §4, DESIGN §6). Stateless for
// speed, yet revocable: `sv` is the user's session version, bumped when the user is
// deactivated or changes password, and the caller compares it with the stored one.
import { createSecretKey, randomUUID, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { AppError } from '../errors.ts';

export const SESSION_ISSUER = 'opsledger';
export const SESSION_TYPE = 'session';
// The one algorithm we sign with is the only one we accept: this list is what stops
// `alg: none` and algorithm-confusion tokens, so it is never taken from the token.
const ALGORITHMS: jwt.Algorithm[] = ['HS256'];
// HS256's key should be at least as long as its output (RFC 7518 §3.2).
const MIN_SECRET_BYTES = 32;

export type SessionSecret = string | Buffer;

export type SessionClaims = {
  /** The user id. */
  sub: string;
  /** The user's session version when the token was issued. */
  sv: number;
  /** Seconds since the epoch. */
  iat: number;
  exp: number;
  jti: string;
  typ: typeof SESSION_TYPE;
  iss: typeof SESSION_ISSUER;
};

const checkSecret = (secret: SessionSecret): void => {
  // A short key is a deployment mistake, never the caller's: fail loudly, not with 401.
  if (Buffer.byteLength(secret) < MIN_SECRET_BYTES) throw new Error(`the session secret must be at least ${MIN_SECRET_BYTES} bytes`);
};

// jsonwebtoken turns a string or Buffer secret into a KeyObject on every call, first
// trying it as a public key (an exception each time): 15 % of an authenticated request's
// CPU. The KeyObject of the last secret used is kept instead.
let lastKey: { secret: SessionSecret; key: KeyObject } | null = null;
const keyOf = (secret: SessionSecret): KeyObject => {
  if (lastKey?.secret !== secret) lastKey = { secret, key: createSecretKey(Buffer.from(secret)) };
  return lastKey.key;
};

const seconds = (now: Date | number) => Math.floor((typeof now === 'number' ? now : now.getTime()) / 1000);

export const signSession = (
  subject: { userId: string; sessionVersion: number },
  opts: { secret: SessionSecret; expiresInSeconds: number; now?: Date | number },
): string => {
  checkSecret(opts.secret);
  if (!Number.isSafeInteger(subject.sessionVersion) || subject.sessionVersion < 0) throw new Error('sessionVersion must be a non-negative integer');
  if (!Number.isSafeInteger(opts.expiresInSeconds) || opts.expiresInSeconds < 1) throw new Error('expiresInSeconds must be a positive integer');
  const iat = seconds(opts.now ?? Date.now());
  const claims: SessionClaims = {
    sub: subject.userId, sv: subject.sessionVersion, iat, exp: iat + opts.expiresInSeconds,
    // A unique id per token: lets a single token be denied later and tells log lines apart.
    jti: randomUUID(), typ: SESSION_TYPE, iss: SESSION_ISSUER,
  };
  return jwt.sign(claims, keyOf(opts.secret), { algorithm: 'HS256' });
};

const invalid = () => new AppError('UNAUTHORIZED', 'invalid token');

/**
 * The claims of a valid session token. Throws AppError TOKEN_EXPIRED for a genuine token
 * past its `exp` (so a client knows to log in again) and UNAUTHORIZED for anything else;
 * the library's own message never reaches the caller.
 */
export const verifySession = (token: string, opts: { secret: SessionSecret; now?: Date | number }): SessionClaims => {
  checkSecret(opts.secret);
  let payload: unknown;
  try {
    // jsonwebtoken checks the signature before `exp`, so "expired" is only ever said of a
    // token we really issued.
    payload = jwt.verify(token, keyOf(opts.secret), {
      algorithms: ALGORITHMS,
      issuer: SESSION_ISSUER,
      ...(opts.now !== undefined ? { clockTimestamp: seconds(opts.now) } : {}),
    });
  } catch (err) {
    if (err instanceof jwt.TokenExpiredError) throw new AppError('TOKEN_EXPIRED', 'token expired');
    throw invalid();
  }
  // `typ` keeps any other token we may sign with the same key (say, a password reset
  // link) from being accepted as a session.
  if (typeof payload !== 'object' || payload === null) throw invalid();
  const c = payload as Record<string, unknown>;
  if (c.typ !== SESSION_TYPE || typeof c.sub !== 'string' || c.sub === '' || typeof c.jti !== 'string'
    || !Number.isSafeInteger(c.sv) || (c.sv as number) < 0 || !Number.isSafeInteger(c.iat) || !Number.isSafeInteger(c.exp)) {
    throw invalid();
  }
  return { sub: c.sub, sv: c.sv as number, iat: c.iat as number, exp: c.exp as number, jti: c.jti, typ: SESSION_TYPE, iss: SESSION_ISSUER };
};

/**
 * verifySession with a memory of tokens already verified: checking an HMAC and parsing
 * the token again on every request was a tenth of a cheap read's CPU. Only a byte-equal
 * token hits, so nothing is accepted that was not verified once with this secret; expiry
 * is still checked on every call. Bounded: when full it starts over.
 */
export const createSessionVerifier = (opts: { secret: SessionSecret; max?: number }) => {
  checkSecret(opts.secret);
  const max = opts.max ?? 10_000;
  const verified = new Map<string, SessionClaims>();
  return (token: string, now: Date | number = Date.now()): SessionClaims => {
    const hit = verified.get(token);
    if (hit) {
      // jsonwebtoken's rule: expired once now ≥ exp.
      if (seconds(now) >= hit.exp) {
        verified.delete(token);
        throw new AppError('TOKEN_EXPIRED', 'token expired');
      }
      return hit;
    }
    const claims = verifySession(token, { secret: opts.secret, now });
    if (verified.size >= max) verified.clear();
    verified.set(token, claims);
    return claims;
  };
};
