// A restart of Opsledger in the middle of an apply (SPEC §7): `opsledger serve` is killed
// (SIGKILL) after it wrote a proxy's new server block and while `nginx -t` runs on it.
// nginx must still run its last tested configuration, and the next start must finish the
// apply so that the proxy's status is what nginx really serves.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { startApi, type TestApi } from '../support/apiClient.ts';
import { withServeChild } from '../support/serveChild.ts';
import { freshDatabaseUrl } from '../support/databases.ts';
import { startNginxServer, type NginxServer } from '../support/nginxServer.ts';
import { waitFor } from '../support/waitFor.ts';
import { nginxEnv, upstream, viaNginx, type Upstream } from '../support/proxyHelpers.ts';

describe('proxies across a crash in the middle of an apply', function () {
  this.timeout(120_000);
  let nginx: NginxServer;
  let a: Upstream;
  let b: Upstream;
  let api: TestApi | null = null;
  let scratch: string;

  before(async () => {
    nginx = await startNginxServer();
    [a, b] = await Promise.all([upstream('upstream-a'), upstream('upstream-b')]);
    scratch = mkdtempSync(join(tmpdir(), 'opl-crash-'));
  });
  after(async () => {
    await api?.close();
    await Promise.all([a?.close(), b?.close()]);
    await nginx?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  /**
   * Starts `serve` with an nginx whose `-t` can be held, creates the proxy on upstream a,
   * then updates it to upstream b and SIGKILLs the process while `nginx -t` runs on the new
   * block. Returns what the restarted instance needs, and the block nginx last tested.
   */
  const crashMidApply = async (name: string, domain: string) => {
    const hold = join(scratch, `hold-${name}`);
    const wrapper = join(scratch, `nginx-${name}`);
    writeFileSync(wrapper, [
      '#!/bin/sh',
      `case " $* " in *" -t "*) if [ -e '${hold}' ]; then : > '${hold}.entered'; while [ -e '${hold}' ]; do sleep 0.05; done; fi;; esac`,
      `exec '${nginx.nginxBin}' "$@"`, '',
    ].join('\n'));
    chmodSync(wrapper, 0o755);
    const keys = { SECRET_KEY: randomBytes(32).toString('hex'), SECRETS_KEY: randomBytes(32).toString('hex') };
    const env = nginxEnv(nginx, join(scratch, 'certs'));
    const databaseUrl = await freshDatabaseUrl();
    const tested = await withServeChild({ ...keys, ...env, NGINX_BIN: wrapper, DATABASE_URL: databaseUrl }, async ({ admin: first, kill }) => {
      const created = await nginx.afterReload(() => first.put(`/proxies/${name}`, { domain, upstream_host: '127.0.0.1', upstream_port: a.port }));
      expect(created.status, created.text).to.equal(201);
      expect((await viaNginx(nginx.httpPort, domain)).body).to.equal('upstream-a');
      const applied = readFileSync(join(nginx.sitesDir, `${name}.conf`), 'utf8');

      writeFileSync(hold, '');
      void first.put(`/proxies/${name}`, { domain, upstream_host: '127.0.0.1', upstream_port: b.port }).catch(() => undefined);
      await waitFor(() => existsSync(`${hold}.entered`), 'the apply to reach nginx -t');
      // The new block is on disk, untested; nginx still runs the old one.
      expect(readFileSync(join(nginx.sitesDir, `${name}.conf`), 'utf8')).not.to.equal(applied);
      await kill();
      return applied;
    });
    rmSync(hold);
    expect((await viaNginx(nginx.httpPort, domain)).body).to.equal('upstream-a');
    return { env: { ...env, ...keys, DATABASE_URL: databaseUrl }, tested };
  };

  it('leaves nginx on its tested configuration, and the next start applies the proxy and reports it truly', async () => {
    const name = 'crashy';
    const domain = 'crashy.opl.test';
    const { env } = await crashMidApply(name, domain);
    api = await startApi({ flavour: 'postgres', env });
    const proxy = await waitFor(async () => {
      const p = (await api!.admin.get(`/proxies/${name}`)).body;
      return p.status === 'active' && p.upstream_port === b.port ? p : null;
    }, 'the restarted instance to apply the proxy', 30_000);
    expect(proxy.last_error).to.equal(null);
    await waitFor(async () => (await viaNginx(nginx.httpPort, domain)).body === 'upstream-b', 'nginx to serve the new upstream');
    expect(nginx.run(['-t']).status).to.equal(0);
    await api.close();
    api = null;
  });

  it('when the interrupted apply fails after the restart, puts back the block nginx last tested (not the one the crash left)', async () => {
    const name = 'crashy-bad';
    const domain = 'crashy-bad.opl.test';
    const { env, tested } = await crashMidApply(name, domain);
    // While it was down, the configuration broke: the retried apply must fail its test.
    const broken = join(nginx.sitesDir, 'zz-broken.conf');
    writeFileSync(broken, 'this_is_not_a_directive;\n');
    try {
      api = await startApi({ flavour: 'postgres', env });
      const proxy = await waitFor(async () => {
        const p = (await api!.admin.get(`/proxies/${name}`)).body;
        return p.status === 'failed' ? p : null;
      }, 'the retried apply to fail', 30_000);
      expect(proxy.last_error.code).to.equal('NGINX_TEST_FAILED');
      expect(readFileSync(join(nginx.sitesDir, `${name}.conf`), 'utf8')).to.equal(tested);
      expect((await viaNginx(nginx.httpPort, domain)).body).to.equal('upstream-a');
    } finally {
      rmSync(broken);
    }
    const retried = await nginx.afterReload(() => api!.admin.put(`/proxies/${name}`, { domain, upstream_host: '127.0.0.1', upstream_port: b.port }));
    expect(retried.status, retried.text).to.equal(200);
    expect(retried.body.status).to.equal('active');
    expect((await viaNginx(nginx.httpPort, domain)).body).to.equal('upstream-b');
  });
});
