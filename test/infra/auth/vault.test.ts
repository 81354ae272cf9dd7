import { randomBytes, randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Database } from '../../../infra/db/database.ts';
import { createVault, type Vault } from '../../../infra/vault.ts';
import { FLAVOURS, freshDatabase } from '../../support/databases.ts';
import { expectCode } from '../../support/expectCode.ts';

// PGlite as embedded mode runs it, and a server, where bytea arrives as Buffer instead.
for (const flavour of FLAVOURS) {
  describe(`vault (${flavour})`, () => {
    let database: Database;
    let key: Buffer;
    let vault: Vault;
    before(async () => {
      database = await freshDatabase(flavour);
    });
    after(async () => {
      await database?.close();
    });
    beforeEach(() => {
      key = randomBytes(32);
      vault = createVault(database.db, key);
    });

    it('round-trips text and binary secrets', async () => {
      const textId = await vault.put('system:1', 'ssh-password', 'hunter2-ünïcode');
      const bytes = randomBytes(300);
      const binaryId = await vault.put('system:1', 'ssh-key', bytes);
      expect(textId).to.match(/^[0-9a-f-]{36}$/);
      expect(await vault.getText(textId)).to.equal('hunter2-ünïcode');
      expect((await vault.get(binaryId))!.equals(bytes)).to.equal(true);
      const empty = await vault.put('system:1', 'empty', '');
      expect(await vault.getText(empty)).to.equal('');
    });

    it('answers null for an unknown or malformed id', async () => {
      expect(await vault.get(randomUUID())).to.equal(null);
      expect(await vault.getText('not-a-uuid')).to.equal(null);
      expect(await vault.delete('not-a-uuid')).to.equal(false);
    });

    it('uses the id it is given, and replaces the secret when the same owner puts it again', async () => {
      const id = randomUUID().toUpperCase();
      expect(await vault.put('system:2', 'ssh-password', 'first', id)).to.equal(id.toLowerCase());
      expect(await vault.put('system:2', 'ssh-password', 'second', id)).to.equal(id.toLowerCase());
      expect(await vault.getText(id.toLowerCase())).to.equal('second');
      await expectCode(vault.put('system:3', 'ssh-password', 'takeover', id), 'CONFLICT');
      expect(await vault.getText(id.toLowerCase())).to.equal('second');
    });

    it('refuses an id that is not a UUID', async () => {
      await expectCode(vault.put('system:1', 'x', 'y', 'row-1'), 'VALIDATION_FAILED');
    });

    it('fails with VAULT_DECRYPT_FAILED, revealing nothing, under the wrong key', async () => {
      const id = await vault.put('system:1', 'ssh-password', 'top secret');
      const err = await expectCode(createVault(database.db, randomBytes(32)).get(id), 'VAULT_DECRYPT_FAILED');
      expect(err.message).to.equal('a stored secret could not be decrypted');
      expect(err.details).to.equal(undefined);
      expect(err.message).to.not.include(id);
    });

    it('fails when a ciphertext is moved into another row (the row id and owner are authenticated)', async () => {
      const a = await vault.put('system:a', 'ssh-password', 'secret of a');
      const b = await vault.put('system:b', 'ssh-password', 'secret of b');
      const c = await vault.put('system:a', 'ssh-password', 'another secret of a');
      const rowA = await database.db.selectFrom('vault_secrets').selectAll().where('id', '=', a).executeTakeFirstOrThrow();
      const copy = { ciphertext: rowA.ciphertext, iv: rowA.iv, auth_tag: rowA.auth_tag };
      // Another owner's row, and a row of the same owner: both must fail.
      await database.db.updateTable('vault_secrets').set(copy).where('id', 'in', [b, c]).execute();
      await expectCode(vault.get(b), 'VAULT_DECRYPT_FAILED');
      await expectCode(vault.get(c), 'VAULT_DECRYPT_FAILED');
      // Re-labelling the owner of an intact row fails too.
      await database.db.updateTable('vault_secrets').set({ owner: 'system:b' }).where('id', '=', a).execute();
      await expectCode(vault.get(a), 'VAULT_DECRYPT_FAILED');
    });

    it('fails on a flipped bit in the ciphertext, IV or tag, and on an unknown key version', async () => {
      for (const column of ['ciphertext', 'iv', 'auth_tag'] as const) {
        const id = await vault.put('system:t', 'ssh-password', 'tamper me');
        const row = await database.db.selectFrom('vault_secrets').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
        const flipped = Buffer.from(row[column]);
        flipped[0]! ^= 1;
        await database.db.updateTable('vault_secrets').set({ [column]: flipped }).where('id', '=', id).execute();
        await expectCode(vault.get(id), 'VAULT_DECRYPT_FAILED');
      }
      const id = await vault.put('system:t', 'ssh-password', 'old key');
      await database.db.updateTable('vault_secrets').set({ key_version: 2 }).where('id', '=', id).execute();
      await expectCode(vault.get(id), 'VAULT_DECRYPT_FAILED');
    });

    it('deletes every secret of an owner and nobody else\'s (crypto-shredding)', async () => {
      const owner = `system:${randomUUID()}`;
      const ids = [await vault.put(owner, 'ssh-password', 'p'), await vault.put(owner, 'ssh-key', 'k'), await vault.put(owner, 'x', 'y')];
      const other = await vault.put(`system:${randomUUID()}`, 'ssh-password', 'keep me');
      expect(await vault.deleteOwner(owner)).to.equal(3);
      for (const id of ids) expect(await vault.get(id)).to.equal(null);
      const left = await database.db.selectFrom('vault_secrets').select('id').where('owner', '=', owner).execute();
      expect(left).to.deep.equal([]);
      expect(await vault.getText(other)).to.equal('keep me');
      expect(await vault.deleteOwner(owner)).to.equal(0);
    });

    it('deletes one secret by id', async () => {
      const id = await vault.put('system:d', 'ssh-password', 'gone soon');
      expect(await vault.delete(id)).to.equal(true);
      expect(await vault.get(id)).to.equal(null);
      expect(await vault.delete(id)).to.equal(false);
    });

    it('never stores the plaintext: not in the columns, not in the row as PostgreSQL prints it', async () => {
      const plaintext = `needle-${randomUUID()}-needle`;
      const id = await vault.put('system:p', 'ssh-password', plaintext);
      const row = await database.db.selectFrom('vault_secrets').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
      const needle = Buffer.from(plaintext, 'utf8');
      for (const column of ['ciphertext', 'iv', 'auth_tag'] as const) {
        expect(Buffer.from(row[column]).includes(needle), column).to.equal(false);
      }
      expect(row.iv).to.have.length(12);
      expect(row.auth_tag).to.have.length(16);
      expect(row.key_version).to.equal(1);
      const { rows } = await sql<{ text: string }>`select t::text as text from vault_secrets t where id = ${id}`.execute(database.db);
      expect(rows[0]!.text).to.not.include(plaintext);
      expect(rows[0]!.text).to.not.include(needle.toString('hex'));
      expect(rows[0]!.text).to.not.include('needle');
    });

    it('uses a fresh IV for every secret, so equal plaintexts differ in the table', async () => {
      const a = await vault.put('system:iv', 'ssh-password', 'same');
      const b = await vault.put('system:iv', 'ssh-password', 'same');
      const rows = await database.db.selectFrom('vault_secrets').select(['iv', 'ciphertext']).where('id', 'in', [a, b]).execute();
      expect(Buffer.from(rows[0]!.iv).equals(Buffer.from(rows[1]!.iv))).to.equal(false);
      expect(Buffer.from(rows[0]!.ciphertext).equals(Buffer.from(rows[1]!.ciphertext))).to.equal(false);
    });

    it('refuses a key that is not 32 bytes', () => {
      expect(() => createVault(database.db, randomBytes(16))).to.throw(/32 bytes/);
    });
  });
}
