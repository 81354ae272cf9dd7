import SwaggerParser from '@apidevtools/swagger-parser';
import { expect } from 'chai';
import { Router } from 'express';
import { z } from 'zod';
import { createHttpApp, finish } from '../../../infra/http/createHttpApp.ts';
import { bindRoutes, createOpenApiRegistry, docsRouter, openApiDocument, type OpenApiRegistry } from '../../../infra/http/openapi.ts';
import { Pagination, PageOf, Slug, Uuid, page } from '../../../infra/http/validate.ts';
import { call, listen, memoryLogger, type Listening } from './httpHarness.ts';

// Schemas a module would declare; `id` names them in components.schemas.
const JobView = z.strictObject({ id: Uuid, name: Slug, command: z.string(), created_at: z.iso.datetime() }).meta({ id: 'KitTestJob', description: 'A job' });
const CreateJob = z.strictObject({ name: Slug, command: z.string().min(1).meta({ description: 'shell command' }), hosts: z.array(Uuid).min(1) });

describe('HTTP kit: OpenAPI registry and docs', () => {
  let server: Listening;
  let registry: OpenApiRegistry;
  const created: unknown[] = [];

  before(async () => {
    registry = createOpenApiRegistry();
    const app = createHttpApp({ logger: memoryLogger().logger });
    const router = Router();
    const r = bindRoutes(router, registry, { prefix: '/api/v1' });
    r.get(
      { path: '/projects/:project/jobs', summary: 'List jobs', tags: ['jobs'], auth: true,
        params: z.object({ project: Slug }), query: Pagination.extend({ status: z.enum(['active', 'cancelled']).optional() }),
        responses: { 200: PageOf(JobView) } },
      ({ params, query }, _req, res) => {
        // typed: params.project is a string, query.limit a number
        const limit: number = query.limit;
        res.json(page([{ project: params.project }], 1, { limit, offset: query.offset }));
      },
    );
    r.post(
      { path: '/projects/:project/jobs', summary: 'Create a job', tags: ['jobs'], auth: true,
        params: z.object({ project: Slug }), body: CreateJob,
        responses: { 201: { body: JobView, headers: { Location: 'the new job', 'X-Event-Position': 'event position' } }, 404: 'no such project' } },
      ({ body }, _req, res) => {
        created.push(body);
        res.status(201).json({ id: '6f9619ff-8b86-4011-b42d-00c04fc964ff', name: body.name, command: body.command, created_at: new Date().toISOString() });
      },
    );
    r.delete(
      { path: '/projects/:project/jobs/:id', summary: 'Delete a job', tags: ['jobs'], auth: true, ifMatch: true,
        params: z.object({ project: Slug, id: Uuid }), responses: { 204: 'deleted' } },
      (_input, _req, res) => {
        res.status(204).end();
      },
    );
    app.use('/api/v1', router);
    app.use(docsRouter(registry, { title: 'Opsledger', version: '0.1.0' }));
    finish(app);
    server = await listen(app);
  });

  after(() => server.close());

  it('/openapi.json is a valid OpenAPI 3.1.0 document', async () => {
    const r = await call(`${server.url}/openapi.json`);
    expect(r.status).to.equal(200);
    expect(r.headers.get('content-type')).to.match(/^application\/json/);
    expect(r.body.openapi).to.equal('3.1.0');
    expect(r.body.info).to.deep.equal({ title: 'Opsledger', version: '0.1.0' });
    await SwaggerParser.validate(structuredClone(r.body));
  });

  it('has every route under its OpenAPI path, with parameters and bearer auth', async () => {
    const doc = (await call(`${server.url}/openapi.json`)).body;
    expect(Object.keys(doc.paths).sort()).to.deep.equal(['/api/v1/projects/{project}/jobs', '/api/v1/projects/{project}/jobs/{id}']);
    const list = doc.paths['/api/v1/projects/{project}/jobs'].get;
    expect(list.operationId).to.equal('getProjectsByProjectJobs');
    expect(list.security).to.deep.equal([{ bearerAuth: [] }]);
    expect(list.parameters.map((p: { name: string; in: string; required: boolean }) => `${p.in}:${p.name}:${p.required}`)).to.deep.equal([
      'path:project:true', 'query:limit:false', 'query:offset:false', 'query:status:false',
    ]);
    expect(doc.components.securitySchemes.bearerAuth).to.include({ type: 'http', scheme: 'bearer' });
    const del = doc.paths['/api/v1/projects/{project}/jobs/{id}'].delete;
    expect(Object.keys(del.responses)).to.include.members(['204', '401', '403', '412', '429', '500']);
    expect(del.parameters.map((p: { name: string }) => p.name)).to.include('If-Match');
  });

  it('takes its schemas from the zod schemas that validate, named ones as components', async () => {
    const doc = (await call(`${server.url}/openapi.json`)).body;
    const create = doc.paths['/api/v1/projects/{project}/jobs'].post;
    const body = create.requestBody.content['application/json'].schema;
    expect(body.additionalProperties).to.equal(false);
    expect(body.required).to.deep.equal(['name', 'command', 'hosts']);
    expect(body.properties.name.pattern).to.equal('^[a-z0-9][a-z0-9-]{0,62}$');
    expect(body.properties.command.description).to.equal('shell command');
    expect(create.responses['201'].content['application/json'].schema).to.deep.equal({ $ref: '#/components/schemas/KitTestJob' });
    expect(create.responses['201'].headers).to.have.keys('Location', 'X-Event-Position');
    expect(doc.components.schemas.KitTestJob).to.include({ type: 'object', description: 'A job', additionalProperties: false });
    expect(create.responses['404']).to.deep.equal({
      description: 'no such project',
      content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
    });
    expect(doc.components.schemas.Problem.required).to.deep.equal(['type', 'title', 'status', 'detail', 'code', 'request_id']);
    const list = doc.paths['/api/v1/projects/{project}/jobs'].get;
    const itemsSchema = list.responses['200'].content['application/json'].schema;
    expect(itemsSchema.properties.items.items).to.deep.equal({ $ref: '#/components/schemas/KitTestJob' });
    expect(list.parameters.find((p: { name: string }) => p.name === 'limit').schema).to.include({ type: 'integer', minimum: 1, maximum: 500, default: 50 });
  });

  it('the bound handler gets parsed input, and the same schema rejects what the document forbids', async () => {
    const ok = await call(`${server.url}/api/v1/projects/web/jobs`, { method: 'POST', json: { name: 'backup', command: 'tar c /', hosts: ['6f9619ff-8b86-4011-b42d-00c04fc964ff'] } });
    expect(ok.status).to.equal(201);
    expect(created).to.have.length(1);
    const bad = await call(`${server.url}/api/v1/projects/web/jobs`, { method: 'POST', json: { name: 'backup', command: 'x', hosts: [], sudo: true } });
    expect(bad.status).to.equal(400);
    expect(bad.body.errors.map((e: { path: string }) => e.path)).to.deep.equal(['body.hosts', 'body.sudo']);
    const list = await call(`${server.url}/api/v1/projects/web/jobs?limit=3`);
    expect(list.body).to.deep.equal({ items: [{ project: 'web' }], total: 1, limit: 3, offset: 0 });
  });

  it('/docs is the Swagger UI page, served locally with no inline script', async () => {
    const r = await call(`${server.url}/docs`);
    expect(r.status).to.equal(200);
    expect(r.headers.get('content-type')).to.match(/^text\/html/);
    expect(r.text).to.contain('<div id="swagger-ui">').and.contain('/docs/swagger-ui-bundle.js');
    expect(r.text).to.not.match(/https?:\/\//);
    expect(r.text).to.not.match(/<script>/);
    const init = await call(`${server.url}/docs/init.js`);
    expect(init.text).to.contain('"/openapi.json"');
    const bundle = await fetch(`${server.url}/docs/swagger-ui-bundle.js`);
    expect(bundle.status).to.equal(200);
    expect(bundle.headers.get('content-type')).to.match(/javascript/);
    expect((await bundle.text()).length).to.be.greaterThan(100_000);
    const css = await fetch(`${server.url}/docs/swagger-ui.css`);
    expect(css.status).to.equal(200);
    await css.arrayBuffer();
    expect((await call(`${server.url}/docs/package.json`)).status).to.equal(404);
  });

  describe('registration refuses routes that would drift', () => {
    const base = { method: 'get' as const, summary: 's', tags: ['t'], auth: false, responses: { 200: 'ok' } };

    it('path parameters must match the params schema', () => {
      const reg = createOpenApiRegistry();
      expect(() => reg.registerRoute({ ...base, path: '/a/:id' })).to.throw(/params schema declares \[\] but the path has \[id\]/);
      expect(() => reg.registerRoute({ ...base, path: '/a/:id', params: z.object({ slug: Slug }) })).to.throw(/\[slug\].*\[id\]/);
    });

    it('a body with a nested non-strict object is refused', () => {
      const reg = createOpenApiRegistry();
      expect(() => reg.registerRoute({ ...base, method: 'post', path: '/a', body: z.object({ spec: z.object({ a: z.string() }) }) })).to.throw(
        /body\.spec is not strict/,
      );
      // The top level is made strict automatically, and records or explicitly loose objects are allowed.
      reg.registerRoute({ ...base, method: 'post', path: '/b', body: z.object({ labels: z.record(z.string(), z.string()), extra: z.looseObject({}) }) });
    });

    it('the same method and path twice is refused', () => {
      const reg = createOpenApiRegistry();
      reg.registerRoute({ ...base, path: '/a' });
      expect(() => reg.registerRoute({ ...base, path: '/a' })).to.throw(/twice/);
    });

    it('an empty registry still makes a valid document', async () => {
      const doc = openApiDocument(createOpenApiRegistry(), { title: 'x', version: '1' });
      expect(doc['paths']).to.deep.equal({});
      await SwaggerParser.validate(structuredClone(doc) as never);
    });

    it('input and output forms of one named schema get distinct names', async () => {
      const reg = createOpenApiRegistry();
      const Settings = z.strictObject({ retries: z.number().int().default(3) }).meta({ id: 'KitTestSettings' });
      reg.registerRoute({ ...base, method: 'put', path: '/settings', body: Settings, responses: { 200: Settings } });
      const doc = openApiDocument(reg, { title: 'x', version: '1' }) as { components: { schemas: Record<string, { required?: string[] }> } };
      expect(doc.components.schemas['KitTestSettings']).to.exist;
      expect(doc.components.schemas['KitTestSettingsInput']).to.exist;
      const names = ['KitTestSettings', 'KitTestSettingsInput'].map((n) => doc.components.schemas[n]!.required ?? []);
      expect(names).to.deep.include.members([['retries'], []]);
      await SwaggerParser.validate(structuredClone(doc) as never);
    });
  });
});
