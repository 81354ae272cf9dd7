import { expect } from 'chai';
import express, { Router, type ErrorRequestHandler, type RequestHandler } from 'express';
import { chain, forPaths } from '../../../infra/http/chain.ts';
import { call, listen, type Listening } from './httpHarness.ts';

/** A handler that appends `name` to res.locals.order and goes on. */
const mark = (name: string): RequestHandler => (_req, res, next) => {
  ((res.locals['order'] ??= []) as string[]).push(name);
  next();
};

const orderOf = (locals: Record<string, unknown>): string[] => (locals['order'] as string[] | undefined) ?? [];

describe('HTTP kit: chain and forPaths', () => {
  let server: Listening;
  let url: string;
  // Names of chained handlers that ran although they should not have.
  const reachedAfterError: string[] = [];

  // The final error handler answers 500 with the error's message and the order so far.
  const errorHandler: ErrorRequestHandler = (err: unknown, _req, res, _next) => {
    res.setHeader('x-order', orderOf(res.locals).join(','));
    res.status(500).json({ error: err instanceof Error ? err.message : String(err) });
  };
  const recordReached = (name: string): RequestHandler => (_req, _res, next) => {
    reachedAfterError.push(name);
    next();
  };

  before(async () => {
    const app = express();

    app.use('/order', chain(mark('one'), mark('two'), mark('three')));
    app.get('/order', (_req, res) => {
      res.json({ order: orderOf(res.locals) });
    });

    app.use('/async-order', chain(
      mark('one'),
      async (_req, res, next) => {
        await new Promise<void>((resolve) => setImmediate(resolve));
        orderOf(res.locals).push('two (async)');
        next();
      },
      mark('three'),
    ));
    app.get('/async-order', (_req, res) => {
      res.json({ order: orderOf(res.locals) });
    });

    app.use('/next-err', chain(mark('one'), (_req, _res, next) => next(new Error('passed to next')), recordReached('next-err')));
    app.use('/thrown', chain(mark('one'), () => {
      throw new Error('thrown synchronously');
    }, recordReached('thrown')));
    app.use('/rejected', chain(mark('one'), async () => {
      await Promise.resolve();
      throw new Error('rejected asynchronously');
    }, recordReached('rejected')));
    app.use('/rejected-without-reason', chain(mark('one'), () => Promise.reject(undefined), recordReached('no-reason')));
    app.use('/answers', chain(mark('one'), (_req, res) => {
      res.json({ answered: 'by the chain', order: orderOf(res.locals) });
    }, recordReached('answers')));
    // Any of the error paths reaching the app route would be a bug.
    app.get(['/next-err', '/thrown', '/rejected', '/rejected-without-reason', '/answers'], (_req, res) => {
      res.status(200).json({ reached: 'the route' });
    });

    // forPaths: /docs and below are answered by the docs handler, everything else goes on.
    app.use('/fp', chain(
      forPaths(['/docs', '/openapi.json'], (req, res) => {
        res.json({ by: 'docs', path: req.path });
      }),
      forPaths(['/tagged'], (_req, res, next) => {
        res.setHeader('x-tagged', 'yes');
        next();
      }),
    ));
    // A router that serves one path: other paths below its base fall through it.
    const metrics = Router();
    metrics.get('/metrics', (_req, res) => {
      res.json({ by: 'metrics router' });
    });
    app.use(forPaths(['/metrics'], metrics));
    app.use((req, res) => {
      res.status(404).json({ by: 'next layer', path: req.path, tagged: res.getHeader('x-tagged') ?? null });
    });

    app.use(errorHandler);
    server = await listen(app);
    url = server.url;
  });

  after(() => server.close());

  describe('chain', () => {
    it('runs the handlers in order, then the request reaches the next route', async () => {
      const res = await call(`${url}/order`);
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ order: ['one', 'two', 'three'] });
    });

    it('keeps the order when a handler goes on asynchronously', async () => {
      const res = await call(`${url}/async-order`);
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ order: ['one', 'two (async)', 'three'] });
    });

    for (const [path, message] of [
      ['/next-err', 'passed to next'],
      ['/thrown', 'thrown synchronously'],
      ['/rejected', 'rejected asynchronously'],
      ['/rejected-without-reason', 'a middleware rejected without a reason'],
    ] as const) {
      it(`an error (${path.slice(1)}) reaches the express error handler, and later handlers do not run`, async () => {
        const res = await call(`${url}${path}`);
        expect(res.status).to.equal(500);
        expect(res.body).to.deep.equal({ error: message });
        expect(res.headers.get('x-order')).to.equal('one');
        expect(reachedAfterError).to.deep.equal([]);
      });
    }

    it('stops when a handler answers the request itself', async () => {
      const res = await call(`${url}/answers`);
      expect(res.status).to.equal(200);
      expect(res.body).to.deep.equal({ answered: 'by the chain', order: ['one'] });
      expect(reachedAfterError).to.deep.equal([]);
    });

    it('with no handlers, goes straight on', async () => {
      const app = express();
      app.use(chain());
      app.get('/x', (_req, res) => {
        res.send('reached');
      });
      const s = await listen(app);
      try {
        const res = await call(`${s.url}/x`);
        expect(res.status).to.equal(200);
        expect(res.text).to.equal('reached');
      } finally {
        await s.close();
      }
    });
  });

  describe('forPaths', () => {
    it('runs its handler for the exact path', async () => {
      const res = await call(`${url}/fp/docs`);
      expect(res.body).to.deep.equal({ by: 'docs', path: '/docs' });
      const spec = await call(`${url}/fp/openapi.json`);
      expect(spec.body).to.deep.equal({ by: 'docs', path: '/openapi.json' });
    });

    it('runs its handler for paths below it', async () => {
      for (const path of ['/docs/', '/docs/x', '/docs/x/y.css']) {
        const res = await call(`${url}/fp${path}?q=1`);
        expect(res.status, path).to.equal(200);
        expect(res.body, path).to.deep.equal({ by: 'docs', path });
      }
    });

    it('matches without regard to case, like express routes', async () => {
      for (const path of ['/Docs', '/DOCS/x', '/OpenAPI.json']) {
        const res = await call(`${url}/fp${path}`);
        expect(res.status, path).to.equal(200);
        expect(res.body, path).to.deep.equal({ by: 'docs', path });
      }
    });

    it('does not run its handler for paths that only share a prefix, or other paths', async () => {
      for (const path of ['/docsx', '/docs.json', '/doc', '/other', '/openapi.jsonx', '/x/docs']) {
        const res = await call(`${url}/fp${path}`);
        expect(res.status, path).to.equal(404);
        expect(res.body, path).to.deep.equal({ by: 'next layer', path: `/fp${path}`, tagged: null });
      }
    });

    it('lets its handler go on to the next layer', async () => {
      const res = await call(`${url}/fp/tagged/a`);
      expect(res.body).to.deep.equal({ by: 'next layer', path: '/fp/tagged/a', tagged: 'yes' });
      expect(res.headers.get('x-tagged')).to.equal('yes');
      const other = await call(`${url}/fp/taggedx`);
      expect(other.headers.get('x-tagged')).to.equal(null);
    });

    it('with a router as the handler: its route answers, and paths it does not serve go on', async () => {
      const served = await call(`${url}/metrics`);
      expect(served.status).to.equal(200);
      expect(served.body).to.deep.equal({ by: 'metrics router' });

      const below = await call(`${url}/metrics/unknown`);
      expect(below.status).to.equal(404);
      expect(below.body).to.deep.equal({ by: 'next layer', path: '/metrics/unknown', tagged: null });
    });
  });
});
