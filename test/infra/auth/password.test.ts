import { expect } from 'chai';
import { dummyVerify, hashPassword, MAX_PASSWORD_LENGTH, validatePasswordPolicy, verifyPassword } from '../../../infra/auth/password.ts';

const timed = async (fn: () => Promise<unknown>): Promise<number> => {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('password hashing', () => {
  let encoded: string;
  before(async () => {
    encoded = await hashPassword('correct horse battery staple');
  });

  it('encodes the scrypt parameters, a 16-byte salt and a 64-byte key', () => {
    const [scheme, n, r, p, salt, hash, ...rest] = encoded.split('$');
    expect([scheme, n, r, p, rest.length]).to.deep.equal(['scrypt', '32768', '8', '1', 0]);
    expect(Buffer.from(salt!, 'base64')).to.have.length(16);
    expect(Buffer.from(hash!, 'base64')).to.have.length(64);
  });

  it('verifies the right password and rejects a wrong one', async () => {
    expect(await verifyPassword('correct horse battery staple', encoded)).to.equal(true);
    expect(await verifyPassword('correct horse battery stapl', encoded)).to.equal(false);
    expect(await verifyPassword('', encoded)).to.equal(false);
  });

  it('salts every hash', async () => {
    expect(await hashPassword('correct horse battery staple')).to.not.equal(encoded);
  });

  it('verifies hashes written with other parameters, read from the encoding', async () => {
    const { scryptSync, randomBytes } = await import('node:crypto');
    const salt = randomBytes(16);
    const key = scryptSync('pässword-1', salt, 32, { N: 1024, r: 4, p: 2 });
    const old = `scrypt$1024$4$2$${salt.toString('base64')}$${key.toString('base64')}`;
    expect(await verifyPassword('pässword-1', old)).to.equal(true);
    expect(await verifyPassword('password-1', old)).to.equal(false);
  });

  it('treats composed and decomposed forms of a character as the same password', async () => {
    const composed = await hashPassword('caf\u00e9-latte');
    expect(await verifyPassword('cafe\u0301-latte', composed)).to.equal(true);
  });

  it('answers false, without throwing, for malformed or hostile hashes', async () => {
    const salt = Buffer.alloc(16).toString('base64');
    const key = Buffer.alloc(64).toString('base64');
    for (const bad of ['', 'plain', `bcrypt$32768$8$1$${salt}$${key}`, `scrypt$32768$8$1$${salt}`,
      `scrypt$1000$8$1$${salt}$${key}` /* N not a power of two */, `scrypt$${2 ** 24}$8$1$${salt}$${key}` /* too much memory */,
      `scrypt$32768$8$1$not*base64$${key}`, `scrypt$-2$8$1$${salt}$${key}`]) {
      expect(await verifyPassword('whatever-password', bad), bad).to.equal(false);
    }
  });

  it('spends about the time of a real verification when the user does not exist', async () => {
    await dummyVerify('warm-up-password');
    const real: number[] = [];
    const dummy: number[] = [];
    for (let i = 0; i < 3; i++) {
      real.push(await timed(() => verifyPassword('wrong password', encoded)));
      dummy.push(await timed(() => dummyVerify('wrong password')));
    }
    expect(await dummyVerify('correct horse battery staple')).to.equal(false);
    const ratio = median(dummy) / median(real);
    expect(ratio, `dummy ${median(dummy)} ms vs real ${median(real)} ms`).to.be.within(0.5, 2);
  });
});

describe('password policy', () => {
  it('accepts 8 to 1024 characters', () => {
    expect(validatePasswordPolicy('12345678')).to.equal(null);
    expect(validatePasswordPolicy('x'.repeat(MAX_PASSWORD_LENGTH))).to.equal(null);
  });

  it('names the rule a password breaks', () => {
    expect(validatePasswordPolicy('1234567')).to.equal('password must be at least 8 characters');
    expect(validatePasswordPolicy('')).to.equal('password must be at least 8 characters');
    expect(validatePasswordPolicy('x'.repeat(1025))).to.equal('password must be at most 1024 characters');
  });

  it('counts characters, not UTF-16 units or bytes', () => {
    expect(validatePasswordPolicy('🔑'.repeat(7))).to.equal('password must be at least 8 characters');
    expect(validatePasswordPolicy('🔑'.repeat(8))).to.equal(null);
    expect(validatePasswordPolicy('🔑'.repeat(1024))).to.equal(null);
  });
});
