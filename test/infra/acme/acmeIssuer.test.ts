// issueCertificate against a real ACME CA (pebble, test/support/pebbleServer.ts) that
// validates HTTP-01 for real through a real nginx (test/support/nginxServer.ts): pebble's
// DNS answers 127.0.0.1 for every name, so it fetches the challenge from nginx's port.
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import acme from 'acme-client';
import { expect } from 'chai';
import type { AcmeIssuanceError } from '../../../infra/acme/acmeError.ts';
import { createAccountKey, issueCertificate, type IssueCertificateOptions, type IssuedCertificate } from '../../../infra/acme/acmeIssuer.ts';
import { splitChain } from '../../../infra/acme/certificateInfo.ts';
import { applySite, type NginxTarget } from '../../../infra/nginx/nginxApplier.ts';
import { renderServerBlock } from '../../../infra/nginx/renderServerBlock.ts';
import { expectCode } from '../../support/expectCode.ts';
import { startNginxServer, type NginxServer } from '../../support/nginxServer.ts';
import { startPebble, type PebbleServer } from '../../support/pebbleServer.ts';
import { freePort } from '../../support/postgresServer.ts';
import { viaTls } from '../../support/proxyHelpers.ts';

const DOMAIN = 'app1.opl.test';
const BLOCKED = 'blocked.opl.test';

const challengeFiles = (webroot: string): string[] => {
  try {
    return readdirSync(join(webroot, '.well-known', 'acme-challenge'));
  } catch {
    return [];
  }
};

describe('acmeIssuer (real pebble, real nginx)', () => {
  let nginx: NginxServer;
  let pebble: PebbleServer;
  let upstream: Server;
  let target: NginxTarget;
  let accountKeyPem: string;
  let issued: IssuedCertificate;

  const site = (tls: { certPath: string; keyPath: string } | null) =>
    nginx.afterReload(() => applySite({
      ...target,
      name: 'app1',
      content: renderServerBlock({
        name: 'app1', domains: [DOMAIN], upstream: { host: '127.0.0.1', port: (upstream.address() as AddressInfo).port, scheme: 'http' },
        websockets: false, listen: { address: '127.0.0.1', httpPort: nginx.httpPort, httpsPort: nginx.httpsPort }, acmeWebroot: nginx.acmeWebroot, tls,
      }),
    }));
  const issue = (over: Partial<IssueCertificateOptions> = {}, ca: PebbleServer = pebble) =>
    issueCertificate({ directoryUrl: ca.directoryUrl, caPem: ca.caPem, accountKeyPem, domain: DOMAIN, webroot: nginx.acmeWebroot, ...over });

  before(async () => {
    nginx = await startNginxServer();
    pebble = await startPebble({ httpPort: nginx.httpPort, domainBlocklist: [BLOCKED] });
    upstream = createServer((req, res) => res.end(`upstream saw ${req.headers.host} ${req.url}`));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    target = { sitesDir: nginx.sitesDir, nginxBin: nginx.nginxBin, confPath: nginx.confPath, prefix: nginx.prefix, errorLog: nginx.errorLog };
    accountKeyPem = await createAccountKey();
    await site(null);
  });
  after(async () => {
    await pebble?.stop();
    await nginx?.stop();
    upstream?.close();
  });

  it('issues a certificate after a real HTTP-01 validation served by nginx', async () => {
    const steps: string[] = [];
    issued = await issue({ email: 'ops@opl.test', onProgress: (s) => steps.push(s) });
    expect(steps).to.deep.equal(['directory', 'account', 'order', 'challenge', 'finalize', 'certificate']);
    // pebble fetched the key authorization from nginx (its validations come from 127.0.0.1).
    expect(readFileSync(join(nginx.prefix, 'logs', 'access.log'), 'utf8')).to.match(/"GET \/\.well-known\/acme-challenge\/[A-Za-z0-9_-]+ HTTP\/1\.1" 200 /);
    expect(challengeFiles(nginx.acmeWebroot)).to.deep.equal([]);

    expect(Date.parse(issued.notBefore)).to.be.below(Date.parse(issued.expiry));
    expect(new Date(issued.notBefore).toISOString()).to.equal(issued.notBefore);
    expect(issued.serial).to.match(/^[0-9a-f]+$/);
    expect(issued.issuer).to.match(/^Pebble Intermediate CA [0-9a-f]+$/);
    const [leaf, intermediate, ...rest] = splitChain(issued.chainPem).map((pem) => new X509Certificate(pem));
    expect(rest).to.have.length(0);
    expect(leaf!.checkHost(DOMAIN)).to.equal(DOMAIN);
    expect(leaf!.serialNumber.toLowerCase()).to.equal(issued.serial);
    expect(leaf!.verify(intermediate!.publicKey)).to.equal(true);
    expect(intermediate!.verify(new X509Certificate(await pebble.rootCaPem()).publicKey)).to.equal(true);
    const key = createPrivateKey(issued.keyPem);
    expect(leaf!.checkPrivateKey(key)).to.equal(true);
    expect(key.asymmetricKeyDetails).to.deep.equal({ namedCurve: 'prime256v1' });
  });

  it('the issued certificate serves TLS through nginx, trusted through pebble\'s issuing root, to the upstream', async () => {
    const certDir = join(nginx.prefix, 'certs');
    mkdirSync(certDir, { recursive: true, mode: 0o700 });
    const [certPath, keyPath] = [join(certDir, `${issued.serial}.crt`), join(certDir, `${issued.serial}.key`)];
    writeFileSync(certPath, issued.chainPem, { mode: 0o644 });
    writeFileSync(keyPath, issued.keyPem, { mode: 0o600 });
    expect(statSync(keyPath).mode & 0o777).to.equal(0o600);
    await site({ certPath, keyPath });
    const res = await viaTls(nginx.httpsPort, DOMAIN, await pebble.rootCaPem(), '/over-tls');
    expect(res.status).to.equal(200);
    expect(res.body).to.equal(`upstream saw ${DOMAIN} /over-tls`);
    expect(res.serial.toLowerCase()).to.equal(issued.serial);
    // The site's HTTP side still answers challenges: renewals validate the same way.
    const renewed = await issue();
    expect(renewed.serial).not.to.equal(issued.serial);
    expect(renewed.keyPem).not.to.equal(issued.keyPem); // a fresh key per issuance
  });

  it('a domain nginx does not serve: SSL_ISSUANCE_FAILED with the CA\'s problem, and no challenge file left', async () => {
    const err = (await expectCode(issue({ domain: 'nowhere.opl.test' }), 'SSL_ISSUANCE_FAILED')) as AcmeIssuanceError;
    expect(err.details).to.include({ step: 'challenge', acme_type: 'urn:ietf:params:acme:error:unauthorized' });
    expect(err.details!.acme_detail).to.match(/404/);
    expect(err.message).to.match(/^ACME challenge for nowhere\.opl\.test failed: urn:ietf:params:acme:error:unauthorized: .*404/);
    expect(challengeFiles(nginx.acmeWebroot)).to.deep.equal([]);
  });

  it('an ACME error answered to a request (not a challenge) keeps its type too: a name the CA\'s policy refuses', async () => {
    const err = (await expectCode(issue({ domain: BLOCKED }), 'SSL_ISSUANCE_FAILED')) as AcmeIssuanceError;
    expect(err.details).to.include({ step: 'order', acme_type: 'urn:ietf:params:acme:error:rejectedIdentifier' });
    expect(err.message).to.match(/^ACME order for blocked\.opl\.test failed: urn:ietf:params:acme:error:rejectedIdentifier: ./);
  });

  it('an unreachable directory fails at once (no transport retries), naming the socket error', async () => {
    const started = Date.now();
    const err = await expectCode(issue({ directoryUrl: `https://127.0.0.1:${await freePort()}/dir` }), 'SSL_ISSUANCE_FAILED');
    expect(Date.now() - started).to.be.below(3000);
    expect(err.details).to.deep.include({ step: 'directory', acme_type: null });
    expect(err.message).to.match(/ECONNREFUSED/);
  });

  it('trust is per issuance: at the same time, one issuance trusts pebble\'s CA and one (system trust) refuses it', async () => {
    const [trusted, untrusted] = await Promise.allSettled([issue(), issue({ caPem: undefined })]);
    expect(trusted.status).to.equal('fulfilled');
    const err = (untrusted as PromiseRejectedResult).reason as AcmeIssuanceError;
    expect(err.code).to.equal('SSL_ISSUANCE_FAILED');
    expect(err.details).to.include({ step: 'directory' });
    expect(err.message).to.match(/certificate/);
  });

  it('an aborted signal or an exhausted timeout ends the issuance with SSL_ISSUANCE_FAILED', async () => {
    expect((await expectCode(issue({ signal: AbortSignal.abort() }), 'SSL_ISSUANCE_FAILED')).message).to.match(/aborted$/);
    expect((await expectCode(issue({ timeoutMs: 1 }), 'SSL_ISSUANCE_FAILED')).message).to.match(/timed out after 1 ms$/);
    expect(challengeFiles(nginx.acmeWebroot)).to.deep.equal([]);
  });

  it('bad arguments: VALIDATION_FAILED for the domain, SSL_ISSUANCE_FAILED for an unusable account key (not echoed)', async () => {
    for (const domain of ['*.opl.test', '127.0.0.1', 'a b.test', '../x']) await expectCode(issue({ domain }), 'VALIDATION_FAILED');
    await expectCode(issue({ webroot: 'relative/dir' }), 'VALIDATION_FAILED');
    await expectCode(issue({ timeoutMs: 0 }), 'VALIDATION_FAILED');
    const badKey = '-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n-----END PRIVATE KEY-----\n';
    const ed25519 = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    for (const key of [badKey, ed25519]) {
      const err = await expectCode(issue({ accountKeyPem: key }), 'SSL_ISSUANCE_FAILED');
      expect(err.details).to.include({ step: 'account' });
      const said = JSON.stringify({ message: err.message, details: err.details });
      for (const line of key.split('\n').slice(1, -2)) expect(said).not.to.include(line);
    }
  });

  it('nginx\'s unprivileged workers can read the challenge even under umask 077 (directories 0755, file 0644)', async () => {
    rmSync(join(nginx.acmeWebroot, '.well-known'), { recursive: true, force: true });
    const previous = process.umask(0o077);
    try {
      await issue({ accountKeyPem: await createAccountKey() }); // a new account: no reused validation
    } finally {
      process.umask(previous);
    }
    expect(statSync(join(nginx.acmeWebroot, '.well-known')).mode & 0o777).to.equal(0o755);
    expect(statSync(join(nginx.acmeWebroot, '.well-known', 'acme-challenge')).mode & 0o777).to.equal(0o755);
    expect(challengeFiles(nginx.acmeWebroot)).to.deep.equal([]);
  });

  it('a webroot that cannot take the challenge file fails at the challenge step', async () => {
    const webroot = join(nginx.prefix, 'blocked-webroot');
    mkdirSync(webroot);
    writeFileSync(join(webroot, '.well-known'), 'a file where the directory should be');
    // A new account: pebble may reuse an account's earlier validation and skip the challenge.
    const err = await expectCode(issue({ webroot, accountKeyPem: await createAccountKey() }), 'SSL_ISSUANCE_FAILED');
    expect(err.details).to.deep.include({ step: 'challenge', acme_type: null });
    expect(err.message).to.match(/ENOTDIR/);
  });

  describe('a CA that rejects 5 % of good nonces (pebble\'s default) and issues 10-minute certificates', () => {
    let noisy: PebbleServer;
    const retries: string[] = [];

    before(async () => {
      noisy = await startPebble({ httpPort: nginx.httpPort, noncereject: true, certValiditySeconds: 600 });
      // acme-client logs its badNonce retries: the only place they show (pebble logs none).
      acme.setLogger((line: string) => {
        if (/invalid nonce/i.test(line)) retries.push(line);
      });
    });
    after(async () => {
      acme.setLogger(() => undefined);
      await noisy?.stop();
    });

    it('every issuance succeeds: acme-client retries badNonce with the nonce from the error', async () => {
      let count = 0;
      // At least 3, and on until a rejection has happened (≈ 0.5 per issuance; 40 without one: < 1e-9).
      while (count < 3 || (retries.length === 0 && count < 40)) {
        const cert = await issue({}, noisy);
        expect(cert.serial).to.match(/^[0-9a-f]+$/);
        count += 1;
      }
      expect(retries, 'no badNonce was ever retried').not.to.deep.equal([]);
    });

    it('certificateValidityPeriod shortens the certificates\' lifetime (for renewal tests)', async () => {
      const cert = await issue({}, noisy);
      const lifetime = (Date.parse(cert.expiry) - Date.parse(cert.notBefore)) / 1000;
      expect(lifetime).to.be.within(598, 600);
    });
  });
});
