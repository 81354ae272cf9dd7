// RFC 9457 problem details: every error response in the API is one of these.
import type { Response } from 'express';
import { STATUS_CODES } from 'node:http';

export type ProblemField = { path: string; message: string };

export type Problem = {
  status: number;
  code: string;
  detail: string;
  title?: string;
  errors?: ProblemField[];
  /** Extra members (e.g. `retry_after`). Never a stack trace, never a secret. */
  extra?: Record<string, unknown>;
};

export const problemBody = (p: Problem, requestId: string | undefined) => ({
  type: `https://opsledger.dev/problems/${p.code.toLowerCase().replace(/_/g, '-')}`,
  title: p.title ?? STATUS_CODES[p.status] ?? 'Error',
  status: p.status,
  detail: p.detail,
  code: p.code,
  request_id: requestId ?? null,
  ...(p.errors ? { errors: p.errors } : {}),
  ...(p.extra ?? {}),
});

/** Writes a problem response; the request id comes from res.locals.requestId (set by requestId middleware). */
export const sendProblem = (res: Response, p: Problem): void => {
  res.status(p.status).type('application/problem+json').send(JSON.stringify(problemBody(p, res.locals['requestId'] as string | undefined)));
};
