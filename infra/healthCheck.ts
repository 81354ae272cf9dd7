// One check of a monitored node (SPEC §5): an HTTP GET or a TCP connect, judged up or
// down. It never throws: whatever goes wrong is the node's outcome, told in one short
// line a person can act on ("connection refused", "HTTP 503 (expected 2xx)"), never a
// stack. Every socket it opens is closed before it resolves, whichever way it ends.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { describeNetworkCode, errorChain, networkErrorCode } from './networkErrors.ts';

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;

export type CheckSpec =
  | { type: 'http'; url: string; expectStatus: number | null; timeoutMs: number }
  | { type: 'tcp'; host: string; port: number; timeoutMs: number };

export type CheckOutcome = {
  status: 'up' | 'down';
  latencyMs: number | null;
  version: string | null;
  metrics: Record<string, number> | null;
  error: string | null;
};

// A node's health body is small; a large one is not read past this (it could be anything).
const MAX_BODY_BYTES = 64 * 1024;
const MAX_METRICS = 50;
const MAX_VERSION_LENGTH = 100;
const METRIC_NAME = /^[A-Za-z0-9_.:-]{1,100}$/;
const MAX_ERROR_LENGTH = 200;
// setTimeout's own ceiling; a larger delay would fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

const down = (error: string, latencyMs: number | null = null): CheckOutcome =>
  ({ status: 'down', latencyMs, version: null, metrics: null, error });

const since = (start: number): number => Math.round((performance.now() - start) * 100) / 100;

// ---- deadline: our timeout and the caller's abort as one signal, remembering which fired --

type Deadline = { signal: AbortSignal; timeoutMs: number; why(): 'timeout' | 'aborted' | null; done(): void };

const deadline = (timeoutMs: number, outer: AbortSignal | undefined): Deadline => {
  const ms = Number.isFinite(timeoutMs) ? Math.min(Math.max(1, Math.round(timeoutMs)), MAX_TIMER_MS) : 1;
  const controller = new AbortController();
  let why: 'timeout' | 'aborted' | null = null;
  const fire = (reason: 'timeout' | 'aborted') => {
    if (why) return;
    why = reason;
    controller.abort();
  };
  const onOuterAbort = () => fire('aborted');
  const timer = setTimeout(() => fire('timeout'), ms);
  if (outer?.aborted) fire('aborted');
  else outer?.addEventListener('abort', onOuterAbort, { once: true });
  return {
    signal: controller.signal,
    timeoutMs: ms,
    why: () => why,
    done() {
      clearTimeout(timer);
      outer?.removeEventListener('abort', onOuterAbort);
    },
  };
};

// ---- errors -------------------------------------------------------------------------------

const shortLine = (s: string): string => {
  const line = s.split('\n')[0]!.trim();
  return line.length > MAX_ERROR_LENGTH ? `${line.slice(0, MAX_ERROR_LENGTH - 1)}…` : line;
};

/** What went wrong, for a person: by error code where we know it, else the innermost message. */
export const describeError = (err: unknown, host?: string): string => {
  const known = describeNetworkCode(networkErrorCode(err), host);
  if (known) return known;
  const messages = errorChain(err).flatMap((e) => (typeof e['message'] === 'string' && e['message'] ? [e['message']] : []));
  // The outermost message of a failed fetch is only "fetch failed"; the innermost says why.
  return shortLine(messages.at(-1) ?? (typeof err === 'string' ? err : 'unknown error'));
};

const failure = (err: unknown, d: Deadline, host?: string): string => {
  const why = d.why();
  switch (why) {
    case 'timeout': return `timed out after ${d.timeoutMs} ms`;
    case 'aborted': return 'aborted';
    case null: return describeError(err, host);
    default: { const _never: never = why; return _never; }
  }
};

// ---- body ---------------------------------------------------------------------------------

/** At most `max` bytes of the body as text; the rest is not read (and its connection is let go). */
const readAtMost = async (res: Response, max: number): Promise<string> => {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.byteLength;
    if (total >= max) {
      await reader.cancel().catch(() => undefined);
      break;
    }
  }
  return new TextDecoder().decode(Buffer.concat(chunks).subarray(0, max));
};

const numbersIn = (o: Record<string, unknown>): Record<string, number> | null => {
  const found: Array<[string, number]> = [];
  for (const [name, value] of Object.entries(o)) {
    if (found.length >= MAX_METRICS) break;
    if (typeof value === 'number' && Number.isFinite(value) && METRIC_NAME.test(name)) found.push([name, value]);
  }
  // Object.fromEntries defines own properties, so a metric named __proto__ stays a metric.
  return found.length > 0 ? Object.fromEntries(found) : null;
};

/** version and metrics from a JSON object body; anything else (HTML, text, an array) gives neither. */
export const parseHealthBody = (text: string): { version: string | null; metrics: Record<string, number> | null } => {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { version: null, metrics: null };
  }
  if (!isObject(body) || Array.isArray(body)) return { version: null, metrics: null };
  const version = typeof body['version'] === 'string' && body['version'].length <= MAX_VERSION_LENGTH ? body['version'] : null;
  const nested = body['metrics'];
  const metrics = isObject(nested) && !Array.isArray(nested) ? numbersIn(nested) : numbersIn(body);
  return { version, metrics };
};

// ---- the checks ---------------------------------------------------------------------------

const httpCheck = async (spec: Extract<CheckSpec, { type: 'http' }>, d: Deadline): Promise<CheckOutcome> => {
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    return down('invalid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return down(`unsupported URL scheme ${url.protocol}`);
  const started = performance.now();
  let res: Response;
  try {
    // redirect 'manual': a redirect is the node's answer, judged like any other status.
    res = await fetch(url, { method: 'GET', redirect: 'manual', signal: d.signal, headers: { accept: 'application/json, */*;q=0.5' } });
  } catch (err) {
    return down(failure(err, d, url.hostname));
  }
  const latencyMs = since(started);
  const ok = spec.expectStatus === null ? res.status >= 200 && res.status < 300 : res.status === spec.expectStatus;
  if (!ok) {
    // An unread body would hold its connection until garbage collection.
    await res.body?.cancel().catch(() => undefined);
    return down(`HTTP ${res.status} (expected ${spec.expectStatus ?? '2xx'})`, latencyMs);
  }
  let text: string;
  try {
    text = await readAtMost(res, MAX_BODY_BYTES);
  } catch (err) {
    // The timeout covers the body too: a node that sends headers and then stalls is not up.
    return down(failure(err, d, url.hostname), latencyMs);
  }
  return { status: 'up', latencyMs, ...parseHealthBody(text), error: null };
};

const tcpCheck = (spec: Extract<CheckSpec, { type: 'tcp' }>, d: Deadline): Promise<CheckOutcome> =>
  new Promise((resolve) => {
    if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65_535) {
      resolve(down(`invalid port ${spec.port}`));
      return;
    }
    const started = performance.now();
    let socket: net.Socket | null = null;
    let settled = false;
    const finish = (outcome: CheckOutcome) => {
      if (settled) return;
      settled = true;
      d.signal.removeEventListener('abort', onAbort);
      socket?.destroy();
      resolve(outcome);
    };
    const onAbort = () => finish(down(failure(null, d)));
    try {
      socket = net.connect({ host: spec.host, port: spec.port });
    } catch (err) {
      finish(down(describeError(err, spec.host)));
      return;
    }
    socket.once('connect', () => finish({ status: 'up', latencyMs: since(started), version: null, metrics: null, error: null }));
    // `on`, not `once`: a second error after the first must not become an uncaught exception.
    socket.on('error', (err) => finish(down(describeError(err, spec.host))));
    d.signal.addEventListener('abort', onAbort, { once: true });
  });

/** Runs one check within spec.timeoutMs; `signal` ends it early (the outcome is then down, `aborted`). */
export const runCheck = async (spec: CheckSpec, opts: { signal?: AbortSignal } = {}): Promise<CheckOutcome> => {
  const d = deadline(spec.timeoutMs, opts.signal);
  try {
    if (d.signal.aborted) return down(failure(null, d));
    switch (spec.type) {
      case 'http': return await httpCheck(spec, d);
      case 'tcp': return await tcpCheck(spec, d);
      default: { const _never: never = spec; return down(`unknown check type ${(_never as { type: string }).type}`); }
    }
  } catch (err) {
    return down(describeError(err));
  } finally {
    d.done();
  }
};
