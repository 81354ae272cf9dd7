// Live updates (SPEC §10): Socket.IO namespace `/live` on the API's http server. Clients
// subscribe to topics (rooms); every committed read-model change is pushed to the sockets
// of its rooms whose principal may read it.
//
// Rooms broadcast blindly, so nothing is ever broadcast to a topic room: for each change
// the gateway looks up the room members on THIS instance, checks each socket's principal
// (`canRead`), and emits once to the permitted sockets (`nsp.local.to(socketIds)`, one
// encoding for all of them).
//
// Several instances (REDIS_URL): a projection runs on one instance only (the leader), so
// a change appears on one instance and must reach sockets on all of them. The instance
// that sees it publishes it on a Redis channel; every instance feeds what it receives
// through the same per-socket filter as its own changes. The @socket.io/redis-adapter is
// installed as well, so Socket.IO's own cross-instance operations (disconnectSockets,
// fetchSockets…) see every instance. We publish changes ourselves rather than with the
// adapter's serverSideEmit because the adapter drops the promise of its PUBLISH: while
// Redis is away that becomes an unhandled rejection, and queued changes would arrive
// late and stale. Here a change is only published while Redis is ready, else dropped
// for the other instances with a warning (clients re-read on reconnect anyway).
//
// Revocation: the principal is re-validated at delivery (and at subscribe) time through a
// cache keyed by token with a short lifetime (`revalidateMs`, 10 s by default): a revoked
// token or a deactivated user stops receiving within that time, and the socket is
// disconnected (after an `unauthorized` event) on its next delivery. One lookup per token
// per period, however many sockets share it and however many changes flow.
import { randomUUID } from 'node:crypto';
import type { Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { concatMap, Subject, type Observable, type Subscription } from 'rxjs';
import { Server, type ExtendedError, type Namespace, type Socket } from 'socket.io';
import type { Principal } from '../infra/auth/principal.ts';
import { formatPosition, parsePosition, type Position } from '../infra/eventStore/position.ts';
import { statusOf } from '../infra/http/errorStatus.ts';
import { canReadLiveChange } from './livePermissions.ts';
import { parseTopic, roomsOf } from './liveTopics.ts';

/** A committed read-model change as the gateway takes it (projections' Change fits). */
export type LiveChange = {
  topic: string;
  kind: string;
  id: string;
  data?: unknown;
  /** The project the changed item belongs to, for the permission check; null/absent = none. */
  project?: string | null;
  position: Position;
  at: string;
};

/** What a client receives as `change`. */
export type LiveChangePayload = { topic: string; kind: string; id: string; data: unknown; position: string; at: string };

export type LiveAck = { ok: true } | { ok: false; error: string };

export type LiveLogger = {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
};

export type LiveGatewayOptions = {
  httpServer: HttpServer | HttpsServer;
  /** Changes produced on this instance, after commit (the projection runtime's changes$). */
  changes$: Observable<LiveChange>;
  /** Token (session JWT or API token) → principal; null (or a 401-coded error) when invalid. */
  resolvePrincipal: (token: string) => Promise<Principal | null>;
  /** May this principal read this change? Defaults to the SPEC §4 read permissions. */
  canRead?: (principal: Principal, change: LiveChange) => boolean | Promise<boolean>;
  /** Shares changes with the other instances. */
  redisUrl?: string;
  logger?: LiveLogger;
  /** How long a resolved principal is trusted before it is looked up again (ms). */
  revalidateMs?: number;
  /** A principal lookup taking longer fails (ms). */
  resolveTimeoutMs?: number;
  /** Topics per socket. */
  maxSubscriptions?: number;
  /** Redis channel (and adapter key) prefix, to keep deployments sharing a Redis apart. */
  redisPrefix?: string;
};

export type LiveGateway = {
  io: Server<ClientEvents, ServerEvents, Record<string, never>, SocketData>;
  /** Disconnects every live client and leaves Redis; call it before closing the http server. */
  close(): Promise<void>;
};

export const LIVE_NAMESPACE = '/live';

type Ack = (result: LiveAck) => void;
type ClientEvents = {
  subscribe: (topic: unknown, ack?: Ack) => void;
  unsubscribe: (topic: unknown, ack?: Ack) => void;
};
type ServerEvents = {
  change: (payload: LiveChangePayload) => void;
  unauthorized: (reason: { error: 'unauthorized' }) => void;
};
type SocketData = { token: string; revoked: boolean };
type LiveSocket = Socket<ClientEvents, ServerEvents, Record<string, never>, SocketData>;
type LiveNamespace = Namespace<ClientEvents, ServerEvents, Record<string, never>, SocketData>;

/** What travels between instances. */
type Wire = { from: string; project: string | null; payload: LiveChangePayload };

type AuthEntry = { checkedAt: number; result: Promise<Principal | null>; sockets: number };

const silent: LiveLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

const MAX_TOKEN_LENGTH = 8192;
const SWEEP_MS = 60_000;
const WARN_EVERY_MS = 60_000;
const REDIS_READY_TIMEOUT_MS = 5000;

/** An error meaning "this token is not (or no longer) good", as opposed to "we could not check". */
const isAuthError = (err: unknown): boolean => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && statusOf(code, 0) === 401;
};

const connectError = (message: 'unauthorized' | 'unavailable', code?: string): ExtendedError => {
  const err: ExtendedError = new Error(message);
  if (code) err.data = { code };
  return err;
};

const withTimeout = <T>(promise: Promise<T>, ms: number): Promise<T> =>
  new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (v) => { clearTimeout(timer); resolve(v); },
      (e: unknown) => { clearTimeout(timer); reject(e instanceof Error ? e : new Error(String(e))); },
    );
  });

const tokenOf = (handshake: LiveSocket['handshake']): string | null => {
  const fromAuth: unknown = handshake.auth?.token;
  const fromQuery: unknown = handshake.query.token;
  const raw = typeof fromAuth === 'string' && fromAuth !== '' ? fromAuth : typeof fromQuery === 'string' ? fromQuery : '';
  const token = raw.replace(/^Bearer\s+/i, '').trim();
  return token !== '' && token.length <= MAX_TOKEN_LENGTH ? token : null;
};

const toPayload = (c: LiveChange): LiveChangePayload => ({
  topic: c.topic, kind: c.kind, id: c.id, data: c.data ?? null, position: formatPosition(c.position), at: c.at,
});

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A message from another instance, or null if it is not one of ours. */
const decodeWire = (message: string): (Wire & { position: Position }) | null => {
  let w: unknown;
  try {
    w = JSON.parse(message);
  } catch {
    return null;
  }
  if (!isRecord(w) || typeof w.from !== 'string' || !(w.project === null || typeof w.project === 'string') || !isRecord(w.payload)) return null;
  const p = w.payload;
  if (typeof p.topic !== 'string' || typeof p.kind !== 'string' || typeof p.id !== 'string' || typeof p.at !== 'string' || typeof p.position !== 'string') return null;
  const position = parsePosition(p.position);
  if (!position) return null;
  const payload: LiveChangePayload = { topic: p.topic, kind: p.kind, id: p.id, data: p.data ?? null, position: p.position, at: p.at };
  return { from: w.from, project: w.project, payload, position };
};

export const attachLiveGateway = async (opts: LiveGatewayOptions): Promise<LiveGateway> => {
  const log = opts.logger ?? silent;
  const canRead = opts.canRead ?? canReadLiveChange;
  const revalidateMs = opts.revalidateMs ?? 10_000;
  const resolveTimeoutMs = opts.resolveTimeoutMs ?? 5000;
  const maxSubscriptions = opts.maxSubscriptions ?? 200;
  const prefix = opts.redisPrefix ?? 'opsledger';
  const instanceId = randomUUID();

  const lastWarned = new Map<string, number>();
  /** A warning per kind at most once a minute: a Redis outage must not flood the log. */
  const warn = (kind: string, o: object, msg: string) => {
    const t = Date.now();
    if (t - (lastWarned.get(kind) ?? -Infinity) < WARN_EVERY_MS) return;
    lastWarned.set(kind, t);
    log.warn(o, msg);
  };

  let redis: { pub: Redis; sub: Redis; channel: string } | null = null;
  if (opts.redisUrl) {
    const common = { connectTimeout: 2000, retryStrategy: (times: number) => Math.min(100 * times, 2000) };
    const pub = new Redis(opts.redisUrl, { ...common, connectionName: `opsledger-live-pub-${instanceId.slice(0, 8)}` });
    const sub = new Redis(opts.redisUrl, { ...common, connectionName: `opsledger-live-sub-${instanceId.slice(0, 8)}` });
    // ioredis reports connection trouble as 'error' events; an unhandled one would crash the process.
    for (const client of [pub, sub]) client.on('error', (err: Error) => warn('redis', { err: err.message }, 'live gateway: Redis unavailable; changes reach this instance\'s clients only'));
    redis = { pub, sub, channel: `${prefix}:live:changes` };
  }

  const io: LiveGateway['io'] = new Server(opts.httpServer, {
    serveClient: false,
    // Clients only send topics: a small limit keeps a hostile client from making us buffer much.
    maxHttpBufferSize: 64 * 1024,
    ...(redis ? { adapter: createAdapter(redis.pub, redis.sub, { key: `${prefix}:socket.io` }) } : {}),
  });
  // The default namespace serves nothing: refuse it rather than hold idle connections.
  io.of('/').use((_socket, next) => next(new Error(`unknown namespace; use ${LIVE_NAMESPACE}`)));
  const nsp: LiveNamespace = io.of(LIVE_NAMESPACE);

  // ---- principals, cached per token ----------------------------------------------------
  const auth = new Map<string, AuthEntry>();

  /** The token's entry, with a lookup started if the last one is older than revalidateMs (or failed). */
  const lookup = (token: string): AuthEntry => {
    let entry = auth.get(token);
    if (!entry) {
      entry = { checkedAt: -Infinity, result: Promise.resolve(null), sockets: 0 };
      auth.set(token, entry);
    }
    if (Date.now() - entry.checkedAt >= revalidateMs) {
      const e = entry;
      const result = withTimeout(Promise.resolve().then(() => opts.resolvePrincipal(token)), resolveTimeoutMs);
      e.checkedAt = Date.now();
      e.result = result;
      // A failed lookup is not cached: the next caller tries again.
      result.catch(() => { if (e.result === result) e.checkedAt = -Infinity; });
    }
    return entry;
  };

  const forget = (token: string) => {
    const entry = auth.get(token);
    if (entry && entry.sockets <= 0) auth.delete(token);
  };

  const sweep = setInterval(() => {
    const t = Date.now();
    for (const [token, e] of auth) if (e.sockets <= 0 && t - e.checkedAt >= revalidateMs) auth.delete(token);
  }, SWEEP_MS);
  sweep.unref();

  const revoke = (socket: LiveSocket) => {
    if (socket.data.revoked) return;
    socket.data.revoked = true;
    socket.emit('unauthorized', { error: 'unauthorized' });
    socket.disconnect(true);
  };

  /** The socket's principal now; null when revoked (the socket is then disconnected), undefined when it could not be checked. */
  const principalOf = async (socket: LiveSocket): Promise<Principal | null | undefined> => {
    if (socket.data.revoked) return null;
    try {
      const principal = await lookup(socket.data.token).result;
      if (principal) return principal;
    } catch (err) {
      if (!isAuthError(err)) {
        warn('resolve', { err: (err as Error).message }, 'live gateway: could not re-validate a client; its changes are withheld');
        return undefined;
      }
    }
    revoke(socket);
    return null;
  };

  // ---- connections and subscriptions -----------------------------------------------------
  nsp.use((socket, next) => {
    const token = tokenOf(socket.handshake);
    if (!token) return next(connectError('unauthorized'));
    lookup(token).result.then(
      (principal) => {
        if (!principal) {
          forget(token);
          return next(connectError('unauthorized'));
        }
        socket.data.token = token;
        socket.data.revoked = false;
        next();
      },
      (err: unknown) => {
        forget(token);
        if (isAuthError(err)) return next(connectError('unauthorized', (err as { code: string }).code));
        warn('resolve', { err: (err as Error).message }, 'live gateway: could not check a client\'s token');
        next(connectError('unavailable'));
      },
    );
  });

  const reply = (ack: unknown, result: LiveAck) => {
    if (typeof ack === 'function') (ack as Ack)(result);
  };

  nsp.on('connection', (socket) => {
    const { token } = socket.data;
    const entry = auth.get(token);
    if (entry) entry.sockets += 1;
    socket.on('disconnect', () => {
      const e = auth.get(token);
      if (e) e.sockets -= 1;
    });

    socket.on('subscribe', async (topic, ack) => {
      try {
        const parsed = parseTopic(topic);
        if (!parsed.ok) return reply(ack, { ok: false, error: parsed.error });
        // socket.rooms holds the socket's own room as well.
        if (!socket.rooms.has(parsed.topic) && socket.rooms.size - 1 >= maxSubscriptions) {
          return reply(ack, { ok: false, error: `too many subscriptions (at most ${maxSubscriptions})` });
        }
        const principal = await principalOf(socket);
        if (principal === null) return reply(ack, { ok: false, error: 'unauthorized' });
        if (principal === undefined) return reply(ack, { ok: false, error: 'unavailable' });
        await socket.join(parsed.topic);
        reply(ack, { ok: true });
      } catch (err) {
        log.error({ err }, 'live gateway: subscribe failed');
        reply(ack, { ok: false, error: 'internal error' });
      }
    });

    socket.on('unsubscribe', async (topic, ack) => {
      const parsed = parseTopic(topic);
      if (!parsed.ok) return reply(ack, { ok: false, error: parsed.error });
      await socket.leave(parsed.topic);
      reply(ack, { ok: true });
    });
  });

  // ---- delivery ----------------------------------------------------------------------------
  const deliver = async (change: LiveChange, payload: LiveChangePayload): Promise<void> => {
    const targets = new Set<string>();
    for (const room of roomsOf(change.topic, change.id)) {
      for (const sid of nsp.adapter.rooms.get(room) ?? []) targets.add(sid);
    }
    if (targets.size === 0) return;
    const verdicts = await Promise.all([...targets].map(async (sid) => {
      const socket = nsp.sockets.get(sid);
      if (!socket?.connected) return null;
      const principal = await principalOf(socket);
      if (!principal) return null;
      try {
        return (await canRead(principal, change)) === true ? sid : null;
      } catch (err) {
        warn('canRead', { err: (err as Error).message, topic: change.topic }, 'live gateway: canRead failed; change withheld');
        return null;
      }
    }));
    const allowed = verdicts.filter((sid): sid is string => sid !== null);
    // Local: the other instances filter and deliver to their own sockets.
    if (allowed.length > 0) nsp.local.to(allowed).emit('change', payload);
  };

  // One change at a time, in order, whichever instance it came from.
  const inbound = new Subject<{ change: LiveChange; payload: LiveChangePayload }>();
  const pipeline = inbound.pipe(concatMap(async ({ change, payload }) => {
    try {
      await deliver(change, payload);
    } catch (err) {
      log.error({ err, topic: change.topic, id: change.id }, 'live gateway: delivery failed');
    }
  })).subscribe();

  const publish = (change: LiveChange, payload: LiveChangePayload) => {
    if (!redis) return;
    if (redis.pub.status !== 'ready') {
      warn('redis-down', {}, 'live gateway: Redis not ready; a change reached this instance\'s clients only');
      return;
    }
    let message: string;
    try {
      message = JSON.stringify({ from: instanceId, project: change.project ?? null, payload } satisfies Wire);
    } catch (err) {
      log.error({ err, topic: change.topic }, 'live gateway: change data is not JSON');
      return;
    }
    redis.pub.publish(redis.channel, message).catch((err: Error) => warn('redis', { err: err.message }, 'live gateway: could not publish a change'));
  };

  const upstream: Subscription = opts.changes$.subscribe({
    next: (change) => {
      let payload: LiveChangePayload;
      try {
        payload = toPayload(change);
      } catch (err) {
        log.error({ err, topic: change.topic }, 'live gateway: malformed change dropped');
        return;
      }
      publish(change, payload);
      inbound.next({ change, payload });
    },
    error: (err: unknown) => log.error({ err }, 'live gateway: the change stream failed; no more live updates'),
  });

  if (redis) {
    const { sub, pub, channel } = redis;
    sub.on('message', (from: string, message: string) => {
      if (from !== channel) return;
      const wire = decodeWire(message);
      if (!wire) return warn('wire', {}, 'live gateway: ignored a malformed message on the changes channel');
      if (wire.from === instanceId) return;
      const { payload } = wire;
      const change: LiveChange = {
        topic: payload.topic, kind: payload.kind, id: payload.id, data: payload.data, project: wire.project, position: wire.position, at: payload.at,
      };
      inbound.next({ change, payload });
    });
    // Subscribed means the other instances' changes reach us from now on. Redis being
    // away is no reason not to start: ioredis subscribes again when it is back.
    const ready = Promise.all([sub.subscribe(channel), pub.ping()]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      ready,
      new Promise((resolve) => (timer = setTimeout(resolve, REDIS_READY_TIMEOUT_MS))),
    ]).catch((err: Error) => log.warn({ err: err.message }, 'live gateway: Redis unavailable at start'));
    clearTimeout(timer);
    ready.catch(() => undefined);
  }

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      upstream.unsubscribe();
      inbound.complete();
      pipeline.unsubscribe();
      clearInterval(sweep);
      nsp.local.disconnectSockets(true);
      io.engine.close(); // connections that never joined a namespace
      await Promise.allSettled([io.of('/').adapter.close(), nsp.adapter.close()]);
      if (redis) {
        redis.sub.disconnect();
        redis.pub.disconnect();
      }
      auth.clear();
    })());
  // The http server closing takes the gateway with it.
  opts.httpServer.once('close', () => void close());

  return { io, close };
};
