import { createHmac } from 'node:crypto';
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import { AppError } from '../../../infra/errors.ts';
import { createSessionVerifier, signSession, verifySession } from '../../../infra/auth/jwt.ts';

const SECRET = Buffer.from('a-test-secret-that-is-long-enough-0123456789', 'utf8');
const OTHER_SECRET = Buffer.from('another-secret-that-is-long-enough-987654321', 'utf8');
const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_S = NOW.getTime() / 1000;

const b64url = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const hmac = (alg: 'sha256' | 'sha512', input: string, secret = SECRET) => createHmac(alg, secret).update(input).digest('base64url');
/** A token put together by hand, as an attacker would. */
const forge = (header: object, payload: object, sign: (input: string) => string) => {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${sign(input)}`;
};
const validPayload = () => ({ sub: 'user-1', sv: 3, iat: NOW_S, exp: NOW_S + 600, jti: 'j-1', typ: 'session', iss: 'opsledger' });

const expectRejected = (token: string, code = 'UNAUTHORIZED', opts: { now?: Date } = { now: NOW }) => {
  try {
    verifySession(token, { secret: SECRET, ...opts });
  } catch (err) {
    expect(err).to.be.instanceOf(AppError);
    expect((err as AppError).code).to.equal(code);
    expect((err as AppError).message).to.equal(code === 'TOKEN_EXPIRED' ? 'token expired' : 'invalid token');
    return;
  }
  throw new Error('the token was accepted');
};

describe('session JWT', () => {
  it('round-trips the user id and session version with iat, exp, jti, typ and issuer', () => {
    const token = signSession({ userId: 'user-1', sessionVersion: 3 }, { secret: SECRET, expiresInSeconds: 1800, now: NOW });
    const claims = verifySession(token, { secret: SECRET, now: NOW });
    expect(claims).to.include({ sub: 'user-1', sv: 3, iat: NOW_S, exp: NOW_S + 1800, typ: 'session', iss: 'opsledger' });
    expect(claims.jti).to.match(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString())).to.deep.equal({ alg: 'HS256', typ: 'JWT' });
  });

  it('gives every token its own jti', () => {
    const opts = { secret: SECRET, expiresInSeconds: 60, now: NOW };
    const a = verifySession(signSession({ userId: 'u', sessionVersion: 0 }, opts), { secret: SECRET, now: NOW });
    const b = verifySession(signSession({ userId: 'u', sessionVersion: 0 }, opts), { secret: SECRET, now: NOW });
    expect(a.jti).to.not.equal(b.jti);
  });

  it('verifies against the real clock when no time is given', () => {
    const token = signSession({ userId: 'u', sessionVersion: 1 }, { secret: SECRET, expiresInSeconds: 60 });
    expect(verifySession(token, { secret: SECRET }).sub).to.equal('u');
  });

  it('accepts a hand-made token that follows every rule (so the rejections below are for their one flaw)', () => {
    const token = forge({ alg: 'HS256', typ: 'JWT' }, validPayload(), (i) => hmac('sha256', i));
    expect(verifySession(token, { secret: SECRET, now: NOW }).sub).to.equal('user-1');
  });

  it('rejects alg none', () => {
    expectRejected(forge({ alg: 'none', typ: 'JWT' }, validPayload(), () => ''));
    expectRejected(forge({ alg: 'none', typ: 'JWT' }, validPayload(), (i) => hmac('sha256', i)));
    expectRejected(jwt.sign(validPayload(), null, { algorithm: 'none' }));
  });

  it('rejects a token signed with another secret', () => {
    expectRejected(signSession({ userId: 'u', sessionVersion: 1 }, { secret: OTHER_SECRET, expiresInSeconds: 600, now: NOW }));
  });

  it('rejects a tampered payload', () => {
    const token = signSession({ userId: 'user-1', sessionVersion: 3 }, { secret: SECRET, expiresInSeconds: 600, now: NOW });
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    expectRejected(`${header}.${b64url({ ...claims, sv: 4 })}.${signature}`);
    expectRejected(`${header}.${b64url({ ...claims, sub: 'admin' })}.${signature}`);
    expectRejected(`${header}.${payload}.${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`);
  });

  it('rejects RS256 and HS512 headers even when the MAC is right for the secret', () => {
    expectRejected(forge({ alg: 'RS256', typ: 'JWT' }, validPayload(), (i) => hmac('sha256', i)));
    expectRejected(forge({ alg: 'HS512', typ: 'JWT' }, validPayload(), (i) => hmac('sha512', i)));
    expectRejected(jwt.sign(validPayload(), SECRET, { algorithm: 'HS512' }));
  });

  it('says "token expired" for an expired genuine token', () => {
    const token = signSession({ userId: 'u', sessionVersion: 1 }, { secret: SECRET, expiresInSeconds: 60, now: NOW });
    expectRejected(token, 'TOKEN_EXPIRED', { now: new Date(NOW.getTime() + 61_000) });
    expectRejected(signSession({ userId: 'u', sessionVersion: 1 }, { secret: SECRET, expiresInSeconds: 60, now: new Date(Date.now() - 120_000) }),
      'TOKEN_EXPIRED', {});
  });

  it('does not say "expired" of an expired token it did not sign', () => {
    const token = signSession({ userId: 'u', sessionVersion: 1 }, { secret: OTHER_SECRET, expiresInSeconds: 60, now: NOW });
    expectRejected(token, 'UNAUTHORIZED', { now: new Date(NOW.getTime() + 61_000) });
  });

  it('rejects tokens that are not sessions, come from another issuer or lack a claim', () => {
    const signed = (payload: object) => forge({ alg: 'HS256', typ: 'JWT' }, payload, (i) => hmac('sha256', i));
    const { exp: _exp, ...noExp } = validPayload();
    const { sv: _sv, ...noSv } = validPayload();
    expectRejected(signed({ ...validPayload(), typ: 'password-reset' }));
    expectRejected(signed({ ...validPayload(), iss: 'someone-else' }));
    expectRejected(signed(noExp));
    expectRejected(signed(noSv));
    expectRejected(signed({ ...validPayload(), sv: '3' }));
    expectRejected(signed({ ...validPayload(), sub: '' }));
  });

  it('rejects garbage', () => {
    for (const bad of ['', 'abc', 'a.b.c', 'Bearer x.y.z']) expectRejected(bad);
  });

  it('refuses to sign or verify with a secret shorter than 32 bytes', () => {
    expect(() => signSession({ userId: 'u', sessionVersion: 0 }, { secret: 'short', expiresInSeconds: 60 })).to.throw(/at least 32 bytes/);
    expect(() => verifySession('a.b.c', { secret: 'short' })).to.throw(/at least 32 bytes/);
  });

  describe('createSessionVerifier (remembers verified tokens)', () => {
    const codeOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        return (err as AppError).code;
      }
      return 'accepted';
    };

    it('answers a token it verified before, and still expires it on time', () => {
      const verify = createSessionVerifier({ secret: SECRET });
      const token = signSession({ userId: 'user-1', sessionVersion: 2 }, { secret: SECRET, expiresInSeconds: 60, now: NOW });
      expect(verify(token, NOW)).to.include({ sub: 'user-1', sv: 2 });
      expect(verify(token, NOW_S * 1000 + 59_000)).to.include({ sub: 'user-1' });
      expect(codeOf(() => verify(token, NOW_S * 1000 + 60_000))).to.equal('TOKEN_EXPIRED');
      expect(codeOf(() => verify(token, NOW))).to.equal('accepted'); // not poisoned: verified again from scratch
    });

    it('never lets a token through on the strength of another: a changed signature or payload is verified afresh', () => {
      const verify = createSessionVerifier({ secret: SECRET });
      const token = signSession({ userId: 'user-1', sessionVersion: 2 }, { secret: SECRET, expiresInSeconds: 60, now: NOW });
      verify(token, NOW);
      const [h, p, sig] = token.split('.') as [string, string, string];
      const flipped = `${h}.${p}.${sig.slice(0, -2)}${sig.endsWith('AA') ? 'BA' : 'AA'}`;
      expect(codeOf(() => verify(flipped, NOW))).to.equal('UNAUTHORIZED');
      expect(codeOf(() => verify(`${h}.${b64url({ ...validPayload(), sub: 'admin' })}.${sig}`, NOW))).to.equal('UNAUTHORIZED');
      const other = createSessionVerifier({ secret: OTHER_SECRET });
      expect(codeOf(() => other(token, NOW))).to.equal('UNAUTHORIZED');
    });

    it('stays bounded: past max it starts over and keeps working', () => {
      const verify = createSessionVerifier({ secret: SECRET, max: 2 });
      const tokens = [1, 2, 3].map((v) => signSession({ userId: `u-${v}`, sessionVersion: v }, { secret: SECRET, expiresInSeconds: 60, now: NOW }));
      for (const t of [...tokens, ...tokens]) expect(verify(t, NOW).sub).to.match(/^u-\d$/);
    });
  });
});
