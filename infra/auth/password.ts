// Password hashing with scrypt from node:crypto (DESIGN §6): memory-hard, so a stolen
// users table costs an attacker 32 MiB and tens of milliseconds per guess, and no native
// dependency is needed.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

// OWASP's scrypt floor (N=2^15, r=8, p=1). The parameters travel inside every hash, so
// raising them later only affects new hashes and old ones keep verifying.
const N = 2 ** 15;
const R = 8;
const P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 64;

// Bounds on what an encoded hash may ask for: a corrupted or hostile row must not make a
// login allocate gigabytes or spin for minutes.
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;

export const MIN_PASSWORD_LENGTH = 8;
// An upper bound keeps request bodies and hashing input sane; scrypt pre-hashes its input
// with PBKDF2, so the cost is not the concern — megabyte "passwords" are.
export const MAX_PASSWORD_LENGTH = 1024;

type Params = { n: number; r: number; p: number; salt: Buffer; hash: Buffer };

// scrypt needs 128·N·r bytes; Node's default maxmem (32 MiB) is exactly that for our
// parameters and OpenSSL wants a little more on top, so allow twice the need.
const maxmemFor = (n: number, r: number) => 2 * 128 * n * r;

const derive = (password: string, salt: Buffer, n: number, r: number, p: number, keyLength: number): Promise<Buffer> => {
  const options: ScryptOptions = { N: n, r, p, maxmem: maxmemFor(n, r) };
  return new Promise((resolve, reject) =>
    // NFC: the same password typed on two keyboards may arrive composed or decomposed.
    scrypt(password.normalize('NFC'), salt, keyLength, options, (err, key) => (err ? reject(err) : resolve(key))),
  );
};

const b64 = (buf: Buffer) => buf.toString('base64');

/** `scrypt$N$r$p$salt_b64$hash_b64`: self-describing so that the parameters can change later. */
export const hashPassword = async (password: string): Promise<string> => {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, N, R, P, KEY_BYTES);
  return ['scrypt', N, R, P, b64(salt), b64(hash)].join('$');
};

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const INTEGER = /^[1-9]\d{0,9}$/;

/** The parameters of an encoded hash, or null when it is not one we could have written. */
const parse = (encoded: string): Params | null => {
  const parts = encoded.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [, nText, rText, pText, saltText, hashText] = parts as [string, string, string, string, string, string];
  if (![nText, rText, pText].every((t) => INTEGER.test(t)) || !BASE64.test(saltText) || !BASE64.test(hashText)) return null;
  const n = Number(nText);
  const r = Number(rText);
  const p = Number(pText);
  // N must be a power of two above 1 (scrypt's own rule).
  if (n < 2 || n > MAX_N || (n & (n - 1)) !== 0 || r > MAX_R || p > MAX_P) return null;
  const salt = Buffer.from(saltText, 'base64');
  const hash = Buffer.from(hashText, 'base64');
  if (salt.length < 8 || hash.length < 16 || hash.length > 256) return null;
  return { n, r, p, salt, hash };
};

/** Whether `password` matches `encoded`; false (never a throw) for a malformed hash. */
export const verifyPassword = async (password: string, encoded: string): Promise<boolean> => {
  const params = parse(encoded);
  if (!params) return false;
  const candidate = await derive(password, params.salt, params.n, params.r, params.p, params.hash.length);
  // Constant time: how many leading bytes matched must not show in the response time.
  return timingSafeEqual(candidate, params.hash);
};

// A hash of nothing anybody knows (random salt and random "hash"), with today's parameters,
// so that verifying against it costs exactly what verifying a real user's hash costs.
const DUMMY = ['scrypt', N, R, P, b64(randomBytes(SALT_BYTES)), b64(randomBytes(KEY_BYTES))].join('$');

/**
 * Spend the time of one real verification and answer false. Login calls this when the
 * username does not exist, so that the response time does not tell which usernames do.
 */
export const dummyVerify = async (password = ''): Promise<false> => {
  await verifyPassword(password, DUMMY);
  return false;
};

/** Why `password` is not acceptable, or null when it is. Counted in characters (code points), not bytes. */
export const validatePasswordPolicy = (password: string): string | null => {
  if (typeof password !== 'string') return 'password must be a string';
  const length = [...password].length;
  if (length < MIN_PASSWORD_LENGTH) return `password must be at least ${MIN_PASSWORD_LENGTH} characters`;
  if (length > MAX_PASSWORD_LENGTH) return `password must be at most ${MAX_PASSWORD_LENGTH} characters`;
  return null;
};
