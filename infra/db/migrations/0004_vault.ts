import { sql, type Kysely } from 'kysely';

// Encrypted secrets (DESIGN §6): AES-256-GCM under SECRETS_KEY, written by infra/vault.ts.
// Events only carry the row id; deleting an owner's rows is what makes the secret
// unrecoverable (crypto-shredding), since the event log itself is never rewritten.
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table vault_secrets (
      id uuid primary key,
      owner text not null,
      kind text not null,
      ciphertext bytea not null,
      iv bytea not null,
      auth_tag bytea not null,
      -- Which SECRETS_KEY encrypted the row, so that the key can be rotated row by row later.
      key_version int not null default 1,
      created_at timestamptz default now()
    )`.execute(db);
  // deleteOwner() is the shredding path: it must not scan the table.
  await sql`create index vault_secrets_owner_idx on vault_secrets (owner)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table if exists vault_secrets`.execute(db);
}
