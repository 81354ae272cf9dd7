// Proxy applies (issue 6): PUT /proxies/{name} through the running app (child process,
// embedded PGlite, a throwaway nginx on loopback) against a bare `nginx -t && nginx -s
// reload` on the same configuration, measured alternately in the same run.
//   - 200 proxies created one after another: each PUT waits for its apply (health check of
//     the upstream, render, atomic write, nginx -t on the whole configuration, reload, the
//     outcome recorded) and answers with it; the bare pair runs right after each, on the
//     configuration as it then is.
//   - one proxy among the 200 re-applied (its upstream port flips, so each PUT is a real
//     change), alternating with the bare pair.
// Per-apply time, medians; rounds are consecutive slices of the sequence.
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startNginxServer } from '../test/support/nginxServer.ts';
import { startApp } from './api.ts';
import { median, type BenchContext, type BenchRow } from './harness.ts';

const run = (bin: string, args: string[]) => new Promise<void>((resolve, reject) => {
  execFile(bin, args, { encoding: 'utf8' }, (err, _out, stderr) => (err ? reject(new Error(`${bin} ${args.join(' ')}: ${stderr || err.message}`)) : resolve()));
});

/** Splits `xs` into `n` consecutive slices and takes each one's median. */
const sliceMedians = (xs: number[], n: number): number[] => {
  const size = Math.ceil(xs.length / n);
  return Array.from({ length: n }, (_, i) => median(xs.slice(i * size, (i + 1) * size))).filter((x) => !Number.isNaN(x));
};

export const proxyApply = async (ctx: BenchContext): Promise<BenchRow[]> => {
  const count = ctx.quick ? 40 : 200;
  const reapplies = ctx.quick ? 20 : 60;
  const nginx = await startNginxServer();
  const upstream = createServer((req, res) => res.writeHead(200).end(req.url === '/health' ? 'ok' : 'upstream'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upstreamPort = (upstream.address() as AddressInfo).port;
  const app = await startApp({
    NGINX_BIN: nginx.nginxBin, NGINX_CONF: nginx.confPath, NGINX_SITES_DIR: nginx.sitesDir, PROXY_LISTEN_ADDRESS: '127.0.0.1',
    PROXY_HTTP_PORT: String(nginx.httpPort), PROXY_HTTPS_PORT: String(nginx.httpsPort), ACME_WEBROOT: nginx.acmeWebroot,
    CERTS_DIR: join(nginx.prefix, 'certs'),
  });
  const bare = async () => {
    const t0 = performance.now();
    await run(nginx.nginxBin, ['-c', nginx.confPath, '-t']);
    await run(nginx.nginxBin, ['-c', nginx.confPath, '-s', 'reload']);
    return performance.now() - t0;
  };
  const put = async (name: string, port: number, expected: number) => {
    const t0 = performance.now();
    const res = await fetch(`${app.url}/api/v1/proxies/${name}`, {
      method: 'PUT', headers: { authorization: `Bearer ${app.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ domain: `${name}.bench.test`, upstream_host: '127.0.0.1', upstream_port: port }),
    });
    const body = await res.json() as { status?: string; detail?: string };
    const ms = performance.now() - t0;
    if (res.status !== expected || body.status !== 'active') throw new Error(`PUT ${name}: ${res.status} ${JSON.stringify(body)}`);
    return ms;
  };
  try {
    // One of each first: connections, JIT, the first nginx worker generation.
    await put('warmup', upstreamPort, 201);
    await bare();
    const created = { ours: [] as number[], bare: [] as number[] };
    for (let i = 0; i < count; i++) {
      created.ours.push(await put(`site-${i}`, upstreamPort, 201));
      created.bare.push(await bare());
      if ((i + 1) % 50 === 0) ctx.log(`  ${i + 1}/${count} proxies applied`);
    }
    // Re-apply one among them: a second port on the same upstream makes every PUT a real change.
    const other = createServer((req, res) => res.writeHead(200).end(req.url === '/health' ? 'ok' : 'other'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const ports = [(other.address() as AddressInfo).port, upstreamPort];
    const target = `site-${count >> 1}`;
    const again = { ours: [] as number[], bare: [] as number[] };
    for (let j = 0; j < reapplies; j++) {
      again.ours.push(await put(target, ports[j % 2]!, 200));
      again.bare.push(await bare());
    }
    other.close();
    const sites = count + 1;
    const row = (metric: string, m: { ours: number[]; bare: number[] }, note: string): BenchRow => ({
      bench: 'proxyApply', metric, unit: 'ms', baselineLabel: 'bare `nginx -t && nginx -s reload`, same configuration',
      baseline: median(m.bare), ours: median(m.ours), goal: { kind: 'atMost', ratio: 1.5 },
      rounds: { baseline: sliceMedians(m.bare, ctx.rounds), ours: sliceMedians(m.ours, ctx.rounds) }, note,
    });
    const common = 'App: child process, embedded PGlite, require_healthy on (the upstream\'s /health is fetched first); the time is the whole PUT, ' +
      'which answers once the outcome is recorded and projected. Rounds are consecutive slices of the sequence.';
    return [
      row(`PUT one new proxy, ${count} one after another (1 → ${sites} sites)`, created,
        `${common} Bare pair run after each PUT on the configuration as it then was; median over all ${count}.`),
      row(`PUT re-applying one proxy among ${sites} (upstream port flips, ${reapplies} times)`, again, `${common} Alternating with the bare pair.`),
    ];
  } finally {
    await app.stop();
    upstream.close();
    await nginx.stop();
  }
};
