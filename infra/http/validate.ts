// Request validation for thin handlers: every input (path params, query, JSON body) is
// parsed by a zod schema before a handler sees it; a failure is a 400 problem naming
// each bad field as `params.x`, `query.x` or `body.x.y[0]`.
import type { Request } from 'express';
import { z } from 'zod';
import { AppError } from '../errors.ts';
import type { ProblemField } from './problem.ts';

/** 400 VALIDATION_FAILED with one `{path, message}` per bad or unknown field. */
export class ValidationError extends AppError {
  constructor(readonly errors: ProblemField[], message = 'the request is not valid') {
    super('VALIDATION_FAILED', message);
  }
}

const formatPath = (at: string | undefined, path: readonly PropertyKey[]): string =>
  path.reduce<string>(
    (acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : acc === '' ? String(seg) : `${acc}.${String(seg)}`),
    at ?? '',
  );

/** zod issues → problem fields; an unknown key becomes one field per key, named by its path. */
export const zodIssuesToFields = (issues: readonly z.core.$ZodIssue[], at?: string): ProblemField[] =>
  issues.flatMap((issue): ProblemField[] =>
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((k) => ({ path: formatPath(at, [...issue.path, k]), message: 'unknown field' }))
      : [{ path: formatPath(at, issue.path), message: issue.message }],
  );

/**
 * Parses `value` with `schema` or throws a ValidationError (400). `at` prefixes the
 * reported paths (`body`, `query`…); without it a ZodError's paths are reported as they are.
 */
export const parse = <S extends z.ZodType>(schema: S, value: unknown, at?: string): z.output<S> => {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new ValidationError(zodIssuesToFields(result.error.issues, at));
};

export type RequestSchemas = {
  /** Path parameters. Unknown ones are dropped (a router mounted with mergeParams may add some). */
  params?: z.ZodObject;
  /** Query string; made strict, so an unknown parameter is a 400. */
  query?: z.ZodObject;
  /** JSON body; a z.object is made strict (use z.strictObject for nested objects too) and a missing body reads as `{}`. */
  body?: z.ZodType;
};

type Out<S, Fallback> = S extends z.ZodType ? z.output<S> : Fallback;

export type Validated<S extends RequestSchemas> = {
  params: Out<S['params'], Record<string, never>>;
  query: Out<S['query'], Record<string, never>>;
  body: Out<S['body'], undefined>;
};

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const isStrict = (schema: z.ZodObject): boolean => schema._zod.def.catchall?._zod.def.type === 'never';

// A z.strictObject is kept as it is (with its `.meta({id})`, which names it in OpenAPI);
// a plain z.object is made strict, keeping its description but not its id (ids are unique).
const strict = <S extends z.ZodType | undefined>(schema: S): S => {
  if (!(schema instanceof z.ZodObject) || isStrict(schema)) return schema;
  const { id: _id, ...meta } = z.globalRegistry.get(schema) ?? {};
  const made = schema.strict();
  return (Object.keys(meta).length > 0 ? made.meta(meta) : made) as unknown as S;
};

/**
 * The schemas of one route, made strict once; `.parse(req)` returns typed params, query
 * and body or throws a ValidationError naming every bad field at once.
 */
export const validated = <S extends RequestSchemas>(schemas: S) => {
  const query = strict(schemas.query);
  const body = strict(schemas.body);
  const params = schemas.params;
  return {
    schemas: { params, query, body } as S,
    parse(req: Request): Validated<S> {
      const fields: ProblemField[] = [];
      const run = (schema: z.ZodType | undefined, value: unknown, at: string, none: unknown): unknown => {
        if (!schema) {
          // A route that declares no query/body refuses one rather than ignoring it.
          if (at === 'query' && isPlainObject(value))
            fields.push(...Object.keys(value).map((k) => ({ path: `query.${k}`, message: 'unknown field' })));
          const emptyObject = isPlainObject(value) && Object.keys(value).length === 0;
          if (at === 'body' && value !== undefined && !emptyObject) fields.push({ path: 'body', message: 'this endpoint takes no body' });
          return none;
        }
        const r = schema.safeParse(value);
        if (r.success) return r.data;
        fields.push(...zodIssuesToFields(r.error.issues, at));
        return undefined;
      };
      const out = {
        params: run(params, req.params, 'params', {}),
        query: run(query, req.query, 'query', {}),
        body: run(body, req.body === undefined && body instanceof z.ZodObject ? {} : req.body, 'body', undefined),
      };
      if (fields.length > 0) throw new ValidationError(fields);
      return out as Validated<S>;
    },
  };
};

// ---- shared pieces ---------------------------------------------------------------

/** A name that may reach a path, a file or a command (SPEC §3). */
export const Slug = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be a slug: 1–63 lowercase letters, digits or dashes, not starting with a dash');

/** A UUID, normalised to lower case so that one id never names two streams. */
export const Uuid = z.uuid().toLowerCase();

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 500;

/** `?limit=` (1–500, default 50), coerced from the query string. */
export const Limit = z.coerce.number().int().min(1).max(MAX_LIMIT).default(DEFAULT_LIMIT);
export const Offset = z.coerce.number().int().min(0).default(0);

/** `?limit=&offset=` for lists answering `{items, total, limit, offset}`; `.extend({…})` it with filters. */
export const Pagination = z.strictObject({ limit: Limit, offset: Offset });
export type Pagination = z.output<typeof Pagination>;

/** `?limit=&cursor=` for append-only histories answering `{items, limit, next_cursor}`; the cursor is opaque. */
export const CursorPagination = z.strictObject({ limit: Limit, cursor: z.string().min(1).max(1024).optional() });
export type CursorPagination = z.output<typeof CursorPagination>;

export type Page<T> = { items: T[]; total: number; limit: number; offset: number };
export type CursorPage<T> = { items: T[]; limit: number; next_cursor: string | null };

export const page = <T>(items: T[], total: number | bigint | string, p: { limit: number; offset: number }): Page<T> => ({
  items,
  total: Number(total),
  limit: p.limit,
  offset: p.offset,
});

export const cursorPage = <T>(items: T[], limit: number, nextCursor: string | null): CursorPage<T> => ({
  items,
  limit,
  next_cursor: nextCursor,
});

/** The response schema of a list of `item` (for OpenAPI). */
export const PageOf = <T extends z.ZodType>(item: T) =>
  z.strictObject({ items: z.array(item), total: z.number().int(), limit: z.number().int(), offset: z.number().int() });

export const CursorPageOf = <T extends z.ZodType>(item: T) =>
  z.strictObject({ items: z.array(item), limit: z.number().int(), next_cursor: z.string().nullable() });
