// `opsledger <command>`: the CLI entry. Parses arguments, loads the configuration (a bad
// value stops here with one line), and hands over to the composition root.
import { parseArgs } from 'node:util';
import { ConfigError } from '../infra/config.ts';
import { loadConfig } from '../infra/config.ts';
import { createLogger } from '../infra/logger.ts';
import { createProgressReporter } from '../infra/progressReporter.ts';
import { registerUser, generatePassword } from '../commands/identityAccounts.ts';
import { USERNAME_PATTERN } from '../commands/identitySchemas.ts';
import { validatePasswordPolicy } from '../infra/auth/password.ts';
import { AppError } from '../infra/errors.ts';
import { readFileSync } from 'node:fs';
import { importNodes, nodeCommandRunner, parseImport } from '../commands/nodes.ts';
import { ensureDefaultProject } from '../commands/projects.ts';
import { DEFAULT_PROJECT, projectStream } from '../domain/projects.ts';
import { createVault } from '../infra/vault.ts';
import { openKernel, openSecrets, projectors, startServer, VERSION } from './app.ts';

const HELP = `opsledger ${VERSION} — event-sourced control plane for fleets

Usage: opsledger <command> [options]

Commands:
  serve                       run the API, projections and workers (default data: ./data, embedded PostgreSQL)
  replay [--projection NAME]  rebuild read models from the event log (all projections, or one)
  seed-nodes (--json FILE | --from-env) [--project SLUG]
                              import nodes in the nodes.json form [{name, ip, pubkey}] (upsert by name);
                              --from-env reads the JSON from NODES_JSON (embedded: run it while the service is stopped)
  create-admin --username NAME [--password-stdin]
                              create a global admin; the password is read from stdin, or generated
                              and printed once (embedded: run it while the service is stopped)
  help, --help                show this help
  --version                   print the version

Projections: ${projectors.map((p) => p.name).join(', ')}
Configuration is read from the environment (PORT, HOST, DATA_DIR, DATABASE_URL, LOG_LEVEL, …); see README.md.
`;

const fail = (message: string): never => {
  process.stderr.write(`opsledger: ${message}\n`);
  process.exit(1);
};

const serve = async () => {
  const config = loadConfig();
  const logger = createLogger(config);
  const running = await startServer(config, logger);
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining requests and stopping workers');
    const force = setTimeout(() => {
      logger.error('shutdown took longer than 20 s; exiting');
      process.exit(1);
    }, 20_000);
    force.unref();
    running.close().then(
      () => { logger.info('stopped'); process.exit(0); },
      (err) => { logger.error({ err }, 'shutdown failed'); process.exit(1); },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  // Only now: whoever waits for this line may signal us at once, and must get a clean shutdown.
  logger.info({ url: running.url, version: VERSION, data: config.databaseUrl ? 'server' : config.dataDir }, 'opsledger listening');
};

const replay = async (only: string | undefined) => {
  const config = loadConfig();
  const logger = createLogger({ ...config, logLevel: 'warn' });
  const names = projectors.map((p) => p.name);
  if (only && !names.includes(only)) fail(`unknown projection "${only}"; known: ${names.join(', ')}`);
  const kernel = await openKernel(config, logger);
  try {
    for (const name of only ? [only] : names) {
      const progress = createProgressReporter(`replay ${name}`);
      const started = performance.now();
      const result = await kernel.runtime.replay(name, (p) => progress.update(p.done, p.total));
      const seconds = (performance.now() - started) / 1000;
      progress.finish(`replay ${name}: ${result.events} events in ${seconds.toFixed(1)} s`);
    }
  } finally {
    await kernel.close();
  }
};

/** All of stdin, without the one line break that `echo` or a here-string adds. */
const readStdin = async (): Promise<string> => {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
};

const createAdmin = async (username: string | undefined, passwordFromStdin: boolean) => {
  if (!username) fail('create-admin needs --username NAME\nRun "opsledger --help" for usage.');
  if (!USERNAME_PATTERN.test(username!)) fail(`invalid username "${username}": 2–63 letters, digits, dots, dashes or underscores, starting with a letter or digit`);
  const password = passwordFromStdin ? await readStdin() : generatePassword();
  const weak = validatePasswordPolicy(password);
  if (weak) fail(`invalid password: ${weak}`);
  const config = loadConfig();
  // Warnings to stderr: stdout is the command's answer (and may hold the password).
  const logger = createLogger({ ...config, logLevel: 'warn' }, process.stderr);
  const kernel = await openKernel(config, logger);
  try {
    const keys = await openSecrets(config, logger);
    const vault = createVault(kernel.database.db, keys.secretsKey);
    let userId: string;
    try {
      ({ userId } = await registerUser({ store: kernel.store, vault }, {
        username: username!, password, email: null, role: 'admin', rateLimitPerSecond: null, rateLimitBurst: null, via: 'cli',
      }, { actor: null, requestId: null, ip: null, project: null }));
    } catch (err) {
      const e = err as { code?: string; errors?: { message: string }[] };
      // Thrown, not fail()ed: the finally below must release the data directory first.
      if (e.code === 'USERNAME_EXISTS') throw new AppError(e.code, `the username "${username}" is taken`);
      if (e.code === 'VALIDATION_FAILED' && e.errors) throw new AppError(e.code, `invalid password: ${e.errors.map((x) => x.message).join('; ')}`);
      throw err;
    }
    process.stdout.write(`created global admin "${username}" (id ${userId})\n`);
    if (!passwordFromStdin) process.stdout.write(`password: ${password}\n(shown once: log in and change it with PATCH /api/v1/auth/me)\n`);
  } finally {
    await kernel.close();
  }
};

const seedNodes = async (file: string | undefined, fromEnv: boolean, project: string) => {
  if (!file === !fromEnv) fail('seed-nodes needs exactly one of --json FILE or --from-env\nRun "opsledger --help" for usage.');
  let text: string;
  try {
    text = file ? readFileSync(file, 'utf8') : (process.env['NODES_JSON'] ?? fail('--from-env: NODES_JSON is not set'));
  } catch (err) {
    return fail(`cannot read ${file}: ${(err as Error).message}`);
  }
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch (err) {
    return fail(`${file ?? 'NODES_JSON'} is not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(list)) return fail(`${file ?? 'NODES_JSON'} must hold a JSON array of {name, ip, pubkey}`);
  let entries;
  try {
    entries = parseImport(list);
  } catch (err) {
    const e = err as { message: string; errors?: { path: string; message: string }[] };
    return fail(`${e.message}\n${(e.errors ?? []).map((x) => `  ${x.path.replace(/^body/, 'entry ')}: ${x.message}`).join('\n')}`);
  }
  const config = loadConfig();
  const logger = createLogger({ ...config, logLevel: 'warn' }, process.stderr);
  const kernel = await openKernel(config, logger);
  try {
    // Before the first start there is no default project yet: it always exists, so make it.
    if (project === DEFAULT_PROJECT) await ensureDefaultProject(kernel.store);
    const exists = await kernel.store.streamRevision(projectStream(project));
    if (exists === null) throw new AppError('PROJECT_NOT_FOUND', `project ${project} does not exist`);
    const ctx = { actor: { user_id: null, username: 'cli', token_id: null }, requestId: null, ip: null, project };
    const { summary } = await importNodes({ store: kernel.store, defaultIntervalS: config.pollIntervalSeconds, run: nodeCommandRunner(kernel.store) }, project, entries, ctx);
    process.stdout.write(`seed-nodes: ${summary.created} created, ${summary.updated} updated, ${summary.unchanged} unchanged (project ${project})\n`);
  } finally {
    await kernel.close();
  }
};

const main = async () => {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        projection: { type: 'string' }, username: { type: 'string' }, 'password-stdin': { type: 'boolean' },
        json: { type: 'string' }, 'from-env': { type: 'boolean' }, project: { type: 'string' },
        help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' },
      },
    });
  } catch (err) {
    return fail(`${(err as Error).message}\nRun "opsledger --help" for usage.`);
  }
  const [command, ...rest] = parsed.positionals;
  if (parsed.values.version) return void process.stdout.write(`${VERSION}\n`);
  if (parsed.values.help || command === 'help' || command === undefined) return void process.stdout.write(HELP);
  if (rest.length > 0) return fail(`unexpected argument "${rest[0]}"\nRun "opsledger --help" for usage.`);
  switch (command) {
    case 'serve':
      return serve();
    case 'replay':
      return replay(parsed.values.projection);
    case 'seed-nodes':
      return seedNodes(parsed.values.json, parsed.values['from-env'] === true, parsed.values.project ?? DEFAULT_PROJECT);
    case 'create-admin':
      return createAdmin(parsed.values.username, parsed.values['password-stdin'] === true);
    default:
      return fail(`unknown command "${command}"\nRun "opsledger --help" for usage.`);
  }
};

main().catch((err: unknown) => {
  // Expected failures (bad configuration, data directory in use) are one clear line; no stack.
  const coded = err as { code?: unknown; message?: string };
  if (err instanceof ConfigError || typeof coded.code === 'string') fail(coded.message ?? String(err));
  process.stderr.write(`opsledger: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
