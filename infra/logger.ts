// The one logger factory. Secrets must never reach a log line (DESIGN §6), so redaction
// is configured here once rather than trusted to every call site.
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config.ts';

/** Keys whose values are secret wherever they appear (both the API's snake_case and our camelCase). */
export const SECRET_KEYS = [
  'password', 'passphrase', 'private_key', 'privateKey', 'token', 'access_token', 'accessToken',
  'refresh_token', 'authorization', 'cookie', 'set-cookie', 'secret', 'secrets_key', 'secretKey',
  'api_key', 'apiKey', 'x-api-key',
] as const;

// pino's redaction costs ~0.7µs per wildcard path per line, so cover depths 0–2 (e.g. `password`,
// `body.password`, `req.headers.authorization`) rather than every conceivable nesting.
const MAX_DEPTH = 2;
const key = (k: string) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : `["${k}"]`);
const atDepth = (k: string, depth: number) => `${'*.'.repeat(depth)}${key(k)}`.replace(/\.\[/, '[');

/** Every path handed to pino's `redact`; exported so tests (and other loggers) can reuse it. */
export const REDACT_PATHS: readonly string[] = [
  ...SECRET_KEYS.flatMap((k) => Array.from({ length: MAX_DEPTH + 1 }, (_, d) => atDepth(k, d))),
  // Known deeper spots: HTTP client errors (acme-client uses axios) carry the request headers.
  'err.config.headers.authorization', 'err.request.headers.authorization',
];

export const createLogger = (config: { logLevel: LogLevel }, destination?: DestinationStream): Logger => {
  const options = {
    level: config.logLevel,
    // No pid/hostname: one service name is enough to find our lines; the platform adds the rest.
    base: { service: 'opsledger' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: [...REDACT_PATHS], censor: '[Redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
};
