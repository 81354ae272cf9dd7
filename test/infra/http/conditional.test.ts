import { expect } from 'chai';
import type { Request } from 'express';
import { AppError, ConcurrencyError } from '../../../infra/errors.ts';
import { etagOf, expectedRevisionFromIfMatch, mapConflict, setEtag, withIfMatch } from '../../../infra/http/conditional.ts';
import { createHttpApp, finish } from '../../../infra/http/createHttpApp.ts';
import { call, listen, memoryLogger, type Listening } from './httpHarness.ts';

const withHeader = (ifMatch?: string) => ({ headers: ifMatch === undefined ? {} : { 'if-match': ifMatch } }) as unknown as Request;

const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return (err as AppError).code;
  }
  return 'no error';
};

describe('HTTP kit: ETag and If-Match', () => {
  it('etagOf is the revision in quotes, strong by default', () => {
    expect(etagOf(0n)).to.equal('"0"');
    expect(etagOf(42n)).to.equal('"42"');
    expect(etagOf(42n, { weak: true })).to.equal('W/"42"');
  });

  it('If-Match gives the expected revision; absent or * gives none', () => {
    expect(expectedRevisionFromIfMatch(withHeader())).to.equal(undefined);
    expect(expectedRevisionFromIfMatch(withHeader('*'))).to.equal(undefined);
    expect(expectedRevisionFromIfMatch(withHeader('"7"'))).to.equal(7n);
    expect(expectedRevisionFromIfMatch(withHeader(' "0" '))).to.equal(0n);
    expect(expectedRevisionFromIfMatch(withHeader('W/"12"'))).to.equal(12n);
    expect(expectedRevisionFromIfMatch(withHeader('"9223372036854775807"'))).to.equal(9223372036854775807n);
  });

  it('a malformed If-Match is 412 PRECONDITION_FAILED', () => {
    for (const bad of ['7', '"x"', '"-1"', '"07"', '"1", "2"', '"1.5"', '', 'W/7', '"12345678901234567890"']) {
      expect(codeOf(() => expectedRevisionFromIfMatch(withHeader(bad))), bad).to.equal('PRECONDITION_FAILED');
    }
  });

  it('mapConflict turns a CONFLICT into 412 only when the request had If-Match', () => {
    const conflict = new ConcurrencyError('job-1', '3', 4n);
    expect((mapConflict(conflict, true) as AppError).code).to.equal('PRECONDITION_FAILED');
    expect(mapConflict(conflict, false)).to.equal(conflict);
    const other = new AppError('NOT_FOUND', 'gone');
    expect(mapConflict(other, true)).to.equal(other);
  });

  describe('over HTTP', () => {
    let server: Listening;
    let revision = 3n;

    before(async () => {
      const app = createHttpApp({ logger: memoryLogger().logger });
      app.get('/thing', (_req, res) => {
        setEtag(res, revision);
        res.json({ revision: revision.toString() });
      });
      // A command the way routes write them: If-Match → expected revision, conflict → 412.
      app.put('/thing', async (req, res) => {
        const next = await withIfMatch(req, async (expected) => {
          if (expected !== undefined && expected !== revision) throw new ConcurrencyError('thing-1', String(expected), revision);
          return ++revision;
        });
        setEtag(res, next);
        res.json({ revision: next.toString() });
      });
      finish(app);
      server = await listen(app);
    });

    after(() => server.close());

    it('GET sends the revision as ETag; PUT with that ETag succeeds and a stale one is 412', async () => {
      const read = await call(`${server.url}/thing`);
      const etag = read.headers.get('etag')!;
      expect(etag).to.equal('"3"');
      const write = await call(`${server.url}/thing`, { method: 'PUT', headers: { 'if-match': etag }, json: {} });
      expect(write.status).to.equal(200);
      expect(write.headers.get('etag')).to.equal('"4"');
      const stale = await call(`${server.url}/thing`, { method: 'PUT', headers: { 'if-match': etag }, json: {} });
      expect(stale.status).to.equal(412);
      expect(stale.body).to.include({ code: 'PRECONDITION_FAILED', status: 412 });
    });

    it('a malformed If-Match is a 412 problem', async () => {
      const r = await call(`${server.url}/thing`, { method: 'PUT', headers: { 'if-match': 'nonsense' }, json: {} });
      expect(r.status).to.equal(412);
      expect(r.body.code).to.equal('PRECONDITION_FAILED');
    });

    it('without If-Match the write is unconditional', async () => {
      const r = await call(`${server.url}/thing`, { method: 'PUT', json: {} });
      expect(r.status).to.equal(200);
    });
  });
});
