// One certificate from an ACME CA (RFC 8555) with an HTTP-01 challenge answered from the
// webroot nginx serves, through acme-client. Knows nothing of proxies: the caller keeps
// the account key and the certificate key in its vault and writes the files for nginx.
//
// The steps are done one by one rather than with acme-client's auto(): each failure then
// names its step, the challenge's own problem (`type` + `detail`) is read from the
// authorization, and polling is ours (short, abortable) instead of its 5 s backoff.
// acme-client's own pre-check of the challenge (verifyChallenge: what auto() skips with
// skipChallengeVerification: true) is never called: it would look the domain up through
// the system resolver; the CA's validation is the only one that counts.
import { createPrivateKey } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import acme, { type Authorization, type Client, type Order } from 'acme-client';
import { check, isHostName, isSafePath } from '../nginx/validateNames.ts';
import { AcmeIssuanceError, type AcmeProblem, type AcmeStep } from './acmeError.ts';
import { withAcmeTransport, type AcmeTransport } from './acmeTransport.ts';
import { certificateInfo, type CertificateInfo } from './certificateInfo.ts';
import { removeChallengeFile, writeChallengeFile } from './challengeFile.ts';

export type IssueCertificateOptions = {
  directoryUrl: string;
  /** PEM private key of the ACME account (see createAccountKey); the caller keeps it in its vault. */
  accountKeyPem: string;
  email?: string;
  /** A DNS host name; HTTP-01 cannot validate wildcards or IP addresses. */
  domain: string;
  /** Trust for the ACME server's own HTTPS (pebble's CA); undefined = system trust. */
  caPem?: string;
  /** Writes the HTTP-01 key authorization where nginx serves /.well-known/acme-challenge/<token>. */
  webroot: string;
  signal?: AbortSignal;
  /** For the whole issuance; default DEFAULT_ACME_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Called as each step starts, with the step's name (the same as an error's `step`). */
  onProgress?: (step: string) => void;
};

export type IssuedCertificate = CertificateInfo & {
  /** The certificate's own key: PKCS#8 PEM, ECDSA P-256, fresh for every issuance. */
  keyPem: string;
  /** Leaf first, then the intermediates, as the CA sent them (what nginx's ssl_certificate wants). */
  chainPem: string;
};

export const DEFAULT_ACME_TIMEOUT_MS = 120_000;

/** A new ACME account key: ECDSA P-256 (ES256), PKCS#8 PEM. */
export const createAccountKey = async (): Promise<string> => (await acme.crypto.createPrivateEcdsaKey('P-256')).toString('utf8');

const problemFrom = (error: unknown): AcmeProblem | null => {
  const { type, detail } = (error ?? {}) as { type?: unknown; detail?: unknown };
  return typeof type === 'string' ? { type, detail: typeof detail === 'string' ? detail : '' } : null;
};

/** Re-reads `item` until `settled` (the CA works asynchronously): 250 ms, doubling up to 2 s, until the signal ends it. */
const pollUntil = async <T>(read: () => Promise<T>, settled: (item: T) => boolean, signal: AbortSignal): Promise<T> => {
  for (let delay = 250; ; delay = Math.min(delay * 2, 2000)) {
    const item = await read();
    if (settled(item)) return item;
    await sleep(delay, undefined, { signal });
  }
};

type Flow = { client: Client; opts: IssueCertificateOptions; signal: AbortSignal; transport: AcmeTransport; enter: (step: AcmeStep) => void };

/** Serves the http-01 answer, tells the CA to validate, waits for the authorization's verdict; the file is removed in every case. */
const answerChallenge = async ({ client, opts, signal }: Flow, order: Order, authz: Authorization): Promise<void> => {
  const challenge = authz.challenges.find((c) => c.type === 'http-01');
  if (!challenge) throw new AcmeIssuanceError('challenge', opts.domain, null, 'the CA offered no http-01 challenge');
  const path = await writeChallengeFile(opts.webroot, challenge.token, await client.getChallengeKeyAuthorization(challenge));
  try {
    if (challenge.status === 'pending') await client.completeChallenge(challenge);
    const verdict = await pollUntil(
      async () => (await client.getAuthorizations({ ...order, authorizations: [authz.url] }))[0]!,
      (a) => a.status !== 'pending',
      signal,
    );
    if (verdict.status !== 'valid') {
      const answered = verdict.challenges.find((c) => c.type === 'http-01');
      throw new AcmeIssuanceError('challenge', opts.domain, problemFrom(answered?.error), `the authorization is ${verdict.status}`);
    }
  } finally {
    await removeChallengeFile(path);
  }
};

/**
 * The key is the account: look it up (RFC 8555 §7.3.1, onlyReturnExisting), create it
 * if there is none. Not a plain newAccount: acme-client turns "already exists" into an
 * update with only termsOfServiceAgreed, which pebble refuses as an empty update.
 */
const useAccount = async ({ client, opts, transport }: Flow): Promise<void> => {
  const contact = opts.email ? [`mailto:${opts.email}`] : undefined;
  try {
    await client.createAccount({ onlyReturnExisting: true });
  } catch (err) {
    if (transport.lastProblem?.type !== 'urn:ietf:params:acme:error:accountDoesNotExist') throw err;
    await client.createAccount({ termsOfServiceAgreed: true, ...(contact ? { contact } : {}) });
    return;
  }
  if (contact) await client.updateAccount({ contact });
};

const issue = async (flow: Flow): Promise<IssuedCertificate> => {
  const { client, opts, signal, enter } = flow;
  enter('directory');
  await client.getTermsOfServiceUrl(); // fetches the directory: an unreachable or untrusted CA fails here, by name
  enter('account');
  await useAccount(flow);
  enter('order');
  let order = await client.createOrder({ identifiers: [{ type: 'dns', value: opts.domain }] });
  for (const authz of await client.getAuthorizations(order)) {
    if (authz.status === 'valid') continue; // the CA reused an earlier validation (RFC 8555 §7.1.4)
    enter('challenge');
    await answerChallenge(flow, order, authz);
  }
  enter('finalize');
  const [keyPem, csr] = await acme.crypto.createCsr({ commonName: opts.domain, altNames: [opts.domain] }, await acme.crypto.createPrivateEcdsaKey('P-256'));
  order = await client.finalizeOrder(order, csr);
  order = await pollUntil(() => client.getOrder(order), (o) => o.status !== 'processing' && o.status !== 'ready', signal);
  if (order.status !== 'valid') throw new AcmeIssuanceError('finalize', opts.domain, problemFrom(order.error), `the order is ${order.status}`);
  enter('certificate');
  const chainPem = `${(await client.getCertificate(order)).trim()}\n`;
  const { leaf, ...info } = certificateInfo(chainPem);
  if (!leaf.checkHost(opts.domain)) throw new AcmeIssuanceError('certificate', opts.domain, null, 'the issued certificate does not name the domain');
  if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new AcmeIssuanceError('certificate', opts.domain, null, 'the issued certificate is not for the key we sent');
  return { ...info, keyPem: keyPem.toString('utf8'), chainPem };
};

/** What failed, in the CA's words when it had some (acme-client throws `new Error(detail)`, so the last response's problem is matched by its detail). */
const describeFailure = (err: unknown, step: AcmeStep, opts: IssueCertificateOptions, transport: AcmeTransport, deadline: AbortSignal): AcmeIssuanceError => {
  if (err instanceof AcmeIssuanceError) return err;
  const fail = (why: string, problem: AcmeProblem | null = null) => new AcmeIssuanceError(step, opts.domain, problem, why);
  if (deadline.aborted) return fail(`timed out after ${opts.timeoutMs ?? DEFAULT_ACME_TIMEOUT_MS} ms`);
  if (opts.signal?.aborted) return fail('aborted');
  const message = err instanceof Error ? err.message : String(err);
  const problem = transport.lastProblem;
  // Without a detail acme-client's message is the whole JSON document.
  if (problem && (problem.detail === '' ? message.startsWith('{') : message === problem.detail.replace(/\n/g, ''))) return fail(message, problem);
  // No response at all: acme-client 5.4 reports it as a TypeError about `undefined.config`
  // (an AxiosError if that is ever fixed); the socket knows what happened.
  if (err instanceof TypeError || (err as { isAxiosError?: unknown })?.isAxiosError === true) {
    const socket = transport.lastSocketError as NodeJS.ErrnoException | null;
    if (!socket) return fail(`no response from the ACME server (${message})`);
    return fail(socket.code && !socket.message.includes(socket.code) ? `${socket.message} (${socket.code})` : socket.message);
  }
  return fail(message);
};

/** Issues a certificate for one domain; fails with SSL_ISSUANCE_FAILED (AcmeIssuanceError), or VALIDATION_FAILED for bad arguments. */
export const issueCertificate = async (opts: IssueCertificateOptions): Promise<IssuedCertificate> => {
  check(isHostName(opts.domain), 'domain', opts.domain, 'a DNS host name (HTTP-01 validates neither wildcards nor IP addresses)');
  check(isSafePath(opts.webroot), 'webroot', opts.webroot, 'a safe absolute path');
  check(URL.canParse(opts.directoryUrl) && ['https:', 'http:'].includes(new URL(opts.directoryUrl).protocol), 'directoryUrl', opts.directoryUrl, 'an http(s) URL');
  check(opts.timeoutMs === undefined || (Number.isInteger(opts.timeoutMs) && opts.timeoutMs > 0), 'timeoutMs', opts.timeoutMs, 'a positive integer');
  let keyType: string | undefined;
  try {
    keyType = createPrivateKey(opts.accountKeyPem).asymmetricKeyType;
  } catch {
    // Not the parser's message: it is not needed, and nothing about a key goes into an error.
  }
  if (keyType !== 'ec' && keyType !== 'rsa') throw new AcmeIssuanceError('account', opts.domain, null, 'the account key is not an ECDSA or RSA private key in PEM');
  const deadline = AbortSignal.timeout(opts.timeoutMs ?? DEFAULT_ACME_TIMEOUT_MS);
  const signal = opts.signal ? AbortSignal.any([opts.signal, deadline]) : deadline;
  let step: AcmeStep = 'directory';
  const enter = (next: AcmeStep) => {
    step = next;
    opts.onProgress?.(next);
  };
  return withAcmeTransport({ caPem: opts.caPem, signal }, async (transport) => {
    try {
      signal.throwIfAborted();
      const client = new acme.Client({ directoryUrl: opts.directoryUrl, accountKey: opts.accountKeyPem });
      return await issue({ client, opts, signal, transport, enter });
    } catch (err) {
      throw describeFailure(err, step, opts, transport, deadline);
    }
  });
};
