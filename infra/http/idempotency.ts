// Idempotency-Key for POST commands (SPEC §3): a retry within 24 h by the same caller
// for the same request is answered with the first response, and the handler is not
// called again, so nothing is appended twice.
//
// Concurrent duplicates: the first request claims the key (a row with status null); a
// duplicate arriving while it runs is told 409 IDEMPOTENCY_IN_PROGRESS with Retry-After
// rather than made to wait, so that no connection is held open on another's behalf and
// the answer is the same on every instance. A claim left behind by a crashed instance
// is taken over after `inProgressTimeoutMs`.
import { createHash } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Tables } from '../db/tables.ts';
import { AppError } from '../errors.ts';
import { ValidationError } from './validate.ts';

export const IDEMPOTENCY_KEY_HEADER = 'Idempotency-Key';
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** The response headers a replay repeats besides its status and body. */
export const REPLAYED_HEADERS = ['content-type', 'location', 'etag', 'x-event-position'] as const;

export type IdempotencyOptions = {
  db: Kysely<Tables>;
  /** Whose key it is: e.g. the user id, or `anonymous:` + the client address. Run after authentication. */
  principalKey: (req: Request, res: Response) => string;
  ttlMs?: number;
  /** A claim older than this whose request never finished is abandoned (its instance died). */
  inProgressTimeoutMs?: number;
  /** Bodies larger than this are not kept (the key is released instead). */
  maxStoredBytes?: number;
  pruneIntervalMs?: number;
  now?: () => Date;
  logger?: Logger;
};

const KEY = /^[\x20-\x7e]{1,255}$/;

const sortKeys = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
};

/** sha256 of the body's canonical JSON (key order does not matter; no body hashes as ''). */
export const requestHash = (body: unknown): string =>
  createHash('sha256').update(body === undefined ? '' : JSON.stringify(sortKeys(body))).digest('hex');

// 2xx and 4xx are the outcome of the request and are kept; 5xx, 429 (rate limited) and
// 408 say nothing about it, so the key is released and a retry runs again.
const keeps = (status: number) => (status >= 200 && status < 300) || (status >= 400 && status < 500 && status !== 408 && status !== 429);

type Chunk = string | Uint8Array;

export const idempotency = (opts: IdempotencyOptions): RequestHandler => {
  const { db } = opts;
  const ttl = opts.ttlMs ?? IDEMPOTENCY_TTL_MS;
  const inProgressTimeout = opts.inProgressTimeoutMs ?? 5 * 60 * 1000;
  const maxStored = opts.maxStoredBytes ?? 1024 * 1024;
  const pruneInterval = opts.pruneIntervalMs ?? 10 * 60 * 1000;
  const now = opts.now ?? (() => new Date());
  let lastPrune = 0;

  const loggerOf = (req: Request): Logger | undefined => (req as Request & { log?: Logger }).log ?? opts.logger;

  const prune = (req: Request) => {
    const at = now().getTime();
    if (at - lastPrune < pruneInterval) return;
    lastPrune = at;
    db.deleteFrom('idempotency_keys')
      .where('created_at', '<', new Date(at - ttl))
      .execute()
      .catch((err: unknown) => loggerOf(req)?.warn({ err }, 'pruning expired idempotency keys failed'));
  };

  const keyRow = (principal: string, key: string) =>
    db.deleteFrom('idempotency_keys').where('principal', '=', principal).where('key', '=', key);

  /** Claims the key, or returns the row that holds it (after clearing an expired or abandoned one). */
  const claim = async (principal: string, key: string, method: string, path: string, hash: string) => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const at = now();
      const inserted = await db
        .insertInto('idempotency_keys')
        .values({ key, principal, method, path, request_hash: hash, status: null, headers: null, body: null, created_at: at })
        .onConflict((oc) => oc.columns(['principal', 'key']).doNothing())
        .returning('key')
        .executeTakeFirst();
      if (inserted) return null;
      const row = await db.selectFrom('idempotency_keys').selectAll().where('principal', '=', principal).where('key', '=', key).executeTakeFirst();
      if (!row) continue; // released meanwhile
      const age = at.getTime() - new Date(row.created_at).getTime();
      if (age <= ttl && !(row.status === null && age > inProgressTimeout)) return row;
      // Expired or abandoned: remove it only if it still is (another instance may have re-claimed it).
      await keyRow(principal, key)
        .where((eb) => eb.or([
          eb('created_at', '<', new Date(at.getTime() - ttl)),
          eb.and([eb('status', 'is', null), eb('created_at', '<', new Date(at.getTime() - inProgressTimeout))]),
        ]))
        .execute();
    }
    throw new AppError('IDEMPOTENCY_IN_PROGRESS', 'a request with this Idempotency-Key is in progress; retry later');
  };

  return async (req, res, next) => {
    const raw = req.headers['idempotency-key'];
    if (req.method !== 'POST' || raw === undefined) return next();
    const key = (Array.isArray(raw) ? raw.join(', ') : raw).trim();
    if (!KEY.test(key)) {
      throw new ValidationError([{ path: 'headers.idempotency-key', message: 'must be 1 to 255 printable ASCII characters' }]);
    }
    const principal = opts.principalKey(req, res);
    const method = req.method;
    const path = req.originalUrl;
    const hash = requestHash(req.body);
    prune(req);

    const existing = await claim(principal, key, method, path, hash);
    if (existing) {
      if (existing.method !== method || existing.path !== path || existing.request_hash !== hash) {
        throw new AppError('IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was already used for a different request; use a new key');
      }
      if (existing.status === null) {
        res.setHeader('Retry-After', '1');
        throw new AppError('IDEMPOTENCY_IN_PROGRESS', 'the first request with this Idempotency-Key is still in progress; retry later');
      }
      res.status(existing.status);
      for (const [name, value] of Object.entries(existing.headers ?? {})) res.setHeader(name, value);
      res.setHeader('Idempotent-Replayed', 'true');
      res.end(existing.body ?? '');
      return;
    }

    // We hold the key: keep what the handler (or the error handler) sends. Writes go
    // out as they come; the end of the response waits until the outcome is stored, so a
    // client that has the response and retries is always answered from the store.
    const chunks: Buffer[] = [];
    const collect = (chunk: unknown, encoding?: unknown) => {
      if (typeof chunk === 'string') chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'));
      else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
    };
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    const end = res.end.bind(res) as (...args: unknown[]) => Response;
    res.write = ((chunk: Chunk, ...rest: unknown[]) => {
      collect(chunk, rest[0]);
      return write(chunk, ...rest);
    }) as Response['write'];
    let ending = false;
    res.end = ((...args: unknown[]) => {
      if (ending) return res;
      ending = true;
      if (typeof args[0] !== 'function') collect(args[0], args[1]);
      void settle(res.statusCode).finally(() => end(...args));
      return res;
    }) as Response['end'];

    const settle = async (status: number) => {
      const body = Buffer.concat(chunks);
      const text = body.toString('utf8');
      try {
        if (keeps(status) && body.length <= maxStored && Buffer.from(text, 'utf8').equals(body)) {
          const headers: Record<string, string> = {};
          for (const name of REPLAYED_HEADERS) {
            const v = res.getHeader(name);
            if (v !== undefined) headers[name] = Array.isArray(v) ? v.join(', ') : String(v);
          }
          await db
            .updateTable('idempotency_keys')
            .set({ status, headers: JSON.stringify(headers), body: text })
            .where('principal', '=', principal)
            .where('key', '=', key)
            .where('status', 'is', null)
            .execute();
        } else {
          await keyRow(principal, key).where('status', 'is', null).execute();
        }
      } catch (err) {
        loggerOf(req)?.warn({ err }, 'storing the idempotent response failed; releasing the key');
        await keyRow(principal, key).where('status', 'is', null).execute().catch(() => undefined);
      }
    };

    next();
  };
};
