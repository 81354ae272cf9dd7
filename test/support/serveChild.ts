// `opsledger serve` as a child process on 127.0.0.1, for tests that kill it (SIGKILL) in
// the middle of something and check what the next start makes of it.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ADMIN_PASSWORD, clientFor, type Client } from './apiClient.ts';
import { freePort } from './postgresServer.ts';
import { waitFor } from './waitFor.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type ServeChild = {
  /** Logged in as the bootstrap admin. */
  admin: Client;
  /** SIGKILL, and resolves once it has exited. */
  kill(): Promise<void>;
};

/** Starts it with `env` on top of this process's (give DATABASE_URL and the keys the restart will reuse); `use` runs while it lives, and it is killed whatever happens. */
export const withServeChild = async <T>(env: Record<string, string>, use: (child: ServeChild) => Promise<T>): Promise<T> => {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/cli.ts', 'serve'], {
    cwd: ROOT, stdio: 'ignore',
    env: { ...process.env, ...env, HOST: '127.0.0.1', PORT: String(port), ADMIN_PASSWORD, LOG_LEVEL: 'warn' },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${url}/health`).catch(() => null))?.ok, 'opsledger serve to answer', 60_000);
    const login = await clientFor(url, null).post('/auth/login', { username: 'admin', password: ADMIN_PASSWORD });
    return await use({ admin: clientFor(url, login.body.access_token), kill });
  } finally {
    await kill();
  }
};
