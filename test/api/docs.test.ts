// /openapi.json documents every identity and project route, and is a valid OpenAPI 3.1 document.
import SwaggerParser from '@apidevtools/swagger-parser';
import { expect } from 'chai';
import { startApi, type TestApi } from '../support/apiClient.ts';

describe('API documentation', function () {
  this.timeout(60_000);
  let api: TestApi;
  before(async () => {
    api = await startApi();
  });
  after(async () => api?.close());

  it('/openapi.json lists every identity and project operation and validates', async () => {
    const r = await api.anonymous.get('//openapi.json');
    expect(r.status).to.equal(200);
    const ops = Object.entries(r.body.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`));
    expect(ops).to.include.members([
      'POST /api/v1/auth/login', 'POST /api/v1/auth/refresh', 'POST /api/v1/auth/register', 'GET /api/v1/auth/me', 'PATCH /api/v1/auth/me',
      'POST /api/v1/auth/tokens', 'GET /api/v1/auth/tokens', 'DELETE /api/v1/auth/tokens/{id}',
      'GET /api/v1/users', 'POST /api/v1/users', 'GET /api/v1/users/{id}', 'PATCH /api/v1/users/{id}', 'DELETE /api/v1/users/{id}',
      'GET /api/v1/projects', 'POST /api/v1/projects', 'GET /api/v1/projects/{slug}', 'PATCH /api/v1/projects/{slug}', 'DELETE /api/v1/projects/{slug}',
      'GET /api/v1/projects/{slug}/members', 'PUT /api/v1/projects/{slug}/members/{user_id}', 'DELETE /api/v1/projects/{slug}/members/{user_id}',
    ]);
    const create = r.body.paths['/api/v1/projects'].post;
    expect(create.parameters.map((p: { name: string }) => p.name)).to.include('Idempotency-Key');
    expect(create.responses['201'].content['application/json'].schema).to.deep.equal({ $ref: '#/components/schemas/Project' });
    expect(r.body.paths['/api/v1/auth/login'].post.security).to.deep.equal([]);
    expect(r.body.components.schemas.ApiToken.properties).to.not.have.any.keys('token', 'token_hash');
    await SwaggerParser.validate(structuredClone(r.body));
    expect((await api.anonymous.get('//docs')).status).to.equal(200);
  });
});
