// Optimistic concurrency over HTTP (SPEC §3): a single resource's ETag is its stream
// revision, and If-Match hands that revision back to the command as its expected
// revision, so two writes based on the same read can never both succeed.
import type { Request, Response } from 'express';
import { AppError } from '../errors.ts';

// Strong ETags: If-Match compares strongly (RFC 9110 §13.1.1), and the representation
// of one revision is always the same bytes. W/"n" is accepted back as well because
// proxies (nginx when it compresses) weaken the ETags they pass on.
export const etagOf = (revision: bigint, opts: { weak?: boolean } = {}): string => `${opts.weak ? 'W/' : ''}"${revision}"`;

export const setEtag = (res: Response, revision: bigint): void => {
  res.setHeader('ETag', etagOf(revision));
};

const ONE_ETAG = /^(?:W\/)?"(0|[1-9][0-9]{0,18})"$/;

export const preconditionFailed = (detail: string): AppError => new AppError('PRECONDITION_FAILED', detail);

/**
 * The revision named by `If-Match`, or undefined when there is none (or it is `*`,
 * which asks only that the resource exists — the command checks that anyway). Anything
 * that is not exactly one ETag we could have issued is a 412: it can match nothing.
 */
export const expectedRevisionFromIfMatch = (req: Request): bigint | undefined => {
  const header = req.headers['if-match'];
  if (header === undefined) return undefined;
  const value = header.trim();
  if (value === '*') return undefined;
  const m = ONE_ETAG.exec(value);
  if (!m) throw preconditionFailed('If-Match must be exactly one ETag of this resource, e.g. "3"');
  return BigInt(m[1]!);
};

const isConflict = (err: unknown): boolean =>
  err instanceof Error && (err as Error & { code?: unknown }).code === 'CONFLICT';

/**
 * A lost race on a request that carried If-Match is the client's stale precondition:
 * 412, not 409. Without If-Match (or for any other error) the error is returned as is.
 */
export const mapConflict = (err: unknown, hadIfMatch: boolean): unknown =>
  hadIfMatch && isConflict(err)
    ? preconditionFailed('the resource has changed since the ETag in If-Match was read; read it again and retry')
    : err;

/**
 * Runs a command with the revision from If-Match as its expected revision and maps its
 * conflict to 412: `const r = await withIfMatch(req, (expected) => handle(…, expected))`.
 */
export const withIfMatch = async <T>(req: Request, run: (expectedRevision: bigint | undefined) => Promise<T>): Promise<T> => {
  const expected = expectedRevisionFromIfMatch(req);
  try {
    return await run(expected);
  } catch (err) {
    throw mapConflict(err, expected !== undefined);
  }
};
