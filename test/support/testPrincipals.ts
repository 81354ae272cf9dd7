// Stand-ins for authentication in read-api tests: principals built in the test, and an
// app that puts the one named by X-Test-User into res.locals.principal (all a read route reads).
import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import type { Principal } from '../../infra/auth/principal.ts';
import { createHttpApp, finish } from '../../infra/http/createHttpApp.ts';
import { bindRoutes, createOpenApiRegistry } from '../../infra/http/openapi.ts';
import { memoryLogger } from '../infra/http/httpHarness.ts';

export const principal = (p: Partial<Principal> & Pick<Principal, 'username'>): Principal => ({
  userId: randomUUID(), role: 'user', memberships: {}, tokenId: null, scopes: null, projectPin: null, ...p,
});

/** An app with `install`'s routes under /api/v1, authenticated by X-Test-User ∈ `principals`. */
export const appWithTestPrincipals = (
  principals: Readonly<Record<string, Principal>>,
  install: (routes: ReturnType<typeof bindRoutes>) => void,
) => {
  const app = createHttpApp({ logger: memoryLogger().logger });
  app.use((req, res, next) => {
    const who = req.headers['x-test-user'];
    res.locals['principal'] = typeof who === 'string' ? (principals[who] ?? null) : null;
    next();
  });
  const router = Router();
  install(bindRoutes(router, createOpenApiRegistry(), { prefix: '/api/v1' }));
  app.use('/api/v1', router);
  return finish(app);
};
