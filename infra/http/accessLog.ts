// One access-log line per request, written when the response is done: request id, user
// id, method, URL (secret query parameters redacted), client address, headers (secret
// ones replaced), status and time taken. Never a body.
//
// Why not pino-http: it makes a child logger and runs the redaction for every request,
// even at a level that writes nothing; that was a quarter of the CPU of a cheap
// authenticated read. Here nothing is built unless the line is written.
import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { SECRET_KEYS } from '../logger.ts';

const SECRET_NAMES = new Set<string>([...SECRET_KEYS, 'proxy-authorization'].map((k) => k.toLowerCase()));

/** The URL for a log line: values of secret-looking query parameters are replaced. */
export const redactUrl = (url: string): string => {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const params = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const raw = pair.split('=')[0]!.replace(/\+/g, ' ');
      let name: string;
      try {
        name = decodeURIComponent(raw).toLowerCase();
      } catch {
        name = raw.toLowerCase(); // malformed percent-encoding (`?%=%`): logged as sent, never a 500
      }
      return SECRET_NAMES.has(name) ? `${pair.split('=')[0]}=[Redacted]` : pair;
    });
  return `${url.slice(0, q)}?${params.join('&')}`;
};

const redactHeaders = (headers: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, SECRET_NAMES.has(k.toLowerCase()) ? '[Redacted]' : v]));

const userIdOf = (res: Response): unknown => (res.locals['principal'] as { userId?: unknown } | null | undefined)?.userId;

export type AccessLogOptions = {
  logger: Logger;
  /** GET requests to these paths (probes) are not logged unless they fail with a 5xx. */
  quietPaths?: readonly string[];
};

export const accessLog = (opts: AccessLogOptions): RequestHandler => {
  const { logger } = opts;
  const quiet = new Set(opts.quietPaths ?? []);
  const write = (req: Request, res: Response, started: number, aborted: boolean) => {
    const status = aborted ? 499 : res.statusCode;
    const level = status >= 500 ? 'error' : 'info';
    if (!logger.isLevelEnabled(level)) return;
    if (level === 'info' && req.method === 'GET' && quiet.has(req.path)) return;
    const userId = userIdOf(res);
    logger[level]({
      request_id: res.locals.requestId,
      ...(userId === undefined ? {} : { user_id: userId }),
      req: {
        method: req.method,
        url: redactUrl(req.originalUrl ?? req.url),
        remote_address: req.socket.remoteAddress,
        headers: redactHeaders(req.headers),
      },
      res: { status_code: status },
      response_time_ms: Math.round((performance.now() - started) * 10) / 10,
    }, aborted ? `${req.method} aborted by the client` : `${req.method} ${status}`);
  };
  return (req, res, next) => {
    const started = performance.now();
    // 'close' comes once per response: after it was sent, or when the client went away first.
    res.once('close', () => write(req, res, started, !res.writableFinished));
    next();
  };
};
