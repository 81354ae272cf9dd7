import { expect } from 'chai';
import express, { type Express } from 'express';
import type { Logger } from 'pino';
import { accessLog, redactUrl } from '../../../infra/http/accessLog.ts';
import { waitFor } from '../../support/waitFor.ts';
import { listen, memoryLogger, type Listening, type LogLine } from './httpHarness.ts';

type Line = LogLine & {
  request_id?: string;
  user_id?: unknown;
  req?: { method: string; url: string; remote_address?: string; headers: Record<string, unknown> };
  res?: { status_code: number };
  response_time_ms?: number;
};

/**
 * An app with the access log behind a middleware that sets the request id (from the
 * `x-test-id` header). `closed` gets a request's id once its response closed: that listener
 * is registered after the access log's, so by then the access log has written its line or
 * decided not to, and a test can assert that a line is absent without sleeping.
 */
const makeApp = (logger: Logger) => {
  const closed = new Set<string>();
  const waiting = new Set<string>();
  const app: Express = express();
  app.use((req, res, next) => {
    res.locals.requestId = String(req.headers['x-test-id']);
    next();
  });
  app.use(accessLog({ logger, quietPaths: ['/health'] }));
  app.use((req, res, next) => {
    const id = String(req.headers['x-test-id']);
    res.once('close', () => closed.add(id));
    next();
  });
  app.use('/as/:user', (req, res, next) => {
    res.locals['principal'] = { userId: req.params['user'] };
    next();
  });
  app.all(['/ok', '/as/:user'], (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/fail', (_req, res) => {
    res.status(500).json({ ok: false });
  });
  app.all('/health', (req, res) => {
    res.status(req.query['fail'] ? 500 : 200).json({ healthy: !req.query['fail'] });
  });
  // Never answers: the client is expected to go away. Waits until the connection closes.
  app.get('/hang', (req, res) => {
    waiting.add(String(req.headers['x-test-id']));
    res.once('close', () => waiting.delete(String(req.headers['x-test-id'])));
  });
  app.use((_req, res) => {
    res.status(404).json({ found: false });
  });
  return { app, closed, waiting };
};

describe('HTTP kit: access log', () => {
  let server: Listening;
  let log: ReturnType<typeof memoryLogger>;
  let closed: Set<string>;
  let waiting: Set<string>;
  let n = 0;
  const nextId = (what: string) => `${what}-${++n}`;

  const lineOf = (id: string): Line | undefined => (log.lines as Line[]).find((l) => l.request_id === id);
  const linesOf = (id: string): Line[] => (log.lines as Line[]).filter((l) => l.request_id === id);

  /** Sends a request with a fresh id; resolves once its response closed on the server. */
  const send = async (path: string, init: RequestInit = {}): Promise<{ id: string; status: number }> => {
    const id = nextId(path.replace(/\W+/g, ''));
    const headers = new Headers(init.headers);
    headers.set('x-test-id', id);
    const res = await fetch(`${server.url}${path}`, { ...init, headers });
    await res.arrayBuffer();
    await waitFor(() => closed.has(id), `the response to ${id} to close`);
    return { id, status: res.status };
  };

  before(async () => {
    log = memoryLogger();
    const made = makeApp(log.logger);
    closed = made.closed;
    waiting = made.waiting;
    server = await listen(made.app);
  });

  after(() => server.close());

  it('writes one info line per request, with the request id, method, status and time taken', async () => {
    const { id, status } = await send('/ok');
    expect(status).to.equal(200);
    const lines = linesOf(id);
    expect(lines).to.have.length(1);
    const line = lines[0]!;
    expect(line.msg).to.equal('GET 200');
    expect(line.level).to.equal(30);
    expect(line.res).to.deep.equal({ status_code: 200 });
    expect(line.req).to.include({ method: 'GET', url: '/ok', remote_address: '127.0.0.1' });
    expect(line.response_time_ms).to.be.a('number').and.at.least(0);
    expect(line).not.to.have.property('user_id');
  });

  it('writes a line for every request, each with its own id', async () => {
    const a = await send('/ok');
    const b = await send('/ok', { method: 'POST' });
    expect(linesOf(a.id)).to.have.length(1);
    expect(linesOf(b.id)).to.have.length(1);
    expect(lineOf(b.id)!.msg).to.equal('POST 200');
  });

  it('includes the user id when the request has a principal', async () => {
    const { id } = await send('/as/u-42');
    expect(lineOf(id)).to.include({ user_id: 'u-42', msg: 'GET 200' });
  });

  it('replaces secret headers and secret query parameters', async () => {
    const { id } = await send('/ok?token=query-secret&page=2', {
      headers: {
        authorization: 'Bearer header-secret',
        cookie: 'sid=cookie-secret',
        'x-api-key': 'key-secret',
        'proxy-authorization': 'Basic proxy-secret',
        'x-visible': 'shown',
      },
    });
    const line = lineOf(id)!;
    expect(line.req!.headers).to.include({
      authorization: '[Redacted]',
      cookie: '[Redacted]',
      'x-api-key': '[Redacted]',
      'proxy-authorization': '[Redacted]',
      'x-visible': 'shown',
    });
    expect(line.req!.url).to.equal('/ok?token=[Redacted]&page=2');
    const text = JSON.stringify(line);
    for (const secret of ['header-secret', 'cookie-secret', 'key-secret', 'proxy-secret', 'query-secret']) {
      expect(text, secret).not.to.include(secret);
    }
  });

  it('logs a 4xx at info and a 5xx at error', async () => {
    const missing = await send('/nowhere');
    expect(missing.status).to.equal(404);
    expect(lineOf(missing.id)).to.include({ level: 30, msg: 'GET 404' });

    const failed = await send('/fail');
    expect(failed.status).to.equal(500);
    expect(lineOf(failed.id)).to.include({ level: 50, msg: 'GET 500' });
    expect(lineOf(failed.id)!.res).to.deep.equal({ status_code: 500 });
  });

  it('does not log a GET to a quiet path that succeeds, but does when it answers 500', async () => {
    const quiet = await send('/health');
    expect(quiet.status).to.equal(200);
    expect(linesOf(quiet.id)).to.deep.equal([]);

    const quietWithQuery = await send('/health?probe=1');
    expect(linesOf(quietWithQuery.id)).to.deep.equal([]);

    const failing = await send('/health?fail=1');
    expect(failing.status).to.equal(500);
    expect(lineOf(failing.id)).to.include({ level: 50, msg: 'GET 500' });
  });

  it('logs other methods to a quiet path', async () => {
    const { id } = await send('/health', { method: 'POST' });
    expect(lineOf(id)).to.include({ level: 30, msg: 'POST 200' });
  });

  it('logs a request whose client went away first with status 499', async () => {
    const id = nextId('hang');
    const controller = new AbortController();
    const pending = fetch(`${server.url}/hang`, { headers: { 'x-test-id': id }, signal: controller.signal });
    // Only abort once the server is waiting on the request.
    await waitFor(() => waiting.has(id), 'the server to receive the request');
    controller.abort();
    let caught: unknown;
    try {
      await pending;
    } catch (e) {
      caught = e;
    }
    expect(caught, 'the fetch should have been aborted').to.be.instanceOf(Error).with.property('name', 'AbortError');

    const line = await waitFor(() => lineOf(id), 'the access-log line of the aborted request');
    expect(line.res).to.deep.equal({ status_code: 499 });
    expect(line.msg).to.include('aborted');
    expect(line.level).to.equal(30);
    expect(line.response_time_ms).to.be.a('number').and.at.least(0);
    await waitFor(() => !waiting.has(id), 'the server to see the connection close');
    expect(linesOf(id)).to.have.length(1);
  });

  describe('at log level warn', () => {
    let quietServer: Listening;
    let warnLog: ReturnType<typeof memoryLogger>;
    let warnClosed: Set<string>;

    before(async () => {
      warnLog = memoryLogger();
      warnLog.logger.level = 'warn';
      const made = makeApp(warnLog.logger);
      warnClosed = made.closed;
      quietServer = await listen(made.app);
    });

    after(() => quietServer.close());

    const sendQuiet = async (path: string, id: string) => {
      const res = await fetch(`${quietServer.url}${path}`, { headers: { 'x-test-id': id } });
      await res.arrayBuffer();
      await waitFor(() => warnClosed.has(id), `the response to ${id} to close`);
      return res.status;
    };

    it('writes nothing for a 200, but still logs a 5xx', async () => {
      expect(await sendQuiet('/ok', 'warn-ok')).to.equal(200);
      expect(await sendQuiet('/nowhere', 'warn-404')).to.equal(404);
      expect(warnLog.lines).to.deep.equal([]);

      expect(await sendQuiet('/fail', 'warn-fail')).to.equal(500);
      expect(warnLog.lines).to.have.length(1);
      expect(warnLog.lines[0]).to.include({ level: 50, msg: 'GET 500', request_id: 'warn-fail' });
    });
  });

  describe('redactUrl', () => {
    it('leaves URLs without secret parameters as they are', () => {
      expect(redactUrl('/a')).to.equal('/a');
      expect(redactUrl('/a?b=1&c=2')).to.equal('/a?b=1&c=2');
    });

    it('replaces the values of secret parameters, whatever their case or encoding', () => {
      expect(redactUrl('/a?Password=p&x=1')).to.equal('/a?Password=[Redacted]&x=1');
      expect(redactUrl('/a?api%5Fkey=k')).to.equal('/a?api%5Fkey=[Redacted]');
      expect(redactUrl('/a?access_token=t&access_token=u')).to.equal('/a?access_token=[Redacted]&access_token=[Redacted]');
    });

    it('keeps malformed percent-encoding as sent', () => {
      expect(redactUrl('/a?%=%&token=t')).to.equal('/a?%=%&token=[Redacted]');
    });
  });
});
