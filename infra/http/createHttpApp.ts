// One express app configured the same way for every module: request ids, one access log
// line per request, security headers, JSON bodies of at most 1 MiB, and (after the
// routes are mounted, by finish(app)) the 404 fallback and the problem+json error handler.
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Express, type Request, type RequestHandler, type Response } from 'express';
import helmet from 'helmet';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import { SECRET_KEYS } from '../logger.ts';
import { errorHandler, notFoundHandler } from './errorHandler.ts';
import { sendProblem } from './problem.ts';
import { requestId } from './requestId.ts';

export const JSON_TYPES = ['application/json', 'application/*+json'];

export type HttpAppOptions = {
  logger: Logger;
  /** Largest accepted body (SPEC §3: 1 MiB). */
  bodyLimit?: string | number;
  /** Paths (express-style `:param` patterns or RegExps) that take bodies of other media types. */
  otherBodyTypes?: ReadonlyArray<{ path: string | RegExp; types: string[] }>;
  /** GET requests to these paths (probes) are not access-logged; errors are still logged by the error handler. */
  quietPaths?: readonly string[];
};

type AppState = { logger: Logger; otherBodyTypes: Array<{ path: RegExp; types: string[] }>; finished: boolean };
const states = new WeakMap<Express, AppState>();

const pathPattern = (path: string | RegExp): RegExp =>
  path instanceof RegExp
    ? path
    : new RegExp(`^${path.split(/(:[A-Za-z_][A-Za-z0-9_]*)/).map((part) => (part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('')}/?$`);

/** Lets `path` take bodies of `types` (the route parses them itself, e.g. express.text({type: 'application/yaml'})). */
export const acceptBodyTypes = (app: Express, path: string | RegExp, types: string[]): void => {
  const state = states.get(app);
  if (!state) throw new Error('acceptBodyTypes: the app was not made by createHttpApp');
  state.otherBodyTypes.push({ path: pathPattern(path), types });
};

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

const userIdOf = (res: ServerResponse): unknown =>
  ((res as Response).locals?.['principal'] as { userId?: unknown } | undefined)?.userId;

// Requests that carry a body must send JSON unless their path opted in to other types.
const requireJson = (state: AppState): RequestHandler => (req, res, next) => {
  // `Content-Length: 0` (what clients send for a bodiless POST) is no body at all.
  if (req.headers['content-length'] === '0' && req.headers['transfer-encoding'] === undefined) return next();
  const json = req.is(JSON_TYPES);
  if (json === null || json) return next(); // no body, or JSON
  const other = state.otherBodyTypes.find((o) => o.path.test(req.path));
  if (other && req.is(other.types)) return next();
  const accepted = [...JSON_TYPES, ...(other?.types ?? [])].join(', ');
  sendProblem(res, { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: `the request body must be one of: ${accepted}` });
};

export const createHttpApp = (opts: HttpAppOptions): Express => {
  const app = express();
  const state: AppState = {
    logger: opts.logger,
    otherBodyTypes: (opts.otherBodyTypes ?? []).map((o) => ({ path: pathPattern(o.path), types: o.types })),
    finished: false,
  };
  states.set(app, state);

  // Behind a proxy the client address comes from X-Forwarded-For only if someone decides
  // to trust it; nobody has, so rate limits key on the socket's address.
  app.set('trust proxy', false);
  app.disable('x-powered-by');
  // ETags are stream revisions set by the routes (conditional.ts), never body hashes.
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use(requestId());
  const quiet = new Set(opts.quietPaths ?? ['/health', '/health/ready']);
  app.use(
    pinoHttp<IncomingMessage, ServerResponse>({
      logger: opts.logger,
      genReqId: (_req, res) => (res as Response).locals.requestId ?? '',
      quietReqLogger: true,
      customAttributeKeys: { reqId: 'request_id', responseTime: 'response_time_ms' },
      customProps: (_req, res) => {
        const userId = userIdOf(res);
        return userId === undefined ? {} : { user_id: userId };
      },
      // No bodies, no credentials: method, URL (secret parameters redacted) and headers
      // with Authorization/Cookie replaced; of the response only its status.
      serializers: {
        req: (r: { method: string; url: string; remoteAddress?: string; headers: Record<string, unknown>; raw: Request }) => ({
          method: r.method,
          url: redactUrl(r.raw.originalUrl ?? r.url),
          remote_address: r.remoteAddress,
          headers: redactHeaders(r.headers),
        }),
        res: (r: { statusCode: number }) => ({ status_code: r.statusCode }),
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : 'info'),
      customSuccessMessage: (req, res) => `${req.method} ${res.statusCode}`,
      customErrorMessage: (req, res) => `${req.method} ${res.statusCode}`,
      // A 5xx without a real error gets a synthetic one from pino-http; the error handler
      // has already logged the real one, so drop the noise.
      customErrorObject: (_req, res, error, val) =>
        !res.err && error.message === `failed with status code ${res.statusCode}` ? { ...val, err: undefined } : val,
      autoLogging: { ignore: (req) => req.method === 'GET' && quiet.has((req as Request).path ?? req.url ?? '') },
    }),
  );
  app.use(
    helmet({
      contentSecurityPolicy: {
        useDefaults: false,
        // Tight enough for an API, loose enough for /docs (Swagger UI served from 'self'
        // with no inline script; it does set inline styles and data: images).
        directives: {
          defaultSrc: ["'self'"],
          baseUri: ["'none'"],
          connectSrc: ["'self'"],
          fontSrc: ["'self'", 'data:'],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          imgSrc: ["'self'", 'data:'],
          objectSrc: ["'none'"],
          scriptSrc: ["'self'"],
          scriptSrcAttr: ["'none'"],
          styleSrc: ["'self'", "'unsafe-inline'"],
        },
      },
    }),
  );
  app.use(requireJson(state));
  app.use(express.json({ limit: opts.bodyLimit ?? '1mb', strict: true, type: JSON_TYPES }));
  return app;
};

/** Adds the 404 fallback and the error handler: call once, after every route is mounted. */
export const finish = (app: Express): Express => {
  const state = states.get(app);
  if (!state) throw new Error('finish: the app was not made by createHttpApp');
  if (state.finished) throw new Error('finish: called twice');
  state.finished = true;
  app.use(notFoundHandler());
  app.use(errorHandler({ logger: state.logger }));
  return app;
};
