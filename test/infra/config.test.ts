import { resolve } from 'node:path';
import { expect } from 'chai';
import { ConfigError } from '../../infra/errors.ts';
import { describeConfig, loadConfig } from '../../infra/config.ts';

/** The ConfigError message loadConfig throws for this environment. */
const failure = (env: Record<string, string>): string => {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    expect((err as ConfigError).code).to.equal('CONFIG_INVALID');
    const message = (err as ConfigError).message;
    expect(message, 'one line').not.to.include('\n');
    return message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
};

describe('config', () => {
  describe('with an empty environment', () => {
    it('uses the defaults of SPEC §12', () => {
      const c = loadConfig({});
      expect(c).to.include({
        port: 8000, host: '127.0.0.1', dataDir: resolve('./data'), eventStore: 'postgres', allowRegistration: false,
        jwtExpiresIn: '30m', jwtExpiresInSeconds: 1800, pollIntervalSeconds: 60, minOnlineDefault: 16,
        defaultRateLimitPerSecond: 10, defaultRateLimitBurst: 20, adminRateLimitPerSecond: 100, adminRateLimitBurst: 200,
        jobMaxConcurrency: 10, maxSessionsPerHost: 4, maxOutputBytes: 1048576, nginxBin: 'nginx',
        proxyListenAddress: '0.0.0.0', proxyHttpPort: 80, proxyHttpsPort: 443, healthCheckPath: '/health',
        healthCheckTimeoutMs: 1000, renewBeforeDays: 30, logLevel: 'info', logStreamMaxS: 300,
      });
      for (const unset of ['databaseUrl', 'eventStoreUrl', 'redisUrl', 'secretKey', 'secretsKey', 'adminPassword', 'nginxConf', 'acmeEmail', 'registryUrl'] as const) {
        expect(c[unset], unset).to.equal(undefined);
      }
      expect(c.certsDir).to.equal(resolve('./data/certs'));
    });

    it('treats empty and blank values as unset', () => {
      expect(loadConfig({ PORT: '', DATA_DIR: '  ', EVENT_STORE: '', DATABASE_URL: '' })).to.include({ port: 8000, dataDir: resolve('./data'), eventStore: 'postgres', databaseUrl: undefined });
    });
  });

  it('reads valid values into camelCase, with paths made absolute', () => {
    const c = loadConfig({
      PORT: '9000', HOST: '0.0.0.0', DATA_DIR: 'var/opsledger', DATABASE_URL: 'postgresql://app:pw@db:5432/ops', REDIS_URL: 'redis://cache:6379/0',
      JWT_EXPIRES_IN: '7d', LOG_LEVEL: 'DEBUG', MAX_OUTPUT_BYTES: '4096', CERTS_DIR: '/etc/opsledger/certs', ACME_EMAIL: 'ops@example.com',
    });
    expect(c).to.include({ port: 9000, host: '0.0.0.0', dataDir: resolve('var/opsledger'), databaseUrl: 'postgresql://app:pw@db:5432/ops',
      redisUrl: 'redis://cache:6379/0', jwtExpiresInSeconds: 7 * 86400, logLevel: 'debug', maxOutputBytes: 4096,
      certsDir: '/etc/opsledger/certs', acmeEmail: 'ops@example.com', nginxSitesDir: resolve('var/opsledger/nginx/sites') });
  });

  describe('booleans', () => {
    for (const [value, expected] of [['true', true], ['1', true], ['yes', true], ['YES', true], ['false', false], ['0', false], ['no', false]] as const) {
      it(`reads ALLOW_REGISTRATION=${value} as ${expected}`, () => expect(loadConfig({ ALLOW_REGISTRATION: value }).allowRegistration).to.equal(expected));
    }
    it('refuses anything else', () =>
      expect(failure({ ALLOW_REGISTRATION: 'maybe' })).to.equal('invalid configuration: ALLOW_REGISTRATION must be a boolean (true/false, 1/0, yes/no) (got "maybe")'));
  });

  describe('each kind of bad value is named with what it expects and what was given', () => {
    const cases: [Record<string, string>, string][] = [
      [{ PORT: 'abc' }, 'PORT must be an integer between 1 and 65535 (got "abc")'],
      [{ PORT: '70000' }, 'PORT must be an integer between 1 and 65535 (got "70000")'],
      [{ JOB_MAX_CONCURRENCY: '2.5' }, 'JOB_MAX_CONCURRENCY must be an integer between 1 and 1000 (got "2.5")'],
      [{ EVENT_STORE: 'mysql' }, 'EVENT_STORE must be one of postgres, esdb (got "mysql")'],
      [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "loud")'],
      [{ JWT_EXPIRES_IN: '30 minutes' }, 'JWT_EXPIRES_IN must be a duration like 30s, 30m, 12h or 7d, between 1s and 30d (got "30 minutes")'],
      [{ JWT_EXPIRES_IN: '0s' }, 'JWT_EXPIRES_IN must be'],
      [{ DATABASE_URL: 'mysql://db/ops' }, 'DATABASE_URL must be a postgres:// or postgresql:// URL (got "mysql://db/ops")'],
      [{ REDIS_URL: 'http://cache' }, 'REDIS_URL must be a redis:// or rediss:// URL (got "http://cache")'],
      [{ EVENT_STORE: 'esdb', EVENTSTORE_URL: 'http://esdb:2113' }, 'EVENTSTORE_URL must be an esdb://'],
      [{ ACME_DIRECTORY_URL: 'not a url' }, 'ACME_DIRECTORY_URL must be a https:// or http:// URL (value hidden)'],
      [{ ACME_EMAIL: 'ops' }, 'ACME_EMAIL must be an email address (got "ops")'],
      [{ HOST: 'my host' }, 'HOST must be an IP address or host name (got "my host")'],
      [{ PROXY_LISTEN_ADDRESS: 'everywhere' }, 'PROXY_LISTEN_ADDRESS must be an IP address or * (got "everywhere")'],
      [{ HEALTH_CHECK_PATH: 'health' }, 'HEALTH_CHECK_PATH must be a URL path starting with / (got "health")'],
      [{ MAX_OUTPUT_BYTES: '10' }, 'MAX_OUTPUT_BYTES must be an integer between 1024 and 1073741824 (got "10")'],
    ];
    for (const [env, expected] of cases) {
      it(`${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')}`, () => expect(failure(env)).to.include(expected));
    }
  });

  it('names every bad variable in one message', () =>
    expect(failure({ PORT: 'abc', EVENT_STORE: 'mysql', LOG_STREAM_MAX_S: '-1' })).to.equal(
      'invalid configuration: PORT must be an integer between 1 and 65535 (got "abc"); EVENT_STORE must be one of postgres, esdb (got "mysql"); ' +
      'LOG_STREAM_MAX_S must be an integer between 1 and 86400 (got "-1")'));

  describe('EVENT_STORE=esdb', () => {
    it('requires EVENTSTORE_URL', () =>
      expect(failure({ EVENT_STORE: 'esdb' })).to.match(/^invalid configuration: EVENTSTORE_URL is required when EVENT_STORE=esdb \(an esdb:\/\//));
    it('reports it alongside other problems', () => expect(failure({ EVENT_STORE: 'esdb', PORT: 'x' })).to.include('PORT must').and.include('EVENTSTORE_URL is required'));
    it('accepts esdb:// (with several hosts) and kurrentdb://', () => {
      expect(loadConfig({ EVENT_STORE: 'esdb', EVENTSTORE_URL: 'esdb://admin:changeit@h1:2113,h2:2113?tls=false' })).to.include({ eventStore: 'esdb' });
      expect(loadConfig({ EVENT_STORE: 'esdb', EVENTSTORE_URL: 'kurrentdb://localhost:2113?tls=false' }).eventStoreUrl).to.equal('kurrentdb://localhost:2113?tls=false');
    });
  });

  describe('secrets', () => {
    it('never repeats a secret variable in the message', () => {
      const message = failure({ SECRET_KEY: 'hunter2-short', SECRETS_KEY: 'vault-key-too-short', ADMIN_PASSWORD: 'pw1' });
      expect(message).to.equal('invalid configuration: SECRET_KEY must be between 32 and 4096 characters (value hidden); ' +
        'SECRETS_KEY must be between 32 and 4096 characters (value hidden); ADMIN_PASSWORD must be between 8 and 4096 characters (value hidden)');
    });

    it('never repeats the password of a URL, even a malformed one', () => {
      const message = failure({ DATABASE_URL: 'mysql://app:s3cr3t-db@db/ops', REDIS_URL: 'cache:s3cr3t-redis@host', ACME_DIRECTORY_URL: 'ftp://u:s3cr3t-acme@x/?token=s3cr3t-tok' });
      expect(message).not.to.match(/s3cr3t/);
      expect(message).to.include('DATABASE_URL must be a postgres:// or postgresql:// URL (got "mysql://app:***@db/ops")');
      expect(message).to.include('REDIS_URL must be a redis:// or rediss:// URL (value hidden)');
    });

    it('describeConfig hides secrets and URL passwords but keeps the rest', () => {
      const c = loadConfig({ SECRET_KEY: 'k'.repeat(40), ADMIN_PASSWORD: 'correct horse battery', DATABASE_URL: 'postgres://app:db-pass@db/ops?password=q-pass', REDIS_URL: 'redis://:redis-pass@cache:6379' });
      const described = JSON.stringify(describeConfig(c));
      for (const secret of ['k'.repeat(40), 'correct horse', 'db-pass', 'q-pass', 'redis-pass']) expect(described).not.to.include(secret);
      expect(describeConfig(c)).to.include({ secretKey: '***', adminPassword: '***', databaseUrl: 'postgres://app:***@db/ops?password=***', redisUrl: 'redis://:***@cache:6379', port: 8000 });
    });
  });
});
