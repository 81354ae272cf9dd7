// One PostgreSQL server for the whole run, started before the first test and stopped
// after the last; each test file makes its own databases on it (test/support/databases.ts).
import { startPostgresServer, type PostgresServer } from './postgresServer.ts';

let server: PostgresServer | null = null;
let starting: Promise<PostgresServer> | null = null;

export const postgresServer = (): Promise<PostgresServer> => (starting ??= startPostgresServer().then((s) => (server = s)));

export const mochaHooks = {
  afterAll() {
    server?.stop();
  },
};

process.on('exit', () => server?.stop());
