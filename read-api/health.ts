// Liveness and readiness. Thin: the checks themselves are handed in by the composition root.
import { Router } from 'express';

export type Check = () => Promise<void>;
export type CheckResult = { status: 'ok' | 'fail'; response_time_ms: number; error?: string };

const runCheck = async (check: Check, timeoutMs: number): Promise<CheckResult> => {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs))),
    ]);
    return { status: 'ok', response_time_ms: Math.round(performance.now() - started) };
  } catch (err) {
    return { status: 'fail', response_time_ms: Math.round(performance.now() - started), error: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
};

export type HealthOptions = {
  version: string;
  checks: Record<string, Check>;
  /** Extra detail for /health/detailed (projections, workers…). */
  details: () => Promise<Record<string, unknown>>;
  timeoutMs?: number;
};

export const healthRouter = (o: HealthOptions): Router => {
  const router = Router();
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok', service: 'opsledger', version: o.version });
  });
  const ready = async () => {
    const entries = await Promise.all(Object.entries(o.checks).map(async ([k, c]) => [k, await runCheck(c, o.timeoutMs ?? 2000)] as const));
    const checks = Object.fromEntries(entries);
    const ok = entries.every(([, r]) => r.status === 'ok');
    return { ok, body: { status: ok ? 'ready' : 'not_ready', checks } };
  };
  router.get('/health/ready', async (_req, res) => {
    const { ok, body } = await ready();
    res.status(ok ? 200 : 503).json(body);
  });
  router.get('/health/detailed', async (_req, res) => {
    const { ok, body } = await ready();
    const details = await o.details().catch((err: Error) => ({ details_error: err.message }));
    res.status(ok ? 200 : 503).json({ ...body, service: 'opsledger', version: o.version, ...details });
  });
  return router;
};
