// The API's OpenAPI 3.1 document, built from the very zod schemas that validate the
// requests: a route is registered and validated by one declaration (`bindRoutes`, or
// `registerRoute(...).parse(req)`), so the document cannot drift from what is enforced.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import { setRouteLabel } from '../metrics.ts';
import { validated, type RequestSchemas, type Validated } from './validate.ts';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** A response: its body schema, a description only (no body), or both with headers. */
export type ResponseSpec =
  | z.ZodType
  | string
  | { description?: string; body?: z.ZodType; contentType?: string; headers?: Record<string, string> };

/** Everything about a route but its method and its request schemas. */
export type RouteMeta = {
  /** Express form, e.g. `/api/v1/projects/:slug/jobs/:id`; documented as `{slug}`, `{id}`. */
  path: string;
  summary: string;
  description?: string;
  tags: string[];
  /** Statuses this route answers besides the ones every route gets (400, 401/403 with auth, 429, 500…). */
  responses: Record<number, ResponseSpec>;
  /** Bearer token required, not needed, or used when given. */
  auth: boolean | 'optional';
  operationId?: string;
  /** Media type of the body when it is not JSON (the route parses it itself). */
  bodyContentType?: string;
  /**
   * Honours Idempotency-Key. With bindRoutes: every POST does when the router was bound
   * with an idempotency middleware, unless it says `false`.
   */
  idempotent?: boolean;
  /** Honours If-Match (documents the header and 412). */
  ifMatch?: boolean;
  deprecated?: boolean;
  /** With bindRoutes: middleware that runs before the input is validated (e.g. a feature switch that answers 403 to any body). */
  before?: RequestHandler[];
};

export type RouteSpec<S extends RequestSchemas = RequestSchemas> = S & RouteMeta & { method: HttpMethod };

export type RegisteredRoute<S extends RequestSchemas> = {
  readonly spec: RouteSpec<S>;
  /** Parses params, query and body with the registered schemas (strict) or throws a ValidationError. */
  parse(req: Request): Validated<S>;
};

export type OpenApiInfo = { title: string; version: string; description?: string };
type Json = Record<string, unknown>;

export interface OpenApiRegistry {
  registerRoute<S extends RequestSchemas>(spec: RouteSpec<S>): RegisteredRoute<S>;
  readonly routes: readonly RouteSpec[];
  openApiDocument(info: OpenApiInfo): Json;
}

const toOpenApiPath = (path: string): string => path.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
const pathParamNames = (path: string): string[] => [...path.matchAll(/:([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!);

const operationIdOf = (method: string, path: string): string =>
  method +
  path
    .split('/')
    .filter((s) => s && s !== 'api' && !/^v\d+$/.test(s))
    .map((s) => (s.startsWith(':') ? `By-${s.slice(1)}` : s))
    .join('-')
    .split(/[^A-Za-z0-9]+/)
    .map((w) => (w ? w[0]!.toUpperCase() + w.slice(1) : ''))
    .join('');

/** Throws on an object in a body schema that would silently drop unknown fields (SPEC §3 rejects them). */
const assertStrictObjects = (schema: unknown, where: string, at = 'body'): void => {
  if (Array.isArray(schema)) return schema.forEach((s, i) => assertStrictObjects(s, where, `${at}[${i}]`));
  if (typeof schema !== 'object' || schema === null) return;
  const s = schema as Json;
  if (s['properties'] && s['additionalProperties'] === undefined) {
    throw new Error(`${where}: the object at ${at} is not strict; use z.strictObject (unknown fields must be rejected)`);
  }
  for (const [k, v] of Object.entries(s)) assertStrictObjects(v, where, k === 'properties' || k === '$defs' ? at : `${at}.${k}`);
};

const PROBLEM_SCHEMA: Json = {
  type: 'object',
  description: 'RFC 9457 problem details. No stack traces, ever.',
  required: ['type', 'title', 'status', 'detail', 'code', 'request_id'],
  properties: {
    type: { type: 'string', format: 'uri' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]*$', description: 'stable identifier, e.g. VALIDATION_FAILED' },
    request_id: { type: ['string', 'null'] },
    errors: {
      type: 'array',
      items: { type: 'object', required: ['path', 'message'], properties: { path: { type: 'string' }, message: { type: 'string' } } },
    },
  },
};

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'Bad request: invalid JSON or fields (VALIDATION_FAILED, BAD_JSON)',
  401: 'Missing, invalid, expired or revoked token',
  403: 'Authenticated but not allowed',
  404: 'Not found (or not visible to the caller)',
  409: 'Conflict (a concurrent write, an existing resource, or the same Idempotency-Key still in progress)',
  412: 'If-Match does not match the current ETag',
  413: 'Request body over 1 MiB',
  415: 'Unsupported content type',
  422: 'Idempotency-Key reused with a different request',
  429: 'Rate limited (see Retry-After)',
  500: 'Unexpected error (quote the request id)',
};

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Converts zod schemas to JSON Schema, moving named sub-schemas (`.meta({id})`) into components. */
const schemaConverter = (components: Record<string, Json>) => {
  const rewrite = (node: unknown, rename: Map<string, string>): unknown => {
    if (Array.isArray(node)) return node.map((n) => rewrite(n, rename));
    if (typeof node !== 'object' || node === null) return node;
    return Object.fromEntries(
      Object.entries(node).map(([k, v]) =>
        k === '$ref' && typeof v === 'string' && v.startsWith('#/$defs/')
          ? [k, `#/components/schemas/${rename.get(v.slice('#/$defs/'.length)) ?? v.slice('#/$defs/'.length)}`]
          : [k, rewrite(v, rename)],
      ),
    );
  };
  return (schema: z.ZodType, io: 'input' | 'output'): Json => {
    const json = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as Json;
    delete json['$schema'];
    const defs = (json['$defs'] ?? {}) as Record<string, Json>;
    delete json['$defs'];
    // Input and output forms of one named schema can differ (defaults, transforms): the
    // second form gets a suffix rather than overwriting the first.
    for (const suffix of ['', io === 'input' ? 'Input' : 'Output', '2', '3', '4', '5']) {
      const rename = new Map(Object.keys(defs).map((name) => [name, `${name}${suffix}`]));
      const rewritten = Object.entries(defs).map(([name, def]) => [rename.get(name)!, rewrite(def, rename) as Json] as const);
      if (rewritten.every(([name, def]) => !components[name] || sameJson(components[name], def))) {
        for (const [name, def] of rewritten) components[name] = def;
        return rewrite(json, rename) as Json;
      }
    }
    throw new Error(`cannot name the schemas ${Object.keys(defs).join(', ')} uniquely in the OpenAPI document`);
  };
};

const responseObject = (status: number, spec: ResponseSpec, convert: ReturnType<typeof schemaConverter>): Json => {
  const r = spec instanceof z.ZodType ? { body: spec } : typeof spec === 'string' ? { description: spec } : spec;
  const description = r.description ?? ERROR_DESCRIPTIONS[status] ?? (status < 300 ? 'Success' : `HTTP ${status}`);
  const out: Json = { description };
  if (status >= 400) out['content'] = { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } };
  else if (r.body) out['content'] = { [r.contentType ?? 'application/json']: { schema: convert(r.body, 'output') } };
  if (r.headers) {
    out['headers'] = Object.fromEntries(Object.entries(r.headers).map(([name, d]) => [name, { description: d, schema: { type: 'string' } }]));
  }
  return out;
};

const parametersOf = (schema: z.ZodObject | undefined, where: 'path' | 'query', convert: ReturnType<typeof schemaConverter>): Json[] => {
  if (!schema) return [];
  const json = convert(schema, 'input');
  const required = new Set((json['required'] as string[] | undefined) ?? []);
  return Object.entries((json['properties'] ?? {}) as Record<string, Json>).map(([name, s]) => ({
    name,
    in: where,
    required: where === 'path' || required.has(name),
    ...(typeof s['description'] === 'string' ? { description: s['description'] } : {}),
    schema: s,
  }));
};

export const createOpenApiRegistry = (): OpenApiRegistry => {
  const routes: RouteSpec[] = [];
  const registry: OpenApiRegistry = {
    routes,
    registerRoute<S extends RequestSchemas>(spec: RouteSpec<S>): RegisteredRoute<S> {
      const where = `${spec.method.toUpperCase()} ${spec.path}`;
      if (routes.some((r) => r.method === spec.method && r.path === spec.path)) throw new Error(`${where} is registered twice`);
      const declared = Object.keys(spec.params?.shape ?? {}).sort();
      const inPath = pathParamNames(spec.path).sort();
      if (!sameJson(declared, inPath)) {
        throw new Error(`${where}: params schema declares [${declared.join(', ')}] but the path has [${inPath.join(', ')}]`);
      }
      const v = validated(spec as S);
      if (spec.body && !spec.bodyContentType) assertStrictObjects(z.toJSONSchema(v.schemas.body!, { io: 'input', unrepresentable: 'any' }), where);
      routes.push(spec as RouteSpec);
      return { spec, parse: v.parse };
    },
    openApiDocument(info: OpenApiInfo): Json {
      const components: Record<string, Json> = { Problem: PROBLEM_SCHEMA };
      const convert = schemaConverter(components);
      const paths: Record<string, Record<string, Json>> = {};
      for (const r of routes) {
        const v = validated(r); // the same strict forms that parse requests
        const parameters: Json[] = [...parametersOf(r.params, 'path', convert), ...parametersOf(v.schemas.query, 'query', convert)];
        const idempotent = r.idempotent ?? false;
        if (idempotent) {
          parameters.push({
            name: 'Idempotency-Key', in: 'header', required: false,
            description: 'A retry with the same key within 24 h returns the first response and changes nothing',
            schema: { type: 'string', minLength: 1, maxLength: 255 },
          });
        }
        if (r.ifMatch) {
          parameters.push({ name: 'If-Match', in: 'header', required: false, description: 'The ETag last read; a mismatch answers 412', schema: { type: 'string' } });
        }
        const responses: Record<string, Json> = {};
        for (const [status, spec] of Object.entries(r.responses)) responses[status] = responseObject(Number(status), spec, convert);
        const auto = [400, ...(r.auth === true ? [401, 403] : []), ...(r.ifMatch ? [412] : []), ...(r.body ? [413, 415] : []),
          ...(idempotent ? [409, 422] : []), 429, 500];
        for (const status of auto) responses[String(status)] ??= responseObject(status, ERROR_DESCRIPTIONS[status]!, convert);
        const operation: Json = {
          operationId: r.operationId ?? operationIdOf(r.method, r.path),
          summary: r.summary,
          ...(r.description ? { description: r.description } : {}),
          tags: r.tags,
          ...(r.deprecated ? { deprecated: true } : {}),
          ...(parameters.length > 0 ? { parameters } : {}),
          ...(v.schemas.body
            ? { requestBody: { required: true, content: { [r.bodyContentType ?? 'application/json']: { schema: convert(v.schemas.body, 'input') } } } }
            : {}),
          responses,
          security: r.auth === true ? [{ bearerAuth: [] }] : r.auth === 'optional' ? [{ bearerAuth: [] }, {}] : [],
        };
        (paths[toOpenApiPath(r.path)] ??= {})[r.method] = operation;
      }
      const tags = [...new Set(routes.flatMap((r) => r.tags))].sort().map((name) => ({ name }));
      return {
        openapi: '3.1.0',
        info: { title: info.title, version: info.version, ...(info.description ? { description: info.description } : {}) },
        tags,
        paths,
        components: {
          schemas: components,
          securitySchemes: {
            bearerAuth: { type: 'http', scheme: 'bearer', description: 'A session JWT from login, or an API token (opl_…)' },
          },
        },
      };
    },
  };
  return registry;
};

export const openApiDocument = (registry: OpenApiRegistry, info: OpenApiInfo): Json => registry.openApiDocument(info);

// ---- binding routes: register + validate + mount in one declaration ----------------

export type RouteHandler<S extends RequestSchemas> = (input: Validated<S>, req: Request, res: Response) => unknown;
type BoundSpec<S extends RequestSchemas> = S & RouteMeta;
type Bind = <S extends RequestSchemas>(spec: BoundSpec<S>, handler: RouteHandler<S>) => RegisteredRoute<S>;

export type BindOptions = {
  /** Where the router is mounted (`/api/v1`): documented paths are prefix + the route's path. */
  prefix?: string;
  /** Put in front of POST handlers (and documented) unless a route says `idempotent: false`. */
  idempotency?: RequestHandler;
  /** Middleware before every handler of this router (e.g. authentication). */
  before?: RequestHandler[];
};

/**
 * `const r = bindRoutes(router, registry, {prefix: '/api/v1'}); r.post({path: '/jobs', …, body: CreateJob}, async ({body}, req, res) => …)`:
 * documents the route, mounts it on `router` and hands the handler its parsed, typed input.
 */
export const bindRoutes = (router: Router, registry: OpenApiRegistry, opts: BindOptions = {}): Record<HttpMethod, Bind> => {
  const bind = (method: HttpMethod): Bind => (spec, handler) => {
    const idempotent = method === 'post' && opts.idempotency !== undefined && spec.idempotent !== false;
    const full = { ...spec, method, path: `${opts.prefix ?? ''}${spec.path}`, idempotent } as RouteSpec<typeof spec & RequestSchemas>;
    const route = registry.registerRoute(full);
    const label: RequestHandler = (_req, res, next) => {
      setRouteLabel(res, full.path);
      next();
    };
    const run: RequestHandler = (req, res) => handler(route.parse(req) as never, req, res);
    router[method](spec.path, label, ...(opts.before ?? []), ...(spec.before ?? []), ...(idempotent ? [opts.idempotency!] : []), run);
    return route as never;
  };
  return { get: bind('get'), post: bind('post'), put: bind('put'), patch: bind('patch'), delete: bind('delete') };
};

// ---- /openapi.json and /docs ---------------------------------------------------------

const swaggerDir = (): string => dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const ASSETS = new Map([
  ['swagger-ui.css', 'text/css'],
  ['swagger-ui-bundle.js', 'text/javascript'],
  ['favicon-32x32.png', 'image/png'],
  ['favicon-16x16.png', 'image/png'],
]);

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** `GET /openapi.json` and `GET /docs` (Swagger UI from the swagger-ui-dist package, no CDN, no inline script). */
export const docsRouter = (registry: OpenApiRegistry, info: OpenApiInfo): Router => {
  const router = Router();
  const dir = swaggerDir();
  let cached: { count: number; json: string } | null = null;
  router.get('/openapi.json', (_req, res) => {
    // Routes are registered while the app is assembled; rebuild only if that list grew.
    if (cached?.count !== registry.routes.length) cached = { count: registry.routes.length, json: JSON.stringify(registry.openApiDocument(info)) };
    res.type('application/json').send(cached.json);
  });
  router.get('/docs', (req, res) => {
    const base = `${req.baseUrl}/docs`;
    res.type('html').send(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(info.title)} ${escapeHtml(info.version)} API</title>
<link rel="stylesheet" href="${base}/swagger-ui.css">
<link rel="icon" type="image/png" href="${base}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${base}/swagger-ui-bundle.js"></script>
<script src="${base}/init.js"></script>
</body>
</html>
`);
  });
  router.get('/docs/init.js', (req, res) => {
    const url = JSON.stringify(`${req.baseUrl}/openapi.json`);
    res.type('text/javascript').send(
      `window.onload = function () {\n  window.ui = SwaggerUIBundle({ url: ${url}, dom_id: '#swagger-ui', deepLinking: true, validatorUrl: null, presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout' });\n};\n`,
    );
  });
  const assetCache = new Map<string, Buffer>();
  router.get('/docs/:asset', (req, res, next) => {
    const name = req.params['asset']!;
    const type = ASSETS.get(name);
    if (!type) return next();
    let body = assetCache.get(name);
    if (!body) assetCache.set(name, (body = readFileSync(join(dir, name))));
    res.setHeader('Cache-Control', 'public, max-age=86400');
    res.type(type).send(body);
  });
  return router;
};
