// The two keys of SPEC §2/§12: SECRET_KEY signs session JWTs, SECRETS_KEY encrypts the
// vault. Configured values win; a key that is not configured is generated once and kept
// in DATA_DIR/secrets.json (mode 0600), so that `npm start` on a fresh machine needs
// nothing and a restart does not log everyone out or lose every stored secret.
import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from './config.ts';
import { AppError } from './errors.ts';

export const SECRETS_FILE = 'secrets.json';
const FILE_VERSION = 1;
const SECRET_KEY_BYTES = 32; // HS256: at least the hash size (RFC 7518 §3.2)
const SECRETS_KEY_BYTES = 32; // AES-256

export type SecretKeys = {
  /** HMAC key for session JWTs, ≥ 32 bytes. */
  secretKey: Buffer;
  /** AES-256-GCM key for the vault, exactly 32 bytes. */
  secretsKey: Buffer;
  /** Where each came from: the environment or the secrets file. */
  sources: { secretKey: 'env' | 'file'; secretsKey: 'env' | 'file' };
  /** True when this call created the secrets file (worth one log line). */
  generated: boolean;
  /** Things to log at warn level; never contains a key. */
  warnings: string[];
};

type StoredKeys = { version: typeof FILE_VERSION; secretKey: string; secretsKey: string };

/**
 * SECRETS_KEY → exactly 32 bytes. The rule:
 * - 64 hex characters: those 32 bytes;
 * - 43 or 44 characters of base64 or base64url (with or without the one `=`) that decode to
 *   32 bytes: those 32 bytes (what `openssl rand -base64 32` prints);
 * - anything else (a passphrase; the config demands ≥ 32 characters): SHA-256 of its UTF-8.
 * So a generated random key is used as is, and any other value still yields a full-size key.
 */
export const deriveSecretsKey = (value: string): Buffer => {
  if (/^[0-9a-f]{64}$/i.test(value)) return Buffer.from(value, 'hex');
  if (/^[A-Za-z0-9+/]{43}=?$/.test(value) || /^[A-Za-z0-9_-]{43}=?$/.test(value)) {
    const decoded = Buffer.from(value, 'base64');
    if (decoded.length === SECRETS_KEY_BYTES) return decoded;
  }
  return createHash('sha256').update(value, 'utf8').digest();
};

/** SECRET_KEY is used as its UTF-8 bytes, so that other tools given the same string verify the same tokens. */
const secretKeyFrom = (value: string): Buffer => {
  const key = Buffer.from(value, 'utf8');
  if (key.length < SECRET_KEY_BYTES) throw new AppError('CONFIG_INVALID', `SECRET_KEY must be at least ${SECRET_KEY_BYTES} bytes`);
  return key;
};

const insecure = (path: string, mode: number) =>
  new AppError('SECRETS_FILE_INSECURE',
    `${path} is accessible by group or others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); run \`chmod 600 ${path}\` and start again`,
    { path });

const invalidFile = (path: string, why: string) =>
  // Never regenerate over a bad file: its keys may be the only ones that decrypt the vault.
  new AppError('SECRETS_FILE_INVALID', `${path} is not a valid Opsledger secrets file (${why}); restore it from a backup or move it away`, { path });

const readStored = async (path: string): Promise<StoredKeys | null> => {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if (!info.isFile()) throw invalidFile(path, 'not a regular file');
  // Group or world access would let another local account read the vault key or swap the
  // signing key and forge sessions. POSIX modes mean nothing on Windows.
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) throw insecure(path, info.mode);
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw invalidFile(path, 'not JSON');
  }
  const s = parsed as Partial<StoredKeys> | null;
  if (s?.version !== FILE_VERSION || typeof s.secretKey !== 'string' || typeof s.secretsKey !== 'string') {
    throw invalidFile(path, `expected {"version":${FILE_VERSION},"secretKey":…,"secretsKey":…}`);
  }
  if (Buffer.from(s.secretKey, 'base64').length < SECRET_KEY_BYTES || Buffer.from(s.secretsKey, 'base64').length !== SECRETS_KEY_BYTES) {
    throw invalidFile(path, 'a key has the wrong length');
  }
  return s as StoredKeys;
};

/**
 * Writes `content` to `path` only if nothing is there yet, all or nothing: a temp file,
 * fsynced, then put in place. link() refuses to replace an existing file, so two processes
 * starting at once on a shared DATA_DIR agree on the first one's keys; rename() is the
 * fallback for file systems without hard links. Returns false when the file already existed.
 */
const createAtomically = async (dir: string, path: string, content: string): Promise<boolean> => {
  const temp = join(dir, `.${SECRETS_FILE}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', 0o600);
  try {
    await handle.chmod(0o600); // whatever the umask
    await handle.writeFile(content, 'utf8');
    await handle.sync(); // losing these keys after a crash would lose the vault
  } finally {
    await handle.close();
  }
  try {
    try {
      await link(temp, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return false;
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
      await rename(temp, path);
    }
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  // The new directory entry itself must survive a crash too.
  const dirHandle = await open(dir, 'r').catch(() => null);
  await dirHandle?.sync().catch(() => undefined);
  await dirHandle?.close();
  return true;
};

export const loadSecretKeys = async (
  config: Pick<Config, 'secretKey' | 'secretsKey'>,
  opts: { dataDir: string; embedded: boolean },
): Promise<SecretKeys> => {
  const warnings: string[] = [];
  // Both configured: the data directory is not touched at all (it may be read-only).
  if (config.secretKey !== undefined && config.secretsKey !== undefined) {
    return { secretKey: secretKeyFrom(config.secretKey), secretsKey: deriveSecretsKey(config.secretsKey),
      sources: { secretKey: 'env', secretsKey: 'env' }, generated: false, warnings };
  }

  const path = join(opts.dataDir, SECRETS_FILE);
  // 0700: the directory holds the key file and (embedded) the whole database.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  let stored = await readStored(path);
  let generated = false;
  if (!stored) {
    // Both keys are generated even when one is configured, so that unsetting the variable
    // later falls back to a stable key instead of a new one each start.
    const fresh: StoredKeys = { version: FILE_VERSION,
      secretKey: randomBytes(SECRET_KEY_BYTES).toString('base64'), secretsKey: randomBytes(SECRETS_KEY_BYTES).toString('base64') };
    generated = await createAtomically(opts.dataDir, path, `${JSON.stringify(fresh, null, 2)}\n`);
    stored = generated ? fresh : await readStored(path);
    if (!stored) throw invalidFile(path, 'it vanished while being created');
  }
  if (!opts.embedded) {
    // Every API instance must hold the same keys, or sessions and vault secrets written by
    // one are unreadable by the others.
    warnings.push(`SECRET_KEY/SECRETS_KEY not set: using keys kept in ${path}; with several instances, set both variables to the same values everywhere`);
  }
  return {
    secretKey: config.secretKey !== undefined ? secretKeyFrom(config.secretKey) : Buffer.from(stored.secretKey, 'base64'),
    secretsKey: config.secretsKey !== undefined ? deriveSecretsKey(config.secretsKey) : Buffer.from(stored.secretsKey, 'base64'),
    sources: { secretKey: config.secretKey !== undefined ? 'env' : 'file', secretsKey: config.secretsKey !== undefined ? 'env' : 'file' },
    generated,
    warnings,
  };
};
