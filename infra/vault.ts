// The vault (DESIGN §6): SSH passwords and keys, ACME account keys and certificate keys
// live here, encrypted with AES-256-GCM under SECRETS_KEY, and nowhere else. Events
// carry the row id only, so deleting an owner's rows (deleteOwner) leaves nothing
// readable anywhere, even in the immutable event log: crypto-shredding.
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { AppError } from './errors.ts';
import type { Tables } from './db/tables.ts';

const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
// 96-bit IVs are GCM's native size; random per secret, never reused under one key
// (2^-32 collision odds only after ~2^32 secrets, far beyond a control plane's needs).
const IV_BYTES = 12;
const TAG_BYTES = 16;
// Rows record the key that encrypted them so that SECRETS_KEY can be rotated row by row
// later; today there is one key.
const KEY_VERSION = 1;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface Vault {
  /** Encrypts and stores; with an `id` of the same owner it replaces that secret (so a retried command is harmless). */
  put(owner: string, kind: string, plaintext: string | Buffer, id?: string): Promise<string>;
  /** The plaintext, or null when there is no such secret. */
  get(id: string): Promise<Buffer | null>;
  /** The plaintext as UTF-8, or null. */
  getText(id: string): Promise<string | null>;
  /** Deletes every secret of the owner; returns how many. */
  deleteOwner(owner: string): Promise<number>;
  /** Returns whether a secret was deleted. */
  delete(id: string): Promise<boolean>;
}

/**
 * Additional authenticated data: binds each ciphertext to its row. Copying a ciphertext
 * (with its IV and tag) into another row, or changing a row's owner or kind, makes it fail
 * to decrypt rather than hand one owner's secret to another. JSON keeps the fields
 * unambiguous (no "a|b" + "c" = "a" + "b|c").
 */
const aad = (id: string, owner: string, kind: string): Buffer =>
  Buffer.from(JSON.stringify(['opsledger-vault', KEY_VERSION, id.toLowerCase(), owner, kind]), 'utf8');

// node-pg returns Buffer, PGlite a plain Uint8Array; crypto wants either, but copy-free.
const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

// One message for every failure (wrong key, tampered or moved row, unknown key version):
// which one it was would tell an attacker what to try next.
const decryptFailed = () => new AppError('VAULT_DECRYPT_FAILED', 'a stored secret could not be decrypted');

export const createVault = (db: Kysely<Tables>, key: Buffer): Vault => {
  if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) throw new Error(`the vault key must be exactly ${KEY_BYTES} bytes`);
  // A private copy: a caller zeroing or reusing its buffer must not change our key.
  const secretsKey = Buffer.from(key);

  const get = async (id: string): Promise<Buffer | null> => {
    // Not a uuid cannot exist; answering null also spares PostgreSQL a cast error.
    if (!UUID.test(id)) return null;
    const row = await db.selectFrom('vault_secrets')
      .select(['id', 'owner', 'kind', 'ciphertext', 'iv', 'auth_tag', 'key_version'])
      .where('id', '=', id).executeTakeFirst();
    if (!row) return null;
    if (row.key_version !== KEY_VERSION) throw decryptFailed();
    try {
      const iv = asBuffer(row.iv);
      const tag = asBuffer(row.auth_tag);
      if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw decryptFailed();
      const decipher = createDecipheriv(ALGORITHM, secretsKey, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(aad(row.id, row.owner, row.kind));
      decipher.setAuthTag(tag);
      // final() throws when the tag does not match; nothing decrypted is returned before that.
      return Buffer.concat([decipher.update(asBuffer(row.ciphertext)), decipher.final()]);
    } catch {
      throw decryptFailed();
    }
  };

  return {
    async put(owner, kind, plaintext, id = randomUUID()) {
      if (!UUID.test(id)) throw new AppError('VALIDATION_FAILED', 'a vault secret id must be a UUID');
      if (owner === '' || kind === '') throw new AppError('VALIDATION_FAILED', 'a vault secret needs an owner and a kind');
      const rowId = id.toLowerCase(); // as PostgreSQL will return it, so that the AAD matches on read
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(ALGORITHM, secretsKey, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(rowId, owner, kind));
      const data = typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext;
      const ciphertext = Buffer.concat([cipher.update(data), cipher.final()]);
      const values = { ciphertext, iv, auth_tag: cipher.getAuthTag(), key_version: KEY_VERSION, kind };
      const written = await db.insertInto('vault_secrets')
        .values({ id: rowId, owner, ...values })
        // Replacing is allowed only within the same owner: an id must never let one owner
        // overwrite (and so take over) another owner's secret.
        .onConflict((oc) => oc.column('id').doUpdateSet(values).where('vault_secrets.owner', '=', owner))
        .returning('id').executeTakeFirst();
      if (!written) throw new AppError('CONFLICT', `vault secret ${rowId} belongs to another owner`);
      return rowId;
    },
    get,
    async getText(id) {
      const plaintext = await get(id);
      return plaintext === null ? null : plaintext.toString('utf8');
    },
    async deleteOwner(owner) {
      const result = await db.deleteFrom('vault_secrets').where('owner', '=', owner).executeTakeFirst();
      return Number(result.numDeletedRows);
    },
    async delete(id) {
      if (!UUID.test(id)) return false;
      const result = await db.deleteFrom('vault_secrets').where('id', '=', id).executeTakeFirst();
      return result.numDeletedRows > 0n;
    },
  };
};
