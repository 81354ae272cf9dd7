import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { deriveSecretsKey, loadSecretKeys, SECRETS_FILE } from '../../../infra/secretKeys.ts';
import { expectCode } from '../../support/expectCode.ts';

const unset = { secretKey: undefined, secretsKey: undefined };
const mode = (path: string) => statSync(path).mode & 0o777;

describe('secret keys', () => {
  let root: string;
  let dataDir: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'opsledger-keys-'));
    dataDir = join(root, 'data');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  describe('when nothing is configured', () => {
    it('generates both keys once, keeps them in DATA_DIR/secrets.json and reuses them', async () => {
      const first = await loadSecretKeys(unset, { dataDir, embedded: true });
      expect(first.generated).to.equal(true);
      expect(first.secretKey.length).to.be.at.least(32);
      expect(first.secretsKey).to.have.length(32);
      expect(first.sources).to.deep.equal({ secretKey: 'file', secretsKey: 'file' });
      expect(first.warnings).to.deep.equal([]);
      const again = await loadSecretKeys(unset, { dataDir, embedded: true });
      expect(again.generated).to.equal(false);
      expect(again.secretKey.equals(first.secretKey)).to.equal(true);
      expect(again.secretsKey.equals(first.secretsKey)).to.equal(true);
      expect(first.secretKey.equals(first.secretsKey)).to.equal(false);
      // No temp files left behind.
      expect(readdirSync(dataDir)).to.deep.equal([SECRETS_FILE]);
    });

    it('creates DATA_DIR with mode 0700 and the file with mode 0600', async () => {
      const old = process.umask(0);
      try {
        await loadSecretKeys(unset, { dataDir, embedded: true });
      } finally {
        process.umask(old);
      }
      expect(mode(dataDir)).to.equal(0o700);
      expect(mode(join(dataDir, SECRETS_FILE))).to.equal(0o600);
    });

    it('agrees on one set of keys when several starts race', async () => {
      const results = await Promise.all(Array.from({ length: 8 }, () => loadSecretKeys(unset, { dataDir, embedded: false })));
      expect(results.filter((r) => r.generated)).to.have.length(1);
      for (const r of results) {
        expect(r.secretKey.equals(results[0]!.secretKey)).to.equal(true);
        expect(r.secretsKey.equals(results[0]!.secretsKey)).to.equal(true);
      }
      expect(readdirSync(dataDir)).to.deep.equal([SECRETS_FILE]);
    });

    it('warns in server mode that several instances need the same keys, without showing them', async () => {
      const keys = await loadSecretKeys(unset, { dataDir, embedded: false });
      expect(keys.warnings).to.have.length(1);
      expect(keys.warnings[0]).to.include('SECRET_KEY/SECRETS_KEY not set');
      expect(keys.warnings[0]).to.not.include(keys.secretKey.toString('base64'));
    });
  });

  describe('when the environment sets the keys', () => {
    const secretKey = 'an-environment-secret-key-of-enough-length';
    const secretsKey = randomBytes(32).toString('base64');

    it('uses them and does not touch DATA_DIR', async () => {
      const keys = await loadSecretKeys({ secretKey, secretsKey }, { dataDir, embedded: false });
      expect(keys.secretKey.toString('utf8')).to.equal(secretKey);
      expect(keys.secretsKey.equals(Buffer.from(secretsKey, 'base64'))).to.equal(true);
      expect(keys.sources).to.deep.equal({ secretKey: 'env', secretsKey: 'env' });
      expect(keys.warnings).to.deep.equal([]);
      expect(existsSync(dataDir)).to.equal(false);
    });

    it('override the kept keys one by one', async () => {
      const kept = await loadSecretKeys(unset, { dataDir, embedded: true });
      const onlySecretKey = await loadSecretKeys({ secretKey, secretsKey: undefined }, { dataDir, embedded: true });
      expect(onlySecretKey.secretKey.toString('utf8')).to.equal(secretKey);
      expect(onlySecretKey.secretsKey.equals(kept.secretsKey)).to.equal(true);
      expect(onlySecretKey.sources).to.deep.equal({ secretKey: 'env', secretsKey: 'file' });
      const onlySecretsKey = await loadSecretKeys({ secretKey: undefined, secretsKey }, { dataDir, embedded: true });
      expect(onlySecretsKey.secretKey.equals(kept.secretKey)).to.equal(true);
      expect(onlySecretsKey.secretsKey.equals(Buffer.from(secretsKey, 'base64'))).to.equal(true);
    });
  });

  describe('SECRETS_KEY derivation', () => {
    it('takes 64 hex characters as the 32 bytes they spell', () => {
      const raw = randomBytes(32);
      expect(deriveSecretsKey(raw.toString('hex')).equals(raw)).to.equal(true);
    });

    it('takes base64 and base64url of 32 bytes as those bytes', () => {
      const raw = randomBytes(32);
      expect(deriveSecretsKey(raw.toString('base64')).equals(raw)).to.equal(true);
      expect(deriveSecretsKey(raw.toString('base64url')).equals(raw)).to.equal(true);
    });

    it('hashes anything else with SHA-256 into 32 bytes', () => {
      const passphrase = 'a long passphrase that is not base64 or hex!';
      expect(deriveSecretsKey(passphrase).equals(createHash('sha256').update(passphrase).digest())).to.equal(true);
      const base64Of48 = randomBytes(48).toString('base64');
      expect(deriveSecretsKey(base64Of48)).to.have.length(32);
      expect(deriveSecretsKey(base64Of48).equals(createHash('sha256').update(base64Of48).digest())).to.equal(true);
    });
  });

  describe('when the secrets file is unsafe or broken', () => {
    beforeEach(async () => {
      await loadSecretKeys(unset, { dataDir, embedded: true });
    });

    for (const bad of [0o644, 0o640, 0o604, 0o660, 0o606]) {
      it(`refuses to start with mode ${bad.toString(8)}`, async () => {
        const path = join(dataDir, SECRETS_FILE);
        chmodSync(path, bad);
        const err = await expectCode(loadSecretKeys(unset, { dataDir, embedded: true }), 'SECRETS_FILE_INSECURE');
        expect(err.message).to.equal(`${path} is accessible by group or others (mode 0${bad.toString(8)}); run \`chmod 600 ${path}\` and start again`);
      });
    }

    it('refuses a file that is not valid, and leaves it alone', async () => {
      const path = join(dataDir, SECRETS_FILE);
      for (const content of ['not json', '{}', JSON.stringify({ version: 1, secretKey: 'c2hvcnQ=', secretsKey: randomBytes(32).toString('base64') })]) {
        writeFileSync(path, content, { mode: 0o600 });
        await expectCode(loadSecretKeys(unset, { dataDir, embedded: true }), 'SECRETS_FILE_INVALID');
        expect(readFileSync(path, 'utf8')).to.equal(content);
      }
    });

    it('needs no secrets file at all when both keys are configured', async () => {
      chmodSync(join(dataDir, SECRETS_FILE), 0o644);
      const keys = await loadSecretKeys({ secretKey: 'x'.repeat(32), secretsKey: 'y'.repeat(32) }, { dataDir, embedded: true });
      expect(keys.secretsKey).to.have.length(32);
    });
  });

  it('leaves an existing DATA_DIR\'s mode alone', async () => {
    mkdirSync(dataDir, { mode: 0o755 });
    chmodSync(dataDir, 0o755);
    await loadSecretKeys(unset, { dataDir, embedded: true });
    expect(mode(dataDir)).to.equal(0o755);
  });
});
