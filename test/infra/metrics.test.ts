// infra/metrics.ts over real HTTP: request counters and durations labelled by route
// pattern, the append histogram, the projection gauges and GET /metrics.
import { randomUUID } from 'node:crypto';
import { expect } from 'chai';
import { Router } from 'express';
import { register as globalRegistry } from 'prom-client';
import { z } from 'zod';
import type { Database } from '../../infra/db/database.ts';
import { AppError } from '../../infra/errors.ts';
import { createPostgresEventStore } from '../../infra/eventStore/postgresEventStore.ts';
import { createHttpApp, finish } from '../../infra/http/createHttpApp.ts';
import { bindRoutes, createOpenApiRegistry } from '../../infra/http/openapi.ts';
import { createMetrics, withAppendMetrics, type Metrics, type ProjectionMetricsRow } from '../../infra/metrics.ts';
import { freshDatabase } from '../support/databases.ts';
import { newEvent } from '../support/eventFactory.ts';
import { call, listen, memoryLogger, type Listening } from './http/httpHarness.ts';

type Sample = { name: string; labels: Record<string, string>; value: number };

/** The samples of a Prometheus text exposition. */
const parseExposition = (text: string): Sample[] =>
  text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((line) => {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) throw new Error(`not a sample line: ${line}`);
      const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
      return { name: m[1]!, labels, value: Number(m[3]) };
    });

const find = (samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

describe('infra: metrics (prom-client)', () => {
  let metrics: Metrics;
  let server: Listening;
  let projections: ProjectionMetricsRow[] | Error = [];

  const scrape = async () => {
    const r = await call(`${server.url}/metrics`);
    expect(r.status).to.equal(200);
    return { ...r, samples: parseExposition(r.text) };
  };

  before(async () => {
    metrics = createMetrics({
      projections: async () => {
        if (projections instanceof Error) throw projections;
        return projections;
      },
    });
    const app = createHttpApp({ logger: memoryLogger().logger });
    app.use(metrics.httpMetricsMiddleware());
    const router = Router();
    const r = bindRoutes(router, createOpenApiRegistry(), { prefix: '/api/v1' });
    r.get({ path: '/things/:id', summary: 'A thing', tags: ['t'], auth: false, params: z.object({ id: z.string().regex(/^\d+$/) }), responses: { 200: 'ok' } },
      ({ params }, _req, res) => void res.json({ id: params.id }));
    r.get({ path: '/boom/:id', summary: 'Fails', tags: ['t'], auth: false, params: z.object({ id: z.string() }), responses: { 409: 'never' } },
      async ({ params }) => {
        if (params.id === 'conflict') throw new AppError('CONFLICT', 'taken');
        throw new Error('unexpected');
      });
    app.use('/api/v1', router);
    app.use(metrics.metricsRouter());
    finish(app);
    server = await listen(app);
  });

  after(() => server.close());

  it('counts requests by method, route pattern and status, never by raw URL', async () => {
    for (const id of ['1', '2', '3']) expect((await call(`${server.url}/api/v1/things/${id}`)).status).to.equal(200);
    expect((await call(`${server.url}/api/v1/things/not-a-number`)).status).to.equal(400);
    expect((await call(`${server.url}/api/v1/boom/conflict`)).status).to.equal(409);
    expect((await call(`${server.url}/api/v1/boom/x`)).status).to.equal(500);
    expect((await call(`${server.url}/api/v1/no/such/${randomUUID()}`)).status).to.equal(404);
    expect((await call(`${server.url}/api/v1/things/4`, { method: 'DELETE' })).status).to.equal(404);

    const { samples } = await scrape();
    const total = (labels: Record<string, string>) => find(samples, 'opsledger_http_requests_total', labels).map((s) => s.value);
    expect(total({ method: 'GET', route: '/api/v1/things/:id', status: '200' })).to.deep.equal([3]);
    expect(total({ method: 'GET', route: '/api/v1/things/:id', status: '400' })).to.deep.equal([1]);
    // Errors leave the router before they are answered: the pattern is kept all the same.
    expect(total({ method: 'GET', route: '/api/v1/boom/:id', status: '409' })).to.deep.equal([1]);
    expect(total({ method: 'GET', route: '/api/v1/boom/:id', status: '500' })).to.deep.equal([1]);
    expect(total({ method: 'GET', route: 'unmatched', status: '404' })).to.deep.equal([1]);
    expect(total({ method: 'DELETE', route: 'unmatched', status: '404' })).to.deep.equal([1]);
    const routes = new Set(find(samples, 'opsledger_http_requests_total').map((s) => s.labels['route']));
    for (const route of routes) expect(route).to.be.oneOf(['/api/v1/things/:id', '/api/v1/boom/:id', 'unmatched', '/metrics']);

    const count = find(samples, 'opsledger_http_request_duration_seconds_count', { method: 'GET', route: '/api/v1/things/:id', status: '200' });
    expect(count.map((s) => s.value)).to.deep.equal([3]);
    const inf = find(samples, 'opsledger_http_request_duration_seconds_bucket', { route: '/api/v1/things/:id', status: '200', le: '+Inf' });
    expect(inf.map((s) => s.value)).to.deep.equal([3]);
    expect(find(samples, 'opsledger_http_request_duration_seconds_sum', { route: '/api/v1/things/:id', status: '200' })[0]!.value).to.be.greaterThan(0);
  });

  it('serves the Prometheus text format with the registry’s content type, default metrics prefixed', async () => {
    const r = await scrape();
    expect(r.headers.get('content-type')).to.equal(metrics.registry.contentType);
    expect(r.headers.get('content-type')).to.match(/^text\/plain; version=0\.0\.4/);
    expect(r.text).to.include('# TYPE opsledger_http_requests_total counter');
    expect(r.text).to.include('# TYPE opsledger_http_request_duration_seconds histogram');
    expect(find(r.samples, 'opsledger_process_cpu_user_seconds_total')).to.have.length(1);
    expect(find(r.samples, 'opsledger_nodejs_heap_size_used_bytes')).to.have.length(1);
    // The scrape before this one was counted under its own pattern.
    expect(find(r.samples, 'opsledger_http_requests_total', { route: '/metrics', status: '200' })[0]!.value).to.be.greaterThan(0);
  });

  it('times appends: observeAppend, and a store wrapped by withAppendMetrics', async () => {
    metrics.observeAppend(0.0003);
    metrics.observeAppend(Number.NaN); // ignored
    let database: Database | null = null;
    try {
      database = await freshDatabase('pglite');
      const store = withAppendMetrics(await createPostgresEventStore(database), metrics);
      await store.append(`metrics-${randomUUID()}`, [newEvent()]);
      await store.append(`metrics-${randomUUID()}`, [newEvent()], { expectedRevision: 'stream_exists' }).catch(() => undefined);
      expect((await store.readAll()).events).to.have.length(1); // the rest of the port still works
      await store.close();
    } finally {
      await database?.close();
    }
    const { samples } = await scrape();
    expect(find(samples, 'opsledger_event_append_duration_seconds_count')[0]!.value).to.equal(3);
    expect(find(samples, 'opsledger_event_append_duration_seconds_bucket', { le: '0.0005' })[0]!.value).to.be.at.least(1);
  });

  it('exports projection lag and state from the source at each scrape', async () => {
    projections = [
      { name: 'stream_catalog', state: 'running', lag_events: 0 },
      { name: 'identity', state: 'rebuilding', lag_events: 1234 },
      { name: 'jobs', state: 'failed', lag_events: null },
    ];
    let { samples } = await scrape();
    expect(find(samples, 'opsledger_projection_lag_events').map((s) => [s.labels['projection'], s.value])).to.deep.equal([
      ['stream_catalog', 0], ['identity', 1234],
    ]);
    const stateOf = (ss: Sample[], projection: string) =>
      find(ss, 'opsledger_projection_state', { projection }).filter((s) => s.value === 1).map((s) => s.labels['state']);
    expect(stateOf(samples, 'identity')).to.deep.equal(['rebuilding']);
    expect(stateOf(samples, 'jobs')).to.deep.equal(['failed']);
    expect(find(samples, 'opsledger_projection_state', { projection: 'identity', state: 'running' })[0]!.value).to.equal(0);

    projections = [{ name: 'identity', state: 'running', lag_events: 3 }];
    ({ samples } = await scrape());
    expect(stateOf(samples, 'identity')).to.deep.equal(['running']);
    expect(find(samples, 'opsledger_projection_lag_events', { projection: 'identity' })[0]!.value).to.equal(3);
    expect(find(samples, 'opsledger_projection_lag_events', { projection: 'stream_catalog' })).to.deep.equal([]);

    projections = new Error('database down');
    ({ samples } = await scrape());
    expect(find(samples, 'opsledger_projection_lag_events')).to.deep.equal([]);
    expect(find(samples, 'opsledger_projection_state')).to.deep.equal([]);
  });

  it('each app has a registry of its own; the global one stays empty', async () => {
    const other = createMetrics({ defaultMetrics: false });
    other.observeAppend(1);
    const text = await other.registry.metrics();
    expect(text).to.include('opsledger_event_append_duration_seconds_count 1');
    expect(text).to.not.include('opsledger_http_requests_total{'); // no requests through this one
    expect(text).to.not.include('process_cpu');
    expect(globalRegistry.getMetricsAsArray()).to.deep.equal([]);
  });
});
