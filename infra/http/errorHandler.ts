// The last middleware of the app: every error becomes one problem+json response (SPEC §3).
// Codes map to statuses through the one table (errorStatus.ts); an error we did not
// anticipate answers a generic 500 and is logged with the request id, and neither its
// message nor its stack ever reaches the response.
import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AppError } from '../errors.ts';
import { ERROR_STATUS } from './errorStatus.ts';
import { sendProblem, type Problem } from './problem.ts';
import { ValidationError, zodIssuesToFields } from './validate.ts';

export const INTERNAL_DETAIL = 'an unexpected error occurred; quote the request id when reporting it';

type Described = { problem: Problem; unexpected: boolean };

const internal = (): Described => ({ problem: { status: 500, code: 'INTERNAL', detail: INTERNAL_DETAIL }, unexpected: true });

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

// body-parser (express.json) raises http-errors with a `type`; their messages are written
// for clients, but we word our own so that nothing about our stack leaks.
const bodyParserProblem = (err: Record<string, unknown>): Problem | null => {
  switch (err['type']) {
    case 'entity.too.large':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', detail: `the request body is larger than ${String(err['limit'] ?? 'the limit')} bytes` };
    case 'parameters.too.many':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', detail: 'the request has too many parameters' };
    case 'entity.parse.failed':
      return { status: 400, code: 'BAD_JSON', detail: 'the request body is not valid JSON' };
    case 'charset.unsupported':
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: `unsupported charset "${String(err['charset']).slice(0, 40)}"; send UTF-8` };
    case 'encoding.unsupported':
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: `unsupported content encoding "${String(err['encoding']).slice(0, 40)}"` };
    case 'request.aborted':
      return { status: 400, code: 'BAD_REQUEST', detail: 'the request was aborted before its body was read' };
    case 'request.size.invalid':
      return { status: 400, code: 'BAD_REQUEST', detail: 'the request body does not match its Content-Length' };
    default:
      return null; // stream.encoding.set, stream.not.readable…: our bug, a 500
  }
};

const CODE_OF_STATUS: Record<number, string> = {
  400: 'BAD_REQUEST', 401: 'UNAUTHORIZED', 403: 'FORBIDDEN', 404: 'NOT_FOUND', 405: 'METHOD_NOT_ALLOWED',
  412: 'PRECONDITION_FAILED', 413: 'PAYLOAD_TOO_LARGE', 415: 'UNSUPPORTED_MEDIA_TYPE', 429: 'RATE_LIMITED',
};

/** The response an error deserves, and whether it was unexpected (then it must be logged). */
export const describeError = (err: unknown): Described => {
  if (err instanceof ValidationError) {
    return { problem: { status: 400, code: 'VALIDATION_FAILED', detail: err.message, errors: err.errors }, unexpected: false };
  }
  if (err instanceof z.core.$ZodError) {
    return {
      problem: { status: 400, code: 'VALIDATION_FAILED', detail: 'the request is not valid', errors: zodIssuesToFields(err.issues) },
      unexpected: false,
    };
  }
  if (!isRecord(err)) return internal();

  if (typeof err['type'] === 'string' && typeof err['status'] === 'number') {
    const problem = bodyParserProblem(err);
    if (problem) return { problem, unexpected: false };
  }

  const code = err['code'];
  // The domain layer's errors are recognised by name: infra may not import domain/.
  const callers = err instanceof AppError || (err instanceof Error && err.name === 'DomainError');
  if (typeof code === 'string' && err instanceof Error) {
    const status = ERROR_STATUS[code];
    if (status !== undefined) {
      // A 5xx code on something that is not ours (or INTERNAL itself) may carry anything in its message.
      if (status >= 500 && (!callers || code === 'INTERNAL')) return internal();
      return { problem: { status, code, detail: err.message }, unexpected: false };
    }
    if (callers) {
      const status = /_(EXISTS|CONFLICT)$/.test(code) ? 409 : 400;
      return { problem: { status, code, detail: err.message }, unexpected: false };
    }
  }

  // Other http-errors meant for the client (e.g. the router's "Failed to decode param").
  const status = err['status'] ?? err['statusCode'];
  // (The router marks its URIError with status 400 but not `expose`.)
  const forClient = err['expose'] === true || err instanceof URIError;
  if (forClient && typeof status === 'number' && status >= 400 && status < 500 && err instanceof Error) {
    return { problem: { status, code: CODE_OF_STATUS[status] ?? 'BAD_REQUEST', detail: err.message }, unexpected: false };
  }
  return internal();
};

/** The final error middleware: always answers through sendProblem. */
export const errorHandler = (opts: { logger: Logger }): ErrorRequestHandler => (err, req, res, next) => {
  const { problem, unexpected } = describeError(err);
  const log = opts.logger.child({ request_id: res.locals.requestId });
  if (unexpected) log.error({ err, method: req.method, path: req.path }, 'unhandled error');
  // One of our own 5xx codes (a vault key mismatch, an unavailable store…): the client
  // sees the problem, the operator needs the line.
  else if (problem.status >= 500) log.error({ code: problem.code, detail: problem.detail, method: req.method, path: req.path }, 'request failed');
  if (res.headersSent) {
    // Too late for a problem body: let express cut the connection.
    if (!unexpected) log.warn({ err }, 'error after the response had started');
    next(err);
    return;
  }
  sendProblem(res, problem);
};

/** The fallback for requests that no route answered. */
export const notFoundHandler = (): RequestHandler => (_req, res) => {
  sendProblem(res, { status: 404, code: 'NOT_FOUND', detail: 'no such endpoint' });
};
