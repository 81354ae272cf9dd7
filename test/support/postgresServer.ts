// A throwaway PostgreSQL 15 server on 127.0.0.1 and a random free port, in a temp
// directory owned by the postgres user (initdb refuses root). Used by tests and benches.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export type PostgresServer = { url: (database?: string) => string; port: number; dir: string; stop(): void };

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });

const pgBin = (): string => {
  const base = '/usr/lib/postgresql';
  const version = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a))[0] : undefined;
  if (!version) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)');
  return join(base, version, 'bin');
};

const asPostgres = (args: string[]): void => {
  const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const isRoot = process.getuid?.() === 0;
  const res = isRoot
    ? spawnSync('su', ['postgres', '-s', '/bin/sh', '-c', quoted], { encoding: 'utf8' })
    : spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`${args[0]} failed: ${res.stderr || res.stdout}`);
};

export const startPostgresServer = async (opts: { fsync?: boolean } = {}): Promise<PostgresServer> => {
  const bin = pgBin();
  const dir = mkdtempSync(join(tmpdir(), 'opl-pg-'));
  chmodSync(dir, 0o777);
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres:postgres', dir]);
  const data = join(dir, 'data');
  asPostgres([join(bin, 'initdb'), '-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C.UTF-8']);
  const port = await freePort();
  const settings = [
    `-p ${port}`, `-k ${dir}`, '-c listen_addresses=127.0.0.1', '-c max_connections=200',
    `-c fsync=${opts.fsync === false ? 'off' : 'on'}`,
  ].join(' ');
  asPostgres([join(bin, 'pg_ctl'), '-D', data, '-l', join(dir, 'log'), '-o', settings, '-w', 'start']);
  const url = (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`;
  let stopped = false;
  return {
    url,
    port,
    dir,
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        asPostgres([join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
};

/** A fresh, empty database on the server; returns its URL. */
export const createDatabase = async (server: PostgresServer, name: string): Promise<string> => {
  const client = new pg.Client({ connectionString: server.url() });
  await client.connect();
  try {
    await client.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
    await client.query(`create database ${pg.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
  return server.url(name);
};
