// A throwaway ACME CA (pebble, Let's Encrypt's test server) on loopback, with
// pebble-challtestsrv as its only DNS server, so that no name is ever looked up outside
// this machine (SERVICES.md). pebble-challtestsrv answers every A query with 127.0.0.1,
// so pebble's HTTP-01 validation of ANY domain connects to 127.0.0.1:httpPort: give it
// the port of the nginx under test. Pebble forgets everything when it stops.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './postgresServer.ts';

export type PebbleServer = {
  /** https://127.0.0.1:PORT/dir */
  directoryUrl: string;
  /** The CA that signed pebble's own HTTPS listener: what an ACME client must trust. */
  caPem: string;
  /** The root that issues certificates (pebble makes a new one on every start): what a TLS client of an issued certificate must trust. */
  rootCaPem(): Promise<string>;
  /** pebble-challtestsrv's management API (http), e.g. to change DNS answers. */
  challtestsrvUrl: string;
  /** The temp directory with the config, the certificates and both programs' logs. */
  dir: string;
  /** Pebble's log so far (it notes every request, and each nonce it rejects). */
  log(): string;
  stop(): Promise<void>;
};

export type PebbleOptions = {
  /** Where pebble connects for HTTP-01 validations (on 127.0.0.1): the nginx under test. */
  httpPort: number;
  /** Keep pebble's deliberate random badNonce rejections (5 % of nonces) on; default off. */
  noncereject?: boolean;
  /** Lifetime of issued certificates in seconds (pebble's `certificateValidityPeriod`); default pebble's own (5 years). */
  certValiditySeconds?: number;
  /** Names pebble refuses to order (rejectedIdentifier), to test an ACME error before any challenge. */
  domainBlocklist?: string[];
};

export const PEBBLE_BIN = '/usr/bin/pebble';
export const CHALLTESTSRV_BIN = '/usr/bin/pebble-challtestsrv';

/** Pebble's HTTPS listener needs a certificate; the package ships none (SERVICES.md). */
const makeListenerCertificate = (dir: string): { caPem: string; certPath: string; keyPath: string } => {
  const p = (name: string) => join(dir, name);
  const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ecKey, '-days', '2', '-subj', '/CN=opsledger test pebble listener CA', '-keyout', p('ca.key'), '-out', p('ca.pem'),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', ...ecKey, '-subj', '/CN=localhost', '-keyout', p('key.pem'), '-out', p('leaf.csr')]);
  writeFileSync(p('leaf.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2',
    '-extfile', p('leaf.ext'), '-out', p('cert.pem')]);
  return { caPem: readFileSync(p('ca.pem'), 'utf8'), certPath: p('cert.pem'), keyPath: p('key.pem') };
};

/** GET over HTTPS trusting `ca`; null on any failure (for polling). */
const httpsGet = (url: string, ca: string): Promise<{ status: number; body: string } | null> =>
  new Promise((resolve) => {
    const req = request(url, { ca, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve(null));
    });
    req.setTimeout(2000, () => req.destroy());
    req.on('error', () => resolve(null));
    req.end();
  });

/** challtestsrv's DNS server answers (any name resolves to its default IPv4). */
const dnsAnswers = async (port: number): Promise<boolean> => {
  const resolver = new Resolver({ timeout: 500, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  try {
    return (await resolver.resolve4('ready.opl.test')).includes('127.0.0.1');
  } catch {
    return false;
  }
};

const killQuietly = (child: ChildProcess, signal: NodeJS.Signals) => {
  try {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  } catch {
    // Already gone.
  }
};

const exitOf = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));

export const startPebble = async (opts: PebbleOptions): Promise<PebbleServer> => {
  for (const bin of [PEBBLE_BIN, CHALLTESTSRV_BIN]) {
    if (!existsSync(bin)) throw new Error(`${bin} not found: apt-get install -y --no-install-recommends pebble`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'opl-pebble-'));
  const children: ChildProcess[] = [];
  let stopped = false;
  // Synchronous, so that it also runs from process.on('exit') when a test run ends early.
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    process.off('exit', stopSync);
    for (const child of children) killQuietly(child, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', stopSync);

  const logTail = (name: string) => {
    try {
      return readFileSync(join(dir, name), 'utf8').trim().split('\n').slice(-15).join('\n');
    } catch {
      return '(no log)';
    }
  };
  const launch = (bin: string, args: string[], logName: string, env: NodeJS.ProcessEnv) => {
    const log = openSync(join(dir, logName), 'a');
    const child = spawn(bin, args, { cwd: dir, env, stdio: ['ignore', log, log] });
    closeSync(log);
    const state = { exited: null as string | null };
    child.on('exit', (code, signal) => (state.exited = `exit ${code ?? signal}`));
    child.on('error', (err) => (state.exited = err.message));
    children.push(child);
    return state;
  };
  /** Polls `ready` until it is true; fails early, with the program's log, when the program died. */
  const waitReady = async (what: string, state: { exited: string | null }, logName: string, ready: () => Promise<boolean>) => {
    const deadline = Date.now() + 15_000;
    while (!(await ready())) {
      if (state.exited !== null || Date.now() > deadline) {
        const why = `${state.exited ?? 'not ready within 15 s'}:\n${logTail(logName)}`;
        stopSync();
        throw new Error(`${what} did not start (${why})`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  try {
    const { caPem, certPath, keyPath } = makeListenerCertificate(dir);
    const [acmePort, managementPort, tlsPort, dnsPort, challPort] = [
      await freePort(), await freePort(), await freePort(), await freePort(), await freePort(),
    ];
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

    // Only the mock DNS server: the HTTP-01 answers come from nginx, not from challtestsrv.
    const chall = launch(CHALLTESTSRV_BIN, [
      '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '', '-dns01', `127.0.0.1:${dnsPort}`,
      '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${challPort}`,
    ], 'challtestsrv.log', env);
    await waitReady('pebble-challtestsrv', chall, 'challtestsrv.log', () => dnsAnswers(dnsPort));

    const configPath = join(dir, 'pebble-config.json');
    writeFileSync(configPath, JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: certPath,
        privateKey: keyPath,
        httpPort: opts.httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(opts.certValiditySeconds === undefined ? {} : { certificateValidityPeriod: opts.certValiditySeconds }),
        ...(opts.domainBlocklist ? { domainBlocklist: opts.domainBlocklist } : {}),
      },
    }, null, 2));
    const pebble = launch(PEBBLE_BIN, ['-config', configPath, '-dnsserver', `127.0.0.1:${dnsPort}`], 'pebble.log', {
      ...env,
      PEBBLE_VA_NOSLEEP: '1',
      // Unset means pebble's default: 5 % of good nonces rejected as badNonce.
      ...(opts.noncereject ? {} : { PEBBLE_WFE_NONCEREJECT: '0' }),
    });
    const directoryUrl = `https://127.0.0.1:${acmePort}/dir`;
    await waitReady('pebble', pebble, 'pebble.log', async () => {
      const res = await httpsGet(directoryUrl, caPem);
      return res?.status === 200 && res.body.includes('newNonce');
    });

    return {
      directoryUrl,
      caPem,
      challtestsrvUrl: `http://127.0.0.1:${challPort}`,
      dir,
      log: () => (existsSync(join(dir, 'pebble.log')) ? readFileSync(join(dir, 'pebble.log'), 'utf8') : ''),
      async rootCaPem() {
        const res = await httpsGet(`https://127.0.0.1:${managementPort}/roots/0`, caPem);
        if (res?.status !== 200 || !res.body.includes('BEGIN CERTIFICATE')) throw new Error(`pebble /roots/0 answered ${res?.status ?? 'nothing'}`);
        return res.body;
      },
      async stop() {
        if (stopped) return;
        for (const child of children) killQuietly(child, 'SIGTERM');
        const gone = Promise.all(children.map(exitOf));
        await Promise.race([gone, new Promise((r) => setTimeout(r, 3000).unref())]);
        stopSync();
      },
    };
  } catch (err) {
    stopSync();
    throw err;
  }
};
