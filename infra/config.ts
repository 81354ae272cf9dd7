// The environment, validated once at start (SPEC §12). Every variable has a zod schema
// and a phrase saying what it expects, so a bad start-up names every wrong variable in
// one line instead of failing on the first, and never repeats a secret back.
import { resolve } from 'node:path';
import { isIP } from 'node:net';
import { z } from 'zod';
import { ConfigError } from './errors.ts';

// Re-exported so the entry point can catch what loadConfig throws from one import.
export { ConfigError };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type Config = Readonly<{
  port: number;
  host: string;
  /** Absolute. */
  dataDir: string;
  /** Unset: embedded PGlite under dataDir. */
  databaseUrl: string | undefined;
  eventStore: 'postgres' | 'esdb';
  /** Set whenever eventStore is 'esdb'. */
  eventStoreUrl: string | undefined;
  redisUrl: string | undefined;
  /** Unset secrets are generated on first start and kept in dataDir (SPEC §2). */
  secretKey: string | undefined;
  secretsKey: string | undefined;
  adminPassword: string | undefined;
  allowRegistration: boolean;
  /** As given ("30m"); jwtExpiresInSeconds is the same span in seconds. */
  jwtExpiresIn: string;
  jwtExpiresInSeconds: number;
  pollIntervalSeconds: number;
  /** Node checks in flight at once (the poller's pool). */
  pollConcurrency: number;
  minOnlineDefault: number;
  defaultRateLimitPerSecond: number;
  defaultRateLimitBurst: number;
  adminRateLimitPerSecond: number;
  adminRateLimitBurst: number;
  jobMaxConcurrency: number;
  maxSessionsPerHost: number;
  maxOutputBytes: number;
  nginxBin: string;
  /** Unset: nginx's compiled-in main config (no `-c`). */
  nginxConf: string | undefined;
  nginxSitesDir: string;
  /** An IP address without brackets, or "*"; the nginx renderer adds brackets for IPv6. */
  proxyListenAddress: string;
  proxyHttpPort: number;
  proxyHttpsPort: number;
  healthCheckPath: string;
  healthCheckTimeoutMs: number;
  acmeDirectoryUrl: string;
  acmeEmail: string | undefined;
  acmeWebroot: string;
  /** A PEM file of CAs to trust for the ACME server's own HTTPS (a private or test CA); unset: the system's trust. */
  acmeCaFile: string | undefined;
  certsDir: string;
  renewBeforeDays: number;
  /** Unset: /proxies/sync answers REGISTRY_NOT_CONFIGURED unless the request names one. */
  registryUrl: string | undefined;
  logLevel: LogLevel;
  logStreamMaxS: number;
}>;

// ---- one helper per kind of value: the schema and the phrase that goes with it ----

type Shown = 'plain' | 'secret' | 'url';
type Var<S extends z.ZodType> = { schema: S; expects: string; shown: Shown };
const v = <S extends z.ZodType>(schema: S, expects: string, shown: Shown = 'plain'): Var<S> => ({ schema, expects, shown });

const integer = (min: number, max: number, def: number) =>
  v(z.string().trim().regex(/^[+-]?\d+$/).transform(Number).pipe(z.number().int().min(min).max(max)).default(def),
    `an integer between ${min} and ${max}`);

const oneOf = <const T extends readonly [string, ...string[]]>(values: T, def: T[number]) =>
  v(z.string().trim().toLowerCase().pipe(z.enum(values)).default(def), `one of ${values.join(', ')}`);

const TRUE = ['true', '1', 'yes'];
const boolean = (def: boolean) =>
  v(z.string().trim().toLowerCase().pipe(z.enum([...TRUE, 'false', '0', 'no'])).transform((s) => TRUE.includes(s)).default(def),
    'a boolean (true/false, 1/0, yes/no)');

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const;
const duration = (def: string, maxDays: number) =>
  v(z.string().trim().regex(/^\d+[smhd]$/).default(def)
      .transform((s) => ({ text: s, seconds: Number(s.slice(0, -1)) * UNIT_SECONDS[s.slice(-1) as keyof typeof UNIT_SECONDS] }))
      .refine((d) => d.seconds >= 1 && d.seconds <= maxDays * 86400),
    `a duration like 30s, 30m, 12h or 7d, between 1s and ${maxDays}d`);

const orList = (items: string[]) => (items.length === 1 ? items[0] : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`);

// Scheme checked by pattern (EventStoreDB cluster strings list several hosts, which the
// WHATWG parser rejects); `parse` adds the parser where the client library uses it too.
const url = (schemes: string[], parse = true) =>
  v(z.string().trim()
      .refine((s) => new RegExp(`^(${schemes.join('|').replaceAll('+', '\\+')})://\\S+$`, 'i').test(s))
      .refine((s) => !parse || URL.canParse(s)).optional(),
    `${/^[aeiou]/.test(schemes[0]!) ? 'an' : 'a'} ${orList(schemes.map((s) => `${s}://`))} URL`, 'url');

const path = () => v(z.string().refine((s) => !s.includes('\0')).transform((s) => resolve(s)).optional(), 'a file system path');

const secret = (min: number) => v(z.string().min(min).max(4096).optional(), `between ${min} and 4096 characters`, 'secret');

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i;
const unbracket = (s: string) => s.replace(/^\[(.*)\]$/, '$1');

// ---- the table: order here is the order of the error message ----

const VARS = {
  PORT: integer(1, 65535, 8000),
  HOST: v(z.string().trim().refine((s) => isIP(unbracket(s)) !== 0 || HOST_NAME.test(s)).transform(unbracket).default('127.0.0.1'),
    'an IP address or host name'),
  DATA_DIR: path(),
  DATABASE_URL: url(['postgres', 'postgresql']),
  EVENT_STORE: oneOf(['postgres', 'esdb'], 'postgres'),
  EVENTSTORE_URL: url(['esdb', 'esdb+discover', 'kurrentdb', 'kurrentdb+discover'], false),
  REDIS_URL: url(['redis', 'rediss']),
  SECRET_KEY: secret(32),
  SECRETS_KEY: secret(32),
  ADMIN_PASSWORD: secret(8),
  ALLOW_REGISTRATION: boolean(false),
  JWT_EXPIRES_IN: duration('30m', 30),
  POLL_INTERVAL_SECONDS: integer(1, 86_400, 60),
  POLL_CONCURRENCY: integer(1, 1000, 20),
  MIN_ONLINE_DEFAULT: integer(1, 100_000, 16),
  DEFAULT_RATE_LIMIT_PER_SECOND: integer(1, 100_000, 10),
  DEFAULT_RATE_LIMIT_BURST: integer(1, 1_000_000, 20),
  ADMIN_RATE_LIMIT_PER_SECOND: integer(1, 100_000, 100),
  ADMIN_RATE_LIMIT_BURST: integer(1, 1_000_000, 200),
  JOB_MAX_CONCURRENCY: integer(1, 1000, 10),
  MAX_SESSIONS_PER_HOST: integer(1, 64, 4),
  MAX_OUTPUT_BYTES: integer(1024, 1024 ** 3, 1_048_576),
  NGINX_BIN: v(z.string().trim().regex(/^[^\s\0]+$/).default('nginx'), 'a program name or path without spaces'),
  NGINX_CONF: path(),
  NGINX_SITES_DIR: path(),
  PROXY_LISTEN_ADDRESS: v(z.string().trim().refine((s) => s === '*' || isIP(unbracket(s)) !== 0).transform(unbracket).default('0.0.0.0'),
    'an IP address or *'),
  PROXY_HTTP_PORT: integer(1, 65535, 80),
  PROXY_HTTPS_PORT: integer(1, 65535, 443),
  HEALTH_CHECK_PATH: v(z.string().trim().regex(/^\/[^\s\0]*$/).max(2048).default('/health'), 'a URL path starting with /'),
  HEALTH_CHECK_TIMEOUT_MS: integer(1, 60_000, 1000),
  ACME_DIRECTORY_URL: url(['https', 'http']),
  ACME_EMAIL: v(z.email().optional(), 'an email address'),
  ACME_WEBROOT: path(),
  ACME_CA_FILE: path(),
  CERTS_DIR: path(),
  RENEW_BEFORE_DAYS: integer(1, 365, 30),
  REGISTRY_URL: url(['https', 'http']),
  LOG_LEVEL: oneOf(LOG_LEVELS, 'info'),
  LOG_STREAM_MAX_S: integer(1, 86_400, 300),
};
type VarName = keyof typeof VARS;

const EnvSchema = z.object(
  Object.fromEntries(Object.entries(VARS).map(([name, { schema }]) => [name, schema])) as { [K in VarName]: (typeof VARS)[K]['schema'] },
);

/** Let's Encrypt production, the directory nearly everyone means; tests point it at pebble. */
export const DEFAULT_ACME_DIRECTORY_URL = 'https://acme-v02.api.letsencrypt.org/directory';

export const loadConfig = (env: NodeJS.ProcessEnv = process.env): Config => {
  // Empty (or blank) counts as unset: `FOO=` in an env file must mean "use the default".
  const raw: Partial<Record<VarName, string>> = {};
  for (const name of Object.keys(VARS) as VarName[]) {
    const value = env[name];
    if (value !== undefined && value.trim() !== '') raw[name] = value;
  }

  const problems = new Map<VarName, string>();
  const parsed = EnvSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const name = issue.path[0] as VarName;
      if (!problems.has(name)) problems.set(name, `${name} must be ${VARS[name].expects} ${shown(VARS[name].shown, raw[name] ?? '')}`);
    }
  }
  // The one rule across variables; checked on the raw value so it is reported alongside the rest.
  if (raw.EVENT_STORE?.trim().toLowerCase() === 'esdb' && raw.EVENTSTORE_URL === undefined) {
    problems.set('EVENTSTORE_URL', `EVENTSTORE_URL is required when EVENT_STORE=esdb (${VARS.EVENTSTORE_URL.expects})`);
  }
  if (!parsed.success || problems.size > 0) {
    const ordered = (Object.keys(VARS) as VarName[]).flatMap((n) => problems.get(n) ?? []);
    throw new ConfigError(`invalid configuration: ${ordered.join('; ')}`);
  }

  const e = parsed.data;
  const dataDir = e.DATA_DIR ?? resolve('./data');
  return {
    port: e.PORT, host: e.HOST, dataDir,
    databaseUrl: e.DATABASE_URL, eventStore: e.EVENT_STORE, eventStoreUrl: e.EVENTSTORE_URL, redisUrl: e.REDIS_URL,
    secretKey: e.SECRET_KEY, secretsKey: e.SECRETS_KEY, adminPassword: e.ADMIN_PASSWORD,
    allowRegistration: e.ALLOW_REGISTRATION,
    jwtExpiresIn: e.JWT_EXPIRES_IN.text, jwtExpiresInSeconds: e.JWT_EXPIRES_IN.seconds,
    pollIntervalSeconds: e.POLL_INTERVAL_SECONDS, pollConcurrency: e.POLL_CONCURRENCY, minOnlineDefault: e.MIN_ONLINE_DEFAULT,
    defaultRateLimitPerSecond: e.DEFAULT_RATE_LIMIT_PER_SECOND, defaultRateLimitBurst: e.DEFAULT_RATE_LIMIT_BURST,
    adminRateLimitPerSecond: e.ADMIN_RATE_LIMIT_PER_SECOND, adminRateLimitBurst: e.ADMIN_RATE_LIMIT_BURST,
    jobMaxConcurrency: e.JOB_MAX_CONCURRENCY, maxSessionsPerHost: e.MAX_SESSIONS_PER_HOST, maxOutputBytes: e.MAX_OUTPUT_BYTES,
    // Directories nobody named live under DATA_DIR, so a fresh checkout writes nowhere else.
    nginxBin: e.NGINX_BIN, nginxConf: e.NGINX_CONF, nginxSitesDir: e.NGINX_SITES_DIR ?? resolve(dataDir, 'nginx/sites'),
    proxyListenAddress: e.PROXY_LISTEN_ADDRESS, proxyHttpPort: e.PROXY_HTTP_PORT, proxyHttpsPort: e.PROXY_HTTPS_PORT,
    healthCheckPath: e.HEALTH_CHECK_PATH, healthCheckTimeoutMs: e.HEALTH_CHECK_TIMEOUT_MS,
    acmeDirectoryUrl: e.ACME_DIRECTORY_URL ?? DEFAULT_ACME_DIRECTORY_URL, acmeEmail: e.ACME_EMAIL,
    acmeWebroot: e.ACME_WEBROOT ?? resolve(dataDir, 'acme-webroot'), acmeCaFile: e.ACME_CA_FILE, certsDir: e.CERTS_DIR ?? resolve(dataDir, 'certs'),
    renewBeforeDays: e.RENEW_BEFORE_DAYS, registryUrl: e.REGISTRY_URL,
    logLevel: e.LOG_LEVEL, logStreamMaxS: e.LOG_STREAM_MAX_S,
  };
};

const HIDDEN = '(value hidden)';
const shown = (kind: Shown, value: string): string => {
  if (kind === 'secret') return HIDDEN;
  const safe = kind === 'url' ? redactUrl(value) : value;
  if (safe === null) return HIDDEN;
  return `(got ${JSON.stringify(safe.length > 120 ? `${safe.slice(0, 120)}…` : safe)})`;
};

/**
 * The URL with its password and password-ish query parameters replaced by ***, or null when
 * it does not even look like `scheme://…` (then nothing in it can be told apart from a secret).
 * Text-based rather than WHATWG-based: it must also cover multi-host and malformed URLs.
 */
export const redactUrl = (value: string): string | null => {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)(.*)$/is.exec(value.trim());
  if (!m) return null;
  let rest = m[2]!;
  // The last @ ends the user info even when an unencoded @ sits in the password.
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const userInfo = rest.slice(0, at);
    const colon = userInfo.indexOf(':');
    if (colon >= 0) rest = `${userInfo.slice(0, colon)}:***${rest.slice(at)}`;
  }
  rest = rest.replace(/([?&][^=&#]*(?:pass|secret|token|key)[^=&#]*=)[^&#]*/gi, '$1***');
  return m[1] + rest;
};

/** The config as it may be logged: secrets replaced by ***, URLs without their passwords. */
export const describeConfig = (config: Config): Record<string, unknown> => {
  const hide = (s: string | undefined) => (s === undefined ? undefined : '***');
  const url = (s: string | undefined) => (s === undefined ? undefined : (redactUrl(s) ?? '***'));
  return {
    ...config,
    secretKey: hide(config.secretKey), secretsKey: hide(config.secretsKey), adminPassword: hide(config.adminPassword),
    databaseUrl: url(config.databaseUrl), eventStoreUrl: url(config.eventStoreUrl), redisUrl: url(config.redisUrl),
    acmeDirectoryUrl: url(config.acmeDirectoryUrl), registryUrl: url(config.registryUrl),
  };
};
