// Every request gets an id that ties its log lines, its problem body and the caller's
// report together (SPEC §3: every response carries X-Request-Id, echoed when given).
import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';

export const REQUEST_ID_HEADER = 'X-Request-Id';

// Echoed into a response header and into log lines, so only a short, inert token is
// trusted; anything else (too long, spaces, control characters) is replaced.
const SANE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

declare global {
  namespace Express {
    interface Locals {
      /** Set by the requestId middleware before anything else runs. */
      requestId?: string;
    }
  }
}

export const isSaneRequestId = (value: unknown): value is string => typeof value === 'string' && SANE_ID.test(value);

/** Takes a sane `X-Request-Id` from the request, or makes a UUID; sets res.locals.requestId and the response header. */
export const requestId = (opts: { generate?: () => string } = {}): RequestHandler => {
  const generate = opts.generate ?? randomUUID;
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = isSaneRequestId(given) ? given : generate();
    res.locals.requestId = id;
    res.setHeader(REQUEST_ID_HEADER, id);
    next();
  };
};

/** The request id of a response (empty string when the middleware did not run). */
export const requestIdOf = (res: Response): string => res.locals.requestId ?? '';
