// One express app configured the same way for every module: request ids, one access log
// line per request, security headers, JSON bodies of at most 1 MiB, and (after the
// routes are mounted, by finish(app)) the 404 fallback and the problem+json error handler.
import express, { type Express, type RequestHandler } from 'express';
import type { Logger } from 'pino';
import { accessLog } from './accessLog.ts';
import { chain } from './chain.ts';
import { errorHandler, notFoundHandler } from './errorHandler.ts';
import { sendProblem } from './problem.ts';
import { requestId } from './requestId.ts';
import { securityHeaders } from './securityHeaders.ts';

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

// A request without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3):
// nothing to check or parse, which is every GET.
const withBodyOnly = (handler: RequestHandler): RequestHandler => (req, res, next) =>
  req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined ? next() : handler(req, res, next);

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

  // The basics every request goes through, as one layer (see chain.ts).
  app.use(chain(
    requestId(),
    accessLog({ logger: opts.logger, quietPaths: opts.quietPaths ?? ['/health', '/health/ready'] }),
    securityHeaders(),
    withBodyOnly(chain(
      requireJson(state),
      express.json({ limit: opts.bodyLimit ?? '1mb', strict: true, type: JSON_TYPES }),
    )),
  ));
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
