// The composition root: the one place that sees every layer and wires them together.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import { Router, type Express } from 'express';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { CommandKit } from '../commands/commandRoute.ts';
import { identityCommandRoutes, type LoginLimits } from '../commands/identity.ts';
import { ensureBootstrapAdmin } from '../commands/identityAccounts.ts';
import { ensureDefaultProject, projectCommandRoutes } from '../commands/projects.ts';
import { createAuthenticator, principalOf, rejectInvalidCredentials, callerOf, type Authenticator } from '../infra/auth/authenticate.ts';
import { ConfigError, type Config } from '../infra/config.ts';
import { acquireDataDirLock } from '../infra/dataDirLock.ts';
import { openEmbeddedDatabase, openServerDatabase, ping, type Database } from '../infra/db/database.ts';
import { migrateToLatest } from '../infra/db/migrate.ts';
import type { EventStore } from '../infra/eventStore/eventStore.ts';
import { createEsdbEventStore } from '../infra/eventStore/esdbEventStore.ts';
import { createPostgresEventStore } from '../infra/eventStore/postgresEventStore.ts';
import { comparePositions, formatPosition } from '../infra/eventStore/position.ts';
import { chain, forPaths } from '../infra/http/chain.ts';
import { createHttpApp, finish } from '../infra/http/createHttpApp.ts';
import { idempotency } from '../infra/http/idempotency.ts';
import { bindRoutes, createOpenApiRegistry, docsRouter, type OpenApiRegistry } from '../infra/http/openapi.ts';
import { createRateLimiter, type RateLimiter } from '../infra/rateLimit.ts';
import { limitsForCaller, rateLimitMiddleware } from '../infra/rateLimitHttp.ts';
import { loadSecretKeys, type SecretKeys } from '../infra/secretKeys.ts';
import { createVault, type Vault } from '../infra/vault.ts';
import { createWorkerRegistry, type WorkerRegistry } from '../infra/workers.ts';
import { identityProjection } from '../projections/identity.ts';
import { createProjectionRuntime, type ProjectionRuntime } from '../projections/projectionRuntime.ts';
import { projectsProjection } from '../projections/projects.ts';
import { monitoringProjection, NODE_LIFECYCLE_EVENT_TYPES, STATUS_CHANGE_KINDS } from '../projections/monitoring.ts';
import { filter, map, merge, Subject } from 'rxjs';
import { nodeCommandRoutes } from '../commands/nodes.ts';
import { groupCommandRoutes } from '../commands/groups.ts';
import { alertChannelCommandRoutes } from '../commands/alertChannels.ts';
import { createSnapshotRecorder } from '../commands/snapshotRecorder.ts';
import { AlertChannelView, GroupView, monitoringReadRoutes, NodeView } from '../read-api/monitoring.ts';
import { monitoringStatsRoutes } from '../read-api/monitoringStats.ts';
import { createPoller, type PollTarget } from '../workers/poller.ts';
import { createAlertNotifier } from '../workers/alertNotifier.ts';
import { asLeader } from '../infra/leaderWorker.ts';
import type { Check } from '../domain/monitoring.ts';
import { recordSnapshot } from '../commands/nodes.ts';
import { jobsProjection } from '../projections/jobs.ts';
import { jobCommandRoutes } from '../commands/jobs.ts';
import { createExecutionRecorder } from '../commands/executionRecorder.ts';
import { systemCommandRoutes, systemCommandRunner, type SystemRow, type SystemTestOutcome } from '../commands/systems.ts';
import { jobTemplateCommandRoutes, runTemplate, templateCommandRunner } from '../commands/jobTemplates.ts';
import { jobReadRoutes } from '../read-api/jobs.ts';
import { createSshPool, type SshCredentials } from '../infra/ssh/sshPool.ts';
import { createJobRunner } from '../workers/jobRunner.ts';
import { createJobScheduler } from '../workers/jobScheduler.ts';
import { nameUuid } from '../infra/ids.ts';
import { START } from '../infra/eventStore/position.ts';
import type { Change } from '../projections/projector.ts';
import { proxiesProjection } from '../projections/proxies.ts';
import { proxyDecider } from '../domain/proxies.ts';
import { proxyRoutes, type ProxyOptions } from './proxyRoutes.ts';
import { jobDecider, systemDecider, templateDecider } from '../domain/jobs.ts';
import { streamCatalogProjection } from '../projections/streamCatalog.ts';
import { healthRouter } from '../read-api/health.ts';
import { CreatedTokenView, identityReadRoutes, MeView, UserView } from '../read-api/identity.ts';
import { MemberView, projectReadRoutes, ProjectView } from '../read-api/projects.ts';
import { auditRoutes } from '../read-api/audit.ts';
import { attachLiveGateway } from '../read-api/liveGateway.ts';
import { streamRoutes, type StreamFold } from '../read-api/streams.ts';
import { createMetrics, withAppendMetrics } from '../infra/metrics.ts';
import type { Decider, DomainEvent } from '../domain/decider.ts';
import { identityDecider } from '../domain/identity.ts';
import { projectDecider, type ProjectEvent } from '../domain/projects.ts';
import { alertChannelDecider, groupDecider, nodeDecider } from '../domain/monitoring.ts';
import { usernameDecider } from '../domain/usernames.ts';

export const VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;

export const API_BASE = '/api/v1';

export const projectors = [streamCatalogProjection, identityProjection, projectsProjection, monitoringProjection, jobsProjection, proxiesProjection];

/** The project events that change who belongs where (a principal's memberships): a project's other edits leave credentials alone. */
const MEMBERSHIP_EVENT_TYPES = ['ProjectCreated', 'ProjectDeleted', 'MemberSet', 'MemberRemoved'] as const satisfies readonly ProjectEvent['type'][];

export type Kernel = {
  database: Database;
  store: EventStore;
  runtime: ProjectionRuntime;
  close(): Promise<void>;
};

export type KernelOptions = {
  /**
   * A database to use instead of DATA_DIR/DATABASE_URL (tests start PGlite from a dump in
   * well under a second). It is migrated here and closed with the kernel; no DATA_DIR lock is taken.
   */
  database?: Database;
};

const requireEventStoreUrl = (config: Config): string => {
  if (!config.eventStoreUrl) throw new ConfigError('EVENT_STORE=esdb needs EVENTSTORE_URL (esdb://host:2113?tls=false, or a cluster string)');
  return config.eventStoreUrl;
};

/** Database, migrations, event store and projection runtime (not started). */
export const openKernel = async (config: Config, logger: Logger, opts: KernelOptions = {}): Promise<Kernel> => {
  const embedded = !config.databaseUrl && !opts.database;
  const lock = embedded ? await acquireDataDirLock(config.dataDir) : null;
  let database: Database | null = opts.database ?? null;
  try {
    database ??= embedded
      ? await openEmbeddedDatabase({ dataDir: join(config.dataDir, 'pgdata') })
      : openServerDatabase({ url: config.databaseUrl! });
    const applied = await migrateToLatest(database);
    if (applied.length > 0) logger.info({ migrations: applied }, 'database migrated');
    // Events on EventStoreDB when asked; the read models (and checkpoints) stay on PostgreSQL/PGlite.
    const store = config.eventStore === 'esdb'
      ? await createEsdbEventStore(requireEventStoreUrl(config))
      : await createPostgresEventStore(database);
    const runtime = createProjectionRuntime({ database, store, projectors, logger });
    const db = database;
    return {
      database: db,
      store,
      runtime,
      async close() {
        await runtime.stop();
        await store.close();
        await db.close();
        await lock?.release();
      },
    };
  } catch (err) {
    if (database && !opts.database) await database.close().catch(() => undefined);
    await lock?.release();
    throw err;
  }
};

/** The secret keys (generated into DATA_DIR when not configured), with their warnings logged. */
export const openSecrets = async (config: Config, logger: Logger): Promise<SecretKeys> => {
  const keys = await loadSecretKeys(config, { dataDir: config.dataDir, embedded: !config.databaseUrl });
  for (const warning of keys.warnings) logger.warn(warning);
  if (keys.generated) logger.info({ dataDir: config.dataDir }, 'generated SECRET_KEY and SECRETS_KEY into the data directory (mode 0600)');
  return keys;
};

/**
 * Lag of each projection in events, counted up to a cap so the probe stays cheap. Counted
 * in the database's events table, so null when the events live on EventStoreDB.
 */
const projectionDetails = async (kernel: Kernel, countLag: boolean) => {
  const out = [];
  for (const s of kernel.runtime.status()) {
    if (!countLag) {
      out.push({ name: s.name, version: s.version, state: s.state, position: formatPosition(s.position), lag_events: null, last_error: s.lastError });
      continue;
    }
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from (select 1 from events
      where (transaction_id, global_position) > (${s.position.commit.toString()}::xid8, ${s.position.prepare.toString()}::bigint)
      limit 100001) t`.execute(kernel.database.db);
    out.push({ name: s.name, version: s.version, state: s.state, position: formatPosition(s.position), lag_events: rows[0]!.n, last_error: s.lastError });
  }
  return out;
};

// ---- the API and its extension point --------------------------------------------------

/** Everything a module needs to mount its routes. */
export type ApiContext = {
  config: Config;
  logger: Logger;
  kernel: Kernel;
  vault: Vault;
  secretKeys: SecretKeys;
  authenticator: Authenticator;
  limiter: RateLimiter;
  /** For command routes: the store, read-your-writes and its logger. */
  commandKit: CommandKit;
  /** The whole app (after authentication and rate limiting): for routes outside /api/v1. */
  app: Express;
  /** Mounted at /api/v1. */
  router: Router;
  /** bindRoutes over `router`: documents, validates and mounts (POSTs take Idempotency-Key unless `idempotent: false`). */
  routes: ReturnType<typeof bindRoutes>;
  registry: OpenApiRegistry;
  /** What startServer was given besides the configuration. */
  options: ServerOptions;
  /** The service's workers: register yours here; they start once the API listens and stop after it drained. */
  workers: WorkerRegistry;
  /** Live changes that are not read-model changes (job output): they go out over Socket.IO with the projections' own. */
  liveChanges: Subject<Change>;
  /** Runs once the HTTP server listens (e.g. to attach Socket.IO to it). */
  onListening(hook: (server: Server) => void | Promise<void>): void;
  /** Runs on shutdown after the server stopped taking requests, before the kernel closes (in reverse order). */
  onClose(hook: () => void | Promise<void>): void;
};

/** A module's routes; bin/app.ts runs every installer in `routeInstallers` in order. */
export type RouteInstaller = { name: string; install(ctx: ApiContext): void | Promise<void> };

export const identityRoutes: RouteInstaller = {
  name: 'identity',
  install(ctx) {
    const reads = identityReadRoutes(ctx.routes, { db: ctx.kernel.database.db, epoch: () => ctx.kernel.runtime.generation([identityProjection.name]) });
    identityCommandRoutes(ctx.routes, {
      ...ctx.commandKit,
      db: ctx.kernel.database.db,
      vault: ctx.vault,
      secretKey: ctx.secretKeys.secretKey,
      sessionSeconds: ctx.config.jwtExpiresInSeconds,
      allowRegistration: ctx.config.allowRegistration,
      limiter: ctx.limiter,
      ...(ctx.options.loginLimits ? { loginLimits: ctx.options.loginLimits } : {}),
      logger: ctx.logger,
      views: { user: reads.user, me: reads.me, token: reads.token, schemas: { User: UserView, Me: MeView, CreatedToken: CreatedTokenView } },
    });
  },
};

export const projectRoutes: RouteInstaller = {
  name: 'projects',
  install(ctx) {
    const reads = projectReadRoutes(ctx.routes, { db: ctx.kernel.database.db, epoch: () => ctx.kernel.runtime.generation([projectsProjection.name]) });
    projectCommandRoutes(ctx.routes, {
      ...ctx.commandKit,
      db: ctx.kernel.database.db,
      views: { project: reads.project, member: reads.member, schemas: { Project: ProjectView, Member: MemberView } },
    });
  },
};

const foldWith = <S, C, E extends DomainEvent>(d: Decider<S, C, E>): StreamFold =>
  (events) => events.reduce((s, e) => d.evolve(s, e as unknown as E), d.initialState());

const NODE_LIFECYCLE: ReadonlySet<string> = new Set(NODE_LIFECYCLE_EVENT_TYPES);
/** The read-model changes that may have queued alerts: what the alert notifier wakes up for. */
const ALERT_CHANGE_KINDS: readonly string[] = [...STATUS_CHANGE_KINDS, 'CertificateFailed'];
/** `node-<id>` folds by the node decider; its hot `node-<id>-snapshots` stream only counts and shows the last. */
const nodeFold: StreamFold = (events) => {
  const snapshots = events.filter((e) => !NODE_LIFECYCLE.has(e.type));
  if (snapshots.length === 0) return foldWith(nodeDecider)(events);
  return { snapshots: snapshots.length, last: snapshots.at(-1)!.data };
};

/** `job-<id>` and `job-template-<id>` share the category `job`: the events say which decider folds them. */
const jobFold: StreamFold = (events) => (events[0]?.type.startsWith('Template') ? foldWith(templateDecider) : foldWith(jobDecider))(events);

/** Monitoring (SPEC §5): nodes, snapshots, groups, statistics, alert channels; the poller and the alert notifier. */
export const monitoringRoutes: RouteInstaller = {
  name: 'monitoring',
  install(ctx) {
    const db = ctx.kernel.database.db;
    const runtime = ctx.kernel.runtime;
    const reads = monitoringReadRoutes(ctx.routes, {
      db, lifecycleEpoch: () => runtime.generation([monitoringProjection.name], NODE_LIFECYCLE_EVENT_TYPES),
    });
    monitoringStatsRoutes(ctx.routes, { db });
    const recorder = createSnapshotRecorder(ctx.commandKit.store);
    nodeCommandRoutes(ctx.routes, {
      ...ctx.commandKit, recorder, defaultIntervalS: ctx.config.pollIntervalSeconds,
      views: { ref: reads.ref, node: reads.node, projectExists: reads.projectExists, schemas: { Node: NodeView } },
    });
    groupCommandRoutes(ctx.routes, { ...ctx.commandKit, minOnlineDefault: ctx.config.minOnlineDefault, views: { group: reads.group, projectExists: reads.projectExists, schemas: { Group: GroupView } } });
    alertChannelCommandRoutes(ctx.routes, { ...ctx.commandKit, vault: ctx.vault, views: { channel: reads.channel, projectExists: reads.projectExists, schemas: { AlertChannel: AlertChannelView } } });

    // The poller records through the same snapshot path as a push, as the monitor itself.
    const monitorActor = { user_id: null, username: 'monitor', token_id: null };
    const poller = createPoller({
      defaultIntervalS: ctx.config.pollIntervalSeconds,
      concurrency: ctx.config.pollConcurrency,
      logger: ctx.logger,
      listTargets: async (): Promise<PollTarget[]> => {
        const rows = await db.selectFrom('nodes as n').innerJoin('node_status as s', 's.node_id', 'n.id')
          .select(['n.id', 'n.name', 'n.address', 'n.check_type', 'n.check_config', 's.last_observed_at', 's.last_source'])
          .where('n.active', '=', true).where('n.decommissioned', '=', false).execute();
        return rows.map((r) => ({
          nodeId: r.id, name: r.name, address: r.address,
          check: { type: r.check_type, ...(r.check_config as object) } as Check,
          lastObservedAt: r.last_observed_at ? new Date(r.last_observed_at) : null,
        }));
      },
      record: async (nodeId, snapshot) => {
        await recordSnapshot({ recorder }, await reads.ref(nodeId), nodeId, snapshot, { actor: monitorActor, now: snapshot.observedAt });
      },
    });
    const lock = (name: string) => () => ctx.kernel.database.tryAdvisoryLock(`opsledger:worker:${name}`);
    ctx.workers.register(asLeader(poller, { tryLock: lock(poller.name), logger: ctx.logger }));
    // Deliveries are claimed row by row (SKIP LOCKED): every instance may help. It wakes for
    // the changes that queue alerts only (status changes, certificate failures): waking for every change
    // would keep claiming without pause under a stream of snapshots.
    const wakeups = runtime.changes$.pipe(filter((c) => ALERT_CHANGE_KINDS.includes(c.kind)));
    ctx.workers.register(createAlertNotifier({ db, vault: ctx.vault, wakeups, logger: ctx.logger }));
  },
};

/** GET /audit and GET /streams/{id}: the log itself, read through the API. */
export const auditAndStreamRoutes: RouteInstaller = {
  name: 'audit',
  install(ctx) {
    auditRoutes(ctx.routes, { db: ctx.kernel.database.db });
    streamRoutes(ctx.routes, {
      store: ctx.kernel.store,
      // State per stream category, folded by the module's own decider.
      folds: {
        user: foldWith(identityDecider), project: foldWith(projectDecider), username: foldWith(usernameDecider),
        node: nodeFold, group: foldWith(groupDecider), alert: foldWith(alertChannelDecider),
        system: foldWith(systemDecider), job: jobFold, proxy: foldWith(proxyDecider),
      },
    });
  },
};

/** Socket.IO namespace /live on the API's port, fed by the projections' committed changes. */
export const liveUpdates: RouteInstaller = {
  name: 'live',
  install(ctx) {
    ctx.onListening(async (server) => {
      const live = await attachLiveGateway({
        httpServer: server,
        changes$: merge(ctx.kernel.runtime.changes$, ctx.liveChanges),
        resolvePrincipal: (token) => ctx.authenticator.resolvePrincipal(token),
        ...(ctx.config.redisUrl ? { redisUrl: ctx.config.redisUrl } : {}),
        logger: ctx.logger,
      });
      ctx.onClose(() => live.close());
    });
  },
};

const JOB_ID_NAMESPACE = '5d0f3a6e-1c2b-4e7a-9f8d-3b6c2a1e0f47';

/** Jobs over SSH (SPEC §6): systems, jobs, templates, the dashboard; the runner and the scheduler. */
export const jobRoutes: RouteInstaller = {
  name: 'jobs',
  install(ctx) {
    const db = ctx.kernel.database.db;
    const { config, logger } = ctx;
    const ssh = createSshPool({ maxSessionsPerHost: config.maxSessionsPerHost, logger });
    const runSystem = systemCommandRunner(ctx.commandKit.store);
    const monitor = { actor: { user_id: null, username: 'job-engine', token_id: null } };
    const credentials = async (ref: string): Promise<SshCredentials | null> => {
      const text = await ctx.vault.getText(ref);
      return text === null ? null : (JSON.parse(text) as SshCredentials);
    };
    const targetOf = async (row: SystemRow) => {
      const creds = await credentials(row.credential_ref);
      if (!creds) return null;
      return { host: row.hostname, port: row.port, username: row.username, credentials: creds, hostKeyFingerprint: row.host_key_fingerprint };
    };
    const executions = createExecutionRecorder(ctx.commandKit.store, monitor);
    const refused = (err: unknown) => ['JOB_CANCELLED', 'EXECUTION_NOT_PENDING', 'JOB_NOT_FOUND', 'EXECUTION_NOT_FOUND'].includes((err as { code?: string }).code ?? '');
    const runner = createJobRunner({
      db, ssh, credentials, logger, exclusive: ctx.kernel.database.kind === 'pglite',
      maxConcurrency: config.jobMaxConcurrency, maxOutputBytes: config.maxOutputBytes,
      ...(ctx.options.jobs?.leaseTtlMs ? { leaseTtlMs: ctx.options.jobs.leaseTtlMs } : {}),
      ...(ctx.options.jobs?.heartbeatMs ? { heartbeatMs: ctx.options.jobs.heartbeatMs } : {}),
      start: async (jobId, executionId, owner) => {
        try {
          return await executions.start({ jobId, executionId, startedAt: new Date().toISOString(), runner: owner });
        } catch (err) {
          if (refused(err)) return false;
          throw err;
        }
      },
      finish: (data) => executions.finish(data),
      pinHostKey: async (systemId, fingerprint) => void (await runSystem(systemId, { type: 'PinHostKey', data: { systemId, fingerprint } }, monitor)),
      output: (o) => ctx.liveChanges.next({
        projection: 'job-runner', topic: 'jobs', kind: 'ExecutionOutput', id: o.jobId, project: o.project, position: START,
        at: new Date().toISOString(), data: { execution_id: o.executionId, stream: o.stream, text: o.text },
      }),
      cancellations: ctx.kernel.runtime.changes$.pipe(filter((c) => c.kind === 'JobCancelled'), map((c) => c.id)),
      wakeups: ctx.kernel.runtime.changes$.pipe(filter((c) => c.kind === 'JobCreated' || c.kind === 'ExecutionFinished')),
    });
    const reads = jobReadRoutes(ctx.routes, { db, engine: () => runner.engine() });
    const kit = { ...ctx.commandKit };
    systemCommandRoutes(ctx.routes, {
      ...kit, vault: ctx.vault, views: reads,
      testSystem: async (row): Promise<SystemTestOutcome> => {
        const target = await targetOf(row);
        if (!target) return { success: false, error: 'the credentials are missing from the vault', code: 'CREDENTIALS_MISSING', hostKeyFingerprint: null };
        try {
          return { success: true, ...(await ssh.test(target)) };
        } catch (err) {
          const e = err as { code?: string; message: string; seen?: string };
          return { success: false, error: e.message, code: e.code ?? 'SSH_ERROR', hostKeyFingerprint: e.seen ?? null };
        }
      },
    });
    jobCommandRoutes(ctx.routes, { ...kit, views: reads });
    jobTemplateCommandRoutes(ctx.routes, { ...kit, views: reads, jobViews: reads });

    const runTemplateAt = async (templateId: string, dueAt: string, queuedBehind: string | null) => {
      const found = await reads.template(templateId);
      if (!found) return;
      try {
        await runTemplate({ store: ctx.commandKit.store, jobViews: reads }, found.row,
          { params: {}, scheduleAt: dueAt, createdBy: null, jobId: nameUuid(JOB_ID_NAMESPACE, `${templateId}/${dueAt}`), queuedBehind },
          { ...monitor, project: found.project });
      } catch (err) {
        if ((err as { code?: string }).code !== 'JOB_EXISTS') throw err;
      }
    };
    const runTemplateStream = templateCommandRunner(ctx.commandKit.store);
    const scheduler = createJobScheduler({
      db, logger, run: runTemplateAt,
      ...(ctx.options.jobs?.schedulerTickMs ? { tickMs: ctx.options.jobs.schedulerTickMs } : {}),
      skip: async (templateId, dueAt, reason) => void (await runTemplateStream(templateId, { type: 'SkipTemplateRun', data: { templateId, dueAt, reason } }, monitor)),
    });
    const lock = (name: string) => () => ctx.kernel.database.tryAdvisoryLock(`opsledger:worker:${name}`);
    // The SSH pool closes after the runner has killed and recorded what still ran.
    ctx.workers.register(asLeader({
      name: runner.name,
      start: () => runner.start(),
      async stop() { await runner.stop(); await ssh.close(); },
      details: () => runner.details?.() ?? {},
    }, { tryLock: lock(runner.name), logger }));
    ctx.workers.register(asLeader(scheduler, { tryLock: lock(scheduler.name), logger }));
  },
};

/** The modules' routes, in mounting order. Later modules append theirs here. */
export const routeInstallers: RouteInstaller[] = [identityRoutes, projectRoutes, monitoringRoutes, jobRoutes, proxyRoutes, auditAndStreamRoutes, liveUpdates];

export type ServerOptions = KernelOptions & {
  /** Where the first start prints the generated admin password (default: stdout, never the logger). */
  print?: (text: string) => void;
  /** Login rate limits (tests raise them). */
  loginLimits?: LoginLimits;
  /** Installers run after `routeInstallers`. */
  extraRoutes?: readonly RouteInstaller[];
  /** Job engine timings (tests shorten them). */
  jobs?: { schedulerTickMs?: number; leaseTtlMs?: number; heartbeatMs?: number };
  /** Proxy engine timings, the ACME server's CA and the renewal clock (tests). */
  proxies?: ProxyOptions;
};

export type RunningServer = { server: Server; url: string; kernel: Kernel; close(): Promise<void> };

/** On first start: the default project, and the `admin` user when there is no user at all. */
const bootstrap = async (kernel: Kernel, vault: Vault, config: Config, logger: Logger, print: (text: string) => void) => {
  const project = await ensureDefaultProject(kernel.store);
  if (project) logger.info('created the default project');
  const admin = await ensureBootstrapAdmin({ store: kernel.store, vault, db: kernel.database.db }, { password: config.adminPassword });
  if (admin.created) {
    if (admin.generatedPassword) {
      // Once, on stdout, never through the logger (log lines are shipped and kept).
      print(`opsledger: created the first user "${admin.username}" (global admin) with the password\n\n    ${admin.generatedPassword}\n\n`
        + 'It is not shown again: log in and change it (PATCH /api/v1/auth/me).\n');
    }
    logger.info({ user_id: admin.userId, password_from: admin.generatedPassword ? 'generated (printed once)' : 'ADMIN_PASSWORD' }, `created the first user "${admin.username}" (global admin)`);
  }
  // So that the first login right after start finds the admin: wait for the read models.
  const written = [project, ...(admin.created ? admin.results : [])].flatMap((r) => (r?.append ? [r] : []));
  if (written.length === 0) return;
  const eventTypes = [...new Set(written.flatMap((r) => r.events.map((e) => e.type)))];
  const last = written.map((r) => r.append!.position).reduce((a, b) => (comparePositions(a, b) >= 0 ? a : b));
  await kernel.runtime.whenCaughtUp(last, { eventTypes, timeoutMs: 30_000 })
    .catch((err: unknown) => logger.warn({ err }, 'first start: the read models have not caught up yet'));
};

export const startServer = async (config: Config, logger: Logger, opts: ServerOptions = {}): Promise<RunningServer> => {
  const kernel = await openKernel(config, logger, opts);
  const listeningHooks: Array<(server: Server) => void | Promise<void>> = [];
  const closeHooks: Array<() => void | Promise<void>> = [];
  let limiter: RateLimiter | null = null;
  try {
    const secretKeys = await openSecrets(config, logger);
    const vault = createVault(kernel.database.db, secretKeys.secretsKey);
    await kernel.runtime.start();
    await bootstrap(kernel, vault, config, logger, opts.print ?? ((text) => void process.stdout.write(text)));

    limiter = createRateLimiter({ redisUrl: config.redisUrl, keyPrefix: 'opl:rl', logger });
    const rateLimiter = limiter;
    const authenticator = createAuthenticator({
      db: kernel.database.db,
      secretKey: secretKeys.secretKey,
      onBackgroundError: (err) => logger.warn({ err }, 'recording an API token’s last use failed'),
      // Credentials resolve from memory until the identity or projects read models move
      // (here, or on the leader instance: its checkpoint NOTIFY moves our view too).
      epoch: () => kernel.runtime.generation([identityProjection.name])
        + kernel.runtime.generation([projectsProjection.name], MEMBERSHIP_EVENT_TYPES),
    });

    const workers = createWorkerRegistry({ logger });
    const metrics = createMetrics({ projections: () => projectionDetails(kernel, config.eventStore === 'postgres') });
    const app = createHttpApp({ logger, quietPaths: ['/health', '/health/ready', '/metrics'] });
    const registry = createOpenApiRegistry();
    // Everything in front of the API routes, as one layer (infra/http/chain.ts). Probes are
    // answered before authentication and rate limiting: an orchestrator polls them.
    app.use(chain(
      metrics.httpMetricsMiddleware(),
      forPaths(['/metrics'], metrics.metricsRouter()),
      forPaths(['/health'], healthRouter({
        version: VERSION,
        checks: {
          database: () => ping(kernel.database),
          event_store: async () => void (await kernel.store.headPosition()),
          ...(rateLimiter.store === 'redis'
            ? { redis: async () => { if (!(await rateLimiter.ready(1000))) throw new Error('not connected'); } }
            : {}),
        },
        details: async () => ({ projections: await projectionDetails(kernel, config.eventStore === 'postgres'), workers: workers.status() }),
      })),
      authenticator.middleware(),
      // Before refusing bad credentials, so that guessing tokens is limited per address too.
      rateLimitMiddleware({
        limiter: rateLimiter,
        limitsFor: (req, res) => {
          const caller = callerOf(res);
          if (!caller) return limitsForCaller(config, null, req.ip ?? req.socket.remoteAddress);
          return limitsForCaller(config, {
            userId: caller.principal.userId, role: caller.principal.role,
            rateLimitPerSecond: caller.rateLimitPerSecond, rateLimitBurst: caller.rateLimitBurst,
          }, undefined);
        },
      }),
      rejectInvalidCredentials(),
      forPaths(['/openapi.json', '/docs'], docsRouter(registry, {
        title: 'Opsledger', version: VERSION,
        description: 'Event-sourced control plane for fleets. Authenticate with `Authorization: Bearer <token>` (a session token from POST /api/v1/auth/login, or an API token).',
      })),
    ));
    const router = Router();
    const routes = bindRoutes(router, registry, {
      prefix: API_BASE,
      idempotency: idempotency({
        db: kernel.database.db,
        logger,
        principalKey: (req, res) => {
          const principal = principalOf(res);
          return principal ? `user:${principal.userId}` : `anonymous:${req.ip ?? req.socket.remoteAddress ?? 'unknown'}`;
        },
      }),
    });
    app.use(API_BASE, router);

    const ctx: ApiContext = {
      config, logger, kernel, vault, secretKeys, authenticator, limiter: rateLimiter,
      commandKit: { store: withAppendMetrics(kernel.store, metrics), whenCaughtUp: kernel.runtime.whenCaughtUp, logger },
      app, router, routes, registry, options: opts, workers, liveChanges: new Subject<Change>(),
      onListening: (hook) => void listeningHooks.push(hook),
      onClose: (hook) => void closeHooks.push(hook),
    };
    for (const installer of [...routeInstallers, ...(opts.extraRoutes ?? [])]) await installer.install(ctx);
    finish(app);

    const server = createServer(app);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => resolve());
    });
    for (const hook of listeningHooks) await hook(server);
    await workers.start();
    const { port } = server.address() as AddressInfo;
    const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
    let closing: Promise<void> | null = null;
    return {
      server,
      url,
      kernel,
      close: () =>
        (closing ??= (async () => {
          // Drain: stop accepting and let in-flight requests finish while the hooks end
          // long-lived connections (Socket.IO would otherwise hold the server open), then
          // stop the kernel.
          const drained = new Promise<void>((resolve) => server.close(() => resolve()));
          server.closeIdleConnections();
          for (const hook of closeHooks.reverse()) await Promise.resolve(hook()).catch((err: unknown) => logger.warn({ err }, 'a shutdown hook failed'));
          await drained;
          await workers.stop();
          await rateLimiter.close();
          await kernel.close();
        })()),
    };
  } catch (err) {
    await limiter?.close().catch(() => undefined);
    await kernel.close().catch(() => undefined);
    throw err;
  }
};
