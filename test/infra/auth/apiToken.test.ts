import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { generateApiToken, hashApiToken, looksLikeApiToken, sameHash } from '../../../infra/auth/apiToken.ts';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

describe('API tokens', () => {
  it('are opl_ + 40 base62 characters + a 6-character checksum (at least 160 secret bits beside the shown prefix)', () => {
    const { token, tokenHash, prefix } = generateApiToken();
    expect(token).to.match(/^opl_[0-9A-Za-z]{46}$/);
    expect(prefix).to.equal(token.slice(0, 12));
    // The random characters not shown in the prefix: 40 - 8, each of log2(62) bits.
    expect((40 - (prefix.length - 'opl_'.length)) * Math.log2(62)).to.be.at.least(160);
    expect(tokenHash).to.equal(hashApiToken(token));
    expect(looksLikeApiToken(token)).to.equal(true);
  });

  it('catch every single changed character with the checksum', () => {
    const { token } = generateApiToken();
    let checked = 0;
    for (let i = 4; i < token.length; i++) {
      for (const c of ALPHABET) {
        if (c === token[i]) continue;
        const typo = token.slice(0, i) + c + token.slice(i + 1);
        expect(looksLikeApiToken(typo), typo).to.equal(false);
        checked++;
      }
    }
    expect(checked).to.equal(46 * 61);
  });

  it('reject wrong prefixes, lengths and characters', () => {
    const { token } = generateApiToken();
    for (const bad of ['', 'opl_', token.slice(1), `x${token.slice(1)}`, `OPL_${token.slice(4)}`, `${token}0`, token.slice(0, -1),
      `${token.slice(0, 10)}-${token.slice(11)}`, ` ${token}`, `${token}\n`]) {
      expect(looksLikeApiToken(bad), JSON.stringify(bad)).to.equal(false);
    }
  });

  it('are unique over 10,000 tokens and use the whole alphabet', () => {
    const tokens = new Set<string>();
    const hashes = new Set<string>();
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const { token, tokenHash } = generateApiToken();
      tokens.add(token);
      hashes.add(tokenHash);
      for (const c of token.slice(4, 36)) seen.add(c);
    }
    expect(tokens.size).to.equal(10_000);
    expect(hashes.size).to.equal(10_000);
    expect(seen.size).to.equal(62);
  });

  it('hash to 64 lowercase hex characters of SHA-256', () => {
    const { token } = generateApiToken();
    const hash = hashApiToken(token);
    expect(hash).to.match(/^[0-9a-f]{64}$/);
    expect(hash).to.equal(createHash('sha256').update(token).digest('hex'));
  });

  it('compare hashes in constant time, answering false for anything that is not a SHA-256 hex digest', () => {
    const a = hashApiToken(generateApiToken().token);
    const b = hashApiToken(generateApiToken().token);
    expect(sameHash(a, a)).to.equal(true);
    expect(sameHash(a, a.toUpperCase())).to.equal(true);
    expect(sameHash(a, b)).to.equal(false);
    expect(sameHash(a, a.slice(0, 62))).to.equal(false);
    expect(sameHash('', '')).to.equal(false);
    expect(sameHash('z'.repeat(64), 'z'.repeat(64))).to.equal(false);
  });
});
