// A real HTTP server on 127.0.0.1 for the HTTP kit's tests, and a logger whose lines a
// test can read.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { Express } from 'express';
import type { Logger } from 'pino';
import { createLogger } from '../../../infra/logger.ts';

export type Listening = { url: string; close(): Promise<void> };

export const listen = async (app: Express): Promise<Listening> => {
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
};

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** A logger at `debug` whose lines are kept (parsed) in `lines`. */
export const memoryLogger = (): { logger: Logger; lines: LogLine[]; text: () => string } => {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      raw.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const logger = createLogger({ logLevel: 'debug' }, stream);
  return {
    logger,
    get lines() {
      return raw.map((l) => JSON.parse(l) as LogLine);
    },
    text: () => raw.join('\n'),
  };
};

export type Answer = { status: number; headers: Headers; body: any; text: string };

/** fetch, reading the body as text and as JSON when it is JSON. */
export const call = async (url: string, init: RequestInit & { json?: unknown } = {}): Promise<Answer> => {
  const { json, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (json !== undefined) {
    if (!headers.has('content-type')) headers.set('content-type', 'application/json');
    rest.body = JSON.stringify(json);
  }
  const res = await fetch(url, { ...rest, headers });
  const text = await res.text();
  const type = res.headers.get('content-type') ?? '';
  const body = /json/.test(type) && text ? JSON.parse(text) : undefined;
  return { status: res.status, headers: res.headers, body, text };
};
