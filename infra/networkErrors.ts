// Network failures in words a person can act on, shared by everything that makes outbound
// connections (health checks, webhooks). By error code only: fetch's own messages repeat
// the URL, credentials and query included.

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;

/** The error and what it wraps: fetch puts the socket's error in `cause`, a dual-stack connect in an AggregateError. */
export const errorChain = (err: unknown): Record<string, unknown>[] => {
  const out: Record<string, unknown>[] = [];
  const visit = (e: unknown, depth: number) => {
    if (!isObject(e) || depth > 5) return;
    out.push(e);
    if (Array.isArray(e['errors'])) for (const inner of e['errors']) visit(inner, depth + 1);
    visit(e['cause'], depth + 1);
  };
  visit(err, 0);
  return out;
};

/** The first error code along the chain (ECONNREFUSED, UND_ERR_SOCKET…), or null. */
export const networkErrorCode = (err: unknown): string | null => {
  for (const e of errorChain(err)) if (typeof e['code'] === 'string' && e['code'] !== '') return e['code'];
  return null;
};

const TEXT: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by the server',
  EPIPE: 'connection closed by the server',
  UND_ERR_SOCKET: 'connection closed by the server',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'DNS lookup failed (temporary)',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connect timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connect timed out',
  UND_ERR_HEADERS_TIMEOUT: 'timed out waiting for the response headers',
  ERR_INVALID_URL: 'invalid URL',
};

/** The words for a known code (`host` named where it helps), `TLS error (CODE)` for certificate trouble, else null. */
export const describeNetworkCode = (code: string | null, host?: string): string | null => {
  if (code === null) return null;
  if (host && (code === 'ENOTFOUND' || code === 'EAI_AGAIN')) return `${TEXT[code]}: ${host}`;
  if (TEXT[code]) return TEXT[code]!;
  if (/CERT|TLS|SSL/.test(code)) return `TLS error (${code})`;
  return null;
};
