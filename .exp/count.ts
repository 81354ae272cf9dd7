import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { loadConfig } from '../infra/config.ts';
import { createLogger } from '../infra/logger.ts';
import { startServer } from '../bin/app.ts';

const counts = new Map<string, number>();
for (const m of ['query', 'exec'] as const) {
  const orig = (PGlite.prototype as any)[m];
  (PGlite.prototype as any)[m] = function (text: string, ...rest: unknown[]) {
    const k = String(text).replace(/\s+/g, ' ').slice(0, 90);
    counts.set(k, (counts.get(k) ?? 0) + 1);
    return orig.call(this, text, ...rest);
  };
}
const dir = mkdtempSync(join(tmpdir(), 'cnt-'));
const config = loadConfig({ DATA_DIR: join(dir, 'data'), PORT: '8124', HOST: '127.0.0.1', ADMIN_PASSWORD: 'bench-admin-password-0123', LOG_LEVEL: 'warn',
  ADMIN_RATE_LIMIT_PER_SECOND: '100000', ADMIN_RATE_LIMIT_BURST: '1000000' } as any);
const running = await startServer(config, createLogger(config), { print: () => undefined });
const post = (path: string, body: unknown, token?: string) => fetch(`${running.url}/api/v1${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) }).then((r) => r.json() as any);
const token = (await post('/auth/login', { username: 'admin', password: 'bench-admin-password-0123' })).access_token;
const id = (await post('/nodes', { name: 'p1', address: '127.0.0.1', check: { type: 'push', interval_s: 3600 } }, token)).id;
counts.clear();
const N = 3000;
let n = 0;
const t = performance.now();
await Promise.all(Array.from({ length: 50 }, async () => { while (n < N) { n++; await post(`/nodes/${id}/snapshots`, { status: 'up', latency_ms: 1 }, token); } }));
const el = performance.now() - t;
await new Promise((r) => setTimeout(r, 1000));
console.log('snapshots/s', Math.round(N / el * 1000));
[...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25).forEach(([k, v]) => console.log(v, k));
await running.close();
