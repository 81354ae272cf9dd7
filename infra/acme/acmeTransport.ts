// Per-issuance HTTP settings for acme-client, which has no per-client ones: every Client
// sends through one shared axios instance (acme.axios, exported for customising). We add
// one interceptor pair to it, once, that acts only inside `withAcmeTransport` (an
// AsyncLocalStorage scope), so the trust for one CA (e.g. pebble's test CA) is given to
// that issuance's requests only: never NODE_TLS_REJECT_UNAUTHORIZED, never a global agent.
//
// Inside the scope each request also gets:
// - the issuance's AbortSignal (caller's signal + overall timeout);
// - no transport-level retries from acme-client: they sleep 5 s × attempt up to 5 times
//   (75 s for a closed port), ignore the signal and retry even a cancelled request. The
//   protocol-level badNonce retry (HttpClient.signedRequest, up to 5) is untouched; a
//   failed issuance is retried by its caller;
// - a record of the last response's problem document and of socket errors: acme-client
//   throws `new Error(detail)` (the problem's `type` is lost) for ACME errors, and a
//   TypeError about `undefined.config` for every transport error (no response).
import { AsyncLocalStorage } from 'node:async_hooks';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import acme from 'acme-client';
import type { AcmeProblem } from './acmeError.ts';

export type AcmeTransport = {
  signal: AbortSignal;
  /** The problem document of the last response, null if it was none (or there was no response). */
  lastProblem: AcmeProblem | null;
  /** The last socket error (connection refused, TLS verification…) since the last request started. */
  lastSocketError: Error | null;
};

type Scope = AcmeTransport & { httpAgent: HttpAgent; httpsAgent: HttpsAgent };

const scopes = new AsyncLocalStorage<Scope>();

const problemOf = (status: number, data: unknown): AcmeProblem | null => {
  if (status < 400 || typeof data !== 'object' || data === null) return null;
  const { type, detail } = data as { type?: unknown; detail?: unknown };
  return typeof type === 'string' ? { type, detail: typeof detail === 'string' ? detail : '' } : null;
};

acme.axios.interceptors.request.use((config) => {
  const scope = scopes.getStore();
  if (!scope) return config;
  scope.lastProblem = null;
  scope.lastSocketError = null;
  config.httpAgent = scope.httpAgent;
  config.httpsAgent = scope.httpsAgent;
  config.signal = scope.signal;
  // acme-client's retry counter: above its maximum, its interceptor does not retry.
  return Object.assign(config, { retryAttempt: Number.POSITIVE_INFINITY });
});

acme.axios.interceptors.response.use((response) => {
  const scope = scopes.getStore();
  if (scope) scope.lastProblem = problemOf(response.status, response.data);
  return response;
});

/** Node's own createConnection, plus a note of the socket's error (which axios never lets acme-client pass on). */
const recordingSocketErrors = <A extends HttpAgent>(agent: A, scope: { lastSocketError: Error | null }): A => {
  const create = agent.createConnection.bind(agent) as HttpAgent['createConnection'];
  agent.createConnection = (options, callback) => {
    const socket = create(options, callback);
    socket?.once('error', (err: Error) => (scope.lastSocketError = err));
    return socket;
  };
  return agent;
};

/**
 * Runs `fn` with its acme-client requests trusting `caPem` (undefined: the system's
 * roots) and bound to `signal`. Connections are kept alive for the issuance and closed
 * after it.
 */
export const withAcmeTransport = async <T>(opts: { caPem?: string; signal: AbortSignal }, fn: (t: AcmeTransport) => Promise<T>): Promise<T> => {
  const transport: AcmeTransport = { signal: opts.signal, lastProblem: null, lastSocketError: null };
  const scope: Scope = Object.assign(transport, {
    httpAgent: recordingSocketErrors(new HttpAgent({ keepAlive: true }), transport),
    httpsAgent: recordingSocketErrors(new HttpsAgent({ keepAlive: true, ...(opts.caPem === undefined ? {} : { ca: opts.caPem }) }), transport),
  });
  try {
    return await scopes.run(scope, () => fn(scope));
  } finally {
    scope.httpAgent.destroy();
    scope.httpsAgent.destroy();
  }
};
