// API tokens (SPEC §4): `opl_` + 40 random base62 characters + a 6-character base62 CRC32
// of those 40. The prefix makes a leaked token recognisable to secret scanners; the
// checksum rejects typos and random garbage before any database lookup. Only the SHA-256
// of a token is stored, so a copy of the database authenticates nobody.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const API_TOKEN_PREFIX = 'opl_';
const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const RANDOM_CHARS = 40;
const CHECKSUM_CHARS = 6; // 62^6 > 2^32: any CRC32 fits
const TOKEN_PATTERN = new RegExp(`^${API_TOKEN_PREFIX}[0-9A-Za-z]{${RANDOM_CHARS + CHECKSUM_CHARS}}$`);
// What may be shown in lists so that a user can tell tokens apart: the prefix and the
// first random characters, 4 + 8 chars, which leave 32 secret characters (≈190 bits, SPEC: ≥ 160).
const DISPLAY_PREFIX_LENGTH = API_TOKEN_PREFIX.length + 8;

/**
 * 32 characters drawn uniformly from the 62, i.e. 32·log2(62) ≈ 190 random bits (≥ 160).
 * Rejection sampling: bytes ≥ 248 (= 4·62) are dropped so that `% 62` has no bias.
 * (24 random bytes would not fit: 62^32 < 2^192; 33 characters would be needed.)
 */
const randomBase62 = (length: number): string => {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length + 8)) {
      if (byte < 248) out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
};

/** Fixed width, left-padded with '0', so the checksum's length never depends on its value. */
const toBase62 = (value: number, width: number): string => {
  let out = '';
  for (let v = value; v > 0; v = Math.floor(v / 62)) out = ALPHABET[v % 62] + out;
  return out.padStart(width, ALPHABET[0]);
};

const checksumOf = (random: string): string => toBase62(crc32(random), CHECKSUM_CHARS);

export type GeneratedApiToken = {
  /** Shown to the user once, never stored. */
  token: string;
  /** SHA-256 hex: what the database keeps and looks tokens up by. */
  tokenHash: string;
  /** Safe to store and show (e.g. `opl_AbC12xYz`). */
  prefix: string;
};

export const generateApiToken = (): GeneratedApiToken => {
  const random = randomBase62(RANDOM_CHARS);
  const token = API_TOKEN_PREFIX + random + checksumOf(random);
  return { token, tokenHash: hashApiToken(token), prefix: token.slice(0, DISPLAY_PREFIX_LENGTH) };
};

/** Format and checksum: true for every token we issued, false for nearly every typo. */
export const looksLikeApiToken = (s: string): boolean => {
  if (typeof s !== 'string' || !TOKEN_PATTERN.test(s)) return false;
  const random = s.slice(API_TOKEN_PREFIX.length, API_TOKEN_PREFIX.length + RANDOM_CHARS);
  // Not secret-dependent timing worth hiding: the checksum is derived from public input
  // and a mismatch leads to no lookup at all.
  return checksumOf(random) === s.slice(API_TOKEN_PREFIX.length + RANDOM_CHARS);
};

// A fast hash is enough here (unlike passwords): the input has ≥ 160 random bits, so
// there is nothing to brute-force, and lookups must stay cheap on every request.
export const hashApiToken = (token: string): string => createHash('sha256').update(token, 'utf8').digest('hex');

const SHA256_HEX = /^[0-9a-f]{64}$/i;

/** Constant-time equality of two SHA-256 hex digests; false if either is not one. */
export const sameHash = (a: string, b: string): boolean => {
  if (typeof a !== 'string' || typeof b !== 'string' || !SHA256_HEX.test(a) || !SHA256_HEX.test(b)) return false;
  return timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
};
