// Signed webhooks (SPEC §5 alerts): how a body is signed and checked, and one POST that
// never throws and never waits longer than its timeout. workers/alertNotifier.ts sends
// with it; receivers (and our docs and tests) check with verifyWebhook.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { describeNetworkCode, networkErrorCode } from './networkErrors.ts';

/** The headers of every delivery, lower-case, so that senders, docs and tests spell them alike. */
export const WEBHOOK_HEADERS = {
  event: 'x-opsledger-event',
  /** The delivery id: the same on every retry of one delivery, so receivers dedupe on it. */
  delivery: 'x-opsledger-delivery',
  /** Unix seconds when this attempt was signed; part of what is signed. */
  timestamp: 'x-opsledger-timestamp',
  /** `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. */
  signature: 'x-opsledger-signature',
} as const;

export const WEBHOOK_USER_AGENT = 'opsledger-webhook/1';

/** How much of a response is read (and thrown away) at most: the status is all we need. */
export const MAX_RESPONSE_BYTES = 16 * 1024;

const PREFIX = 'sha256=';
const SIGNATURE = /^sha256=[0-9a-f]{64}$/i;

/**
 * `sha256=<hex>` over `${timestamp}.${body}`: the timestamp is signed with the body so that
 * a captured request cannot be replayed later under a fresh timestamp.
 */
export const signWebhook = (secret: string, timestamp: number, body: string): string => {
  if (!Number.isSafeInteger(timestamp)) throw new TypeError('a webhook timestamp must be an integer (unix seconds)');
  return PREFIX + createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex');
};

/**
 * Whether `signature` is signWebhook(secret, timestamp, body); false for anything malformed.
 * Compared in constant time. Receivers should also refuse timestamps far from their clock
 * (a few minutes) and dedupe on the delivery id: a signature alone does not stop a replay.
 */
export const verifyWebhook = (secret: string, timestamp: number, body: string, signature: string): boolean => {
  if (typeof signature !== 'string' || !SIGNATURE.test(signature) || !Number.isSafeInteger(timestamp)) return false;
  const expected = Buffer.from(signWebhook(secret, timestamp, body).slice(PREFIX.length), 'hex');
  const given = Buffer.from(signature.slice(PREFIX.length), 'hex');
  // Both are 32 bytes here (the pattern checked the length), as timingSafeEqual requires.
  return timingSafeEqual(expected, given);
};

/** Every header of one delivery attempt, signature included. */
export const webhookHeaders = (o: { secret: string; event: string; deliveryId: string; timestamp: number; body: string }): Record<string, string> => ({
  'content-type': 'application/json',
  'user-agent': WEBHOOK_USER_AGENT,
  [WEBHOOK_HEADERS.event]: o.event,
  [WEBHOOK_HEADERS.delivery]: o.deliveryId,
  [WEBHOOK_HEADERS.timestamp]: String(o.timestamp),
  [WEBHOOK_HEADERS.signature]: signWebhook(o.secret, o.timestamp, o.body),
});

export type WebhookRequest = {
  url: string;
  body: string;
  headers: Record<string, string>;
  /** Covers everything: connecting, the status line and the (bounded) body read. */
  timeoutMs: number;
  signal?: AbortSignal;
};

/** `ok` for a 2xx; `status` when a response arrived; `error` short and free of the URL and its secrets. */
export type WebhookResult = { ok: boolean; status: number | null; error: string | null };

/**
 * The origin only (scheme, host, port), for log lines: user info, query and even the path
 * can hold credentials (many services put a token in the path).
 */
export const safeUrlForLogs = (url: string): string => {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
};

/** POSTs once. Never throws, never follows redirects, and gives up after `timeoutMs`. */
export const postWebhook = async (req: WebhookRequest): Promise<WebhookResult> => {
  const target = parseTarget(req.url);
  if (typeof target === 'string') return { ok: false, status: null, error: target };
  const headers = { ...req.headers };
  // fetch refuses URLs with credentials; send them the way a browser would instead.
  if (target.authorization && !Object.keys(headers).some((h) => h.toLowerCase() === 'authorization')) {
    headers['authorization'] = target.authorization;
  }

  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, req.timeoutMs);
  timer.unref();
  const onAbort = () => controller.abort();
  req.signal?.addEventListener('abort', onAbort, { once: true });
  if (req.signal?.aborted) controller.abort();

  let status: number | null = null;
  try {
    const res = await fetch(target.url, { method: 'POST', body: req.body, headers, redirect: 'manual', signal: controller.signal });
    status = res.status;
    await drain(res);
    return fromStatus(status);
  } catch (err) {
    // The receiver answered before the body read failed or timed out: its status decides.
    if (status !== null) return fromStatus(status);
    if (timedOut) return { ok: false, status: null, error: `timed out after ${req.timeoutMs} ms` };
    if (req.signal?.aborted) return { ok: false, status: null, error: 'aborted' };
    return { ok: false, status: null, error: describeFailure(err) };
  } finally {
    clearTimeout(timer);
    req.signal?.removeEventListener('abort', onAbort);
  }
};

const fromStatus = (status: number): WebhookResult =>
  status >= 200 && status < 300 ? { ok: true, status, error: null } : { ok: false, status, error: `HTTP ${status}` };

type Target = { url: string; authorization: string | null };

const parseTarget = (raw: string): Target | string => {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'invalid URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'unsupported URL scheme (http or https only)';
  let authorization: string | null = null;
  if (url.username !== '' || url.password !== '') {
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    authorization = `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return { url: url.href, authorization };
};

/** Reads at most MAX_RESPONSE_BYTES and drops the rest, so that the connection can end or be reused. */
const drain = async (res: Response): Promise<void> => {
  if (!res.body) return;
  const reader = res.body.getReader();
  try {
    let seen = 0;
    while (seen < MAX_RESPONSE_BYTES) {
      const { done, value } = await reader.read();
      if (done) return;
      seen += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
};

// By code only (infra/networkErrors.ts): fetch's own messages repeat the URL, credentials
// and query included.
const describeFailure = (err: unknown): string => {
  const code = networkErrorCode(err);
  const known = describeNetworkCode(code);
  if (known) return known;
  if (err instanceof Error && err.cause instanceof Error && err.cause.message === 'bad port') return 'port not allowed';
  return code !== null && /^[A-Z0-9_]{2,40}$/.test(code) ? `request failed (${code})` : 'request failed';
};
