import { Writable } from 'node:stream';
import { expect } from 'chai';
import { createLogger, REDACT_PATHS } from '../../infra/logger.ts';

/** A destination that keeps every line in memory, so a test can read what would have been written. */
const memory = () => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  return { stream, lines };
};

describe('logger', () => {
  it('writes JSON lines with the service name, an ISO time, and the level', () => {
    const out = memory();
    createLogger({ logLevel: 'info' }, out.stream).info({ jobId: 'j-1' }, 'job created');
    const line = JSON.parse(out.lines[0]!);
    expect(line).to.include({ service: 'opsledger', jobId: 'j-1', msg: 'job created', level: 30 });
    expect(line.time).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('drops lines below the configured level', () => {
    const out = memory();
    const logger = createLogger({ logLevel: 'warn' }, out.stream);
    logger.info('not shown');
    logger.warn('shown');
    expect(out.lines.map((l) => JSON.parse(l).msg)).to.deep.equal(['shown']);
  });

  it('redacts secrets at the top level and nested, but keeps everything else', () => {
    const out = memory();
    createLogger({ logLevel: 'info' }, out.stream).info({
      password: 'secret-top-password',
      user: { name: 'alice', password: 'secret-user-password', token: 'secret-user-token' },
      req: { method: 'POST', url: '/auth/login', headers: { authorization: 'Bearer secret-jwt', cookie: 'sid=secret-cookie', 'x-api-key': 'secret-api-key', host: 'ops.example' } },
      system: { ssh: { passphrase: 'secret-passphrase', private_key: 'secret-private-key', host: '10.0.0.5' } },
      body: { access_token: 'secret-access-token', secrets_key: 'secret-vault-key', comment: 'kept' },
    }, 'login');
    const text = out.lines.join('\n');
    expect(text).not.to.match(/secret-/);
    const line = JSON.parse(out.lines[0]!);
    expect(line.user).to.deep.equal({ name: 'alice', password: '[Redacted]', token: '[Redacted]' });
    expect(line.req).to.deep.include({ method: 'POST', url: '/auth/login' });
    expect(line.req.headers).to.include({ host: 'ops.example', authorization: '[Redacted]' });
    expect(line.system.ssh.host).to.equal('10.0.0.5');
    expect(line.body.comment).to.equal('kept');
  });

  it('exports its redact paths, covering the request headers and nested passwords', () => {
    expect(REDACT_PATHS).to.include.members(['password', '*.password', '*.*.password', '*.*.authorization', '*.*["x-api-key"]']);
  });
});
