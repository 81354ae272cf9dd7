// Prometheus metrics (SPEC §11 GET /metrics) with prom-client. Each app gets a Registry
// of its own, never prom-client's global one, so that two apps in one process (tests,
// the CLI next to a server) do not share or double-register series.
import type { Request, RequestHandler, Response } from 'express';
import { Router } from 'express';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EventStore } from './eventStore/eventStore.ts';

/** What the projection gauges need of a projection; `lag_events` null (unknown) leaves its lag out. */
export type ProjectionMetricsRow = { name: string; state: string; lag_events?: number | null };
export type ProjectionMetricsSource = () => readonly ProjectionMetricsRow[] | Promise<readonly ProjectionMetricsRow[]>;

export type MetricsOptions = {
  /** Node/process metrics (CPU, memory, event loop, GC) prefixed `opsledger_`; default true. */
  defaultMetrics?: boolean;
  /** Feeds opsledger_projection_* at each scrape (e.g. the runtime's status() with lags). */
  projections?: ProjectionMetricsSource;
  /** States always exported per projection (0 unless current), so that a state change is a value change. */
  projectionStates?: readonly string[];
};

export type Metrics = {
  readonly registry: Registry;
  /** Counts and times every request by method, route pattern and status. Mount it first. */
  httpMetricsMiddleware(): RequestHandler;
  /** Records one event-store append that took `seconds`. */
  observeAppend(seconds: number): void;
  /** Sets (or replaces) where the projection gauges come from. */
  trackProjections(source: ProjectionMetricsSource): void;
  /** `GET /metrics` in the Prometheus text format. */
  metricsRouter(): Router;
};

export const PREFIX = 'opsledger_';
const DEFAULT_PROJECTION_STATES = ['starting', 'running', 'standby', 'rebuilding', 'failed', 'stopped'];
// Seconds; an API answers in milliseconds, a command waiting for its projections in up to seconds.
const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const APPEND_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export const UNMATCHED = 'unmatched';
// Route patterns are few, but statuses times methods times patterns is not bounded by us.
const MAX_KEPT_SERIES = 2000;

const ROUTE_LABEL = 'metricsRoute';

/**
 * Names the route pattern of a request for the metrics (bindRoutes does it for every API
 * route). It must be set while the route runs: an error leaves the router, which unwinds
 * req.baseUrl, before it is answered.
 */
export const setRouteLabel = (res: Response, pattern: string): void => {
  res.locals[ROUTE_LABEL] = pattern;
};

const patternOf = (path: unknown): string =>
  typeof path === 'string' ? path : Array.isArray(path) ? path.map(patternOf).join('|') : path instanceof RegExp ? path.source : UNMATCHED;

/**
 * The label of a finished request: the pattern set by setRouteLabel, else that of the
 * route that answered (right for routes outside the API router, which mounts nothing
 * under a prefix), else 'unmatched' (404s, static files, …).
 */
export const routeLabel = (req: Request, res: Response): string => {
  const set = res.locals[ROUTE_LABEL] as string | undefined;
  if (set !== undefined) return set;
  const route = (req as { route?: { path?: unknown } }).route;
  return route ? `${req.baseUrl ?? ''}${patternOf(route.path)}` || '/' : UNMATCHED;
};

export const createMetrics = (opts: MetricsOptions = {}): Metrics => {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: PREFIX });

  const requests = new Counter({
    name: `${PREFIX}http_requests_total`,
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const durations = new Histogram({
    name: `${PREFIX}http_request_duration_seconds`,
    help: 'Time from receiving a request to finishing its response, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: HTTP_BUCKETS,
    registers: [registry],
  });
  const appends = new Histogram({
    name: `${PREFIX}event_append_duration_seconds`,
    help: 'Time of one append to the event store',
    buckets: APPEND_BUCKETS,
    registers: [registry],
  });

  let source: ProjectionMetricsSource | null = opts.projections ?? null;
  const states = opts.projectionStates ?? DEFAULT_PROJECTION_STATES;
  // Both gauges are filled from one call of the source per scrape: the registry collects
  // its metrics concurrently, so the second collect waits on the first one's call.
  let inflight: Promise<void> | null = null;
  const refresh = (): Promise<void> =>
    (inflight ??= (async () => {
      try {
        const rows = source ? await source() : [];
        lag.reset();
        state.reset();
        for (const row of rows) {
          if (typeof row.lag_events === 'number') lag.set({ projection: row.name }, row.lag_events);
          for (const s of new Set([...states, row.state])) state.set({ projection: row.name, state: s }, s === row.state ? 1 : 0);
        }
      } catch {
        // No figures rather than stale ones; the scrape itself still succeeds.
        lag.reset();
        state.reset();
      } finally {
        inflight = null;
      }
    })());
  const lag: Gauge<'projection'> = new Gauge({
    name: `${PREFIX}projection_lag_events`,
    help: 'Events in the log after the projection’s checkpoint (counted up to a cap)',
    labelNames: ['projection'] as const,
    registers: [registry],
    collect: refresh,
  });
  const state: Gauge<'projection' | 'state'> = new Gauge({
    name: `${PREFIX}projection_state`,
    help: '1 for the state each projection is in, 0 for the others',
    labelNames: ['projection', 'state'] as const,
    registers: [registry],
    collect: refresh,
  });

  const seriesByKey = new Map<string, { count: { inc(): void }; duration: { observe(v: number): void } }>();
  return {
    registry,
    httpMetricsMiddleware(): RequestHandler {
      return (req, res: Response, next) => {
        const started = performance.now();
        // 'close' comes once per response: after it was sent, or when the client went away first.
        res.once('close', () => {
          const seconds = (performance.now() - started) / 1000;
          const route = routeLabel(req, res);
          // prom-client hashes a label object on every call; the pair of series of a
          // method/route/status is looked up once and kept.
          const key = `${req.method} ${res.statusCode} ${route}`;
          let series = seriesByKey.get(key);
          if (!series) {
            const labels = { method: req.method, route, status: String(res.statusCode) };
            series = { count: requests.labels(labels), duration: durations.labels(labels) };
            if (seriesByKey.size < MAX_KEPT_SERIES) seriesByKey.set(key, series);
          }
          series.count.inc();
          series.duration.observe(seconds);
        });
        next();
      };
    },
    observeAppend(seconds: number) {
      if (Number.isFinite(seconds) && seconds >= 0) appends.observe(seconds);
    },
    trackProjections(s: ProjectionMetricsSource) {
      source = s;
    },
    metricsRouter(): Router {
      const router = Router();
      router.get('/metrics', async (_req, res) => {
        const body = await registry.metrics();
        res.setHeader('Content-Type', registry.contentType);
        res.setHeader('Cache-Control', 'no-store');
        res.send(body);
      });
      return router;
    },
  };
};

/** The same store, its appends timed into `metrics` (successful or not; a group commit counts once). */
export const withAppendMetrics = (store: EventStore, metrics: Pick<Metrics, 'observeAppend'>): EventStore => {
  const timed = <A extends unknown[], R>(write: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
    const started = process.hrtime.bigint();
    try {
      return await write(...args);
    } finally {
      metrics.observeAppend(Number(process.hrtime.bigint() - started) / 1e9);
    }
  };
  return Object.create(store, {
    append: { value: timed(store.append.bind(store)) },
    appendMany: { value: timed(store.appendMany.bind(store)) },
  }) as EventStore;
};
