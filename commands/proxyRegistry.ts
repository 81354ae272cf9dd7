// Reads a proxy registry for POST /proxies/sync: a JSON list of proxies, each a PUT body
// plus `name`, bare or as `{proxies: [...]}`. The registry is not trusted: the answer is
// bounded in time and size, and every entry is checked like a PUT (a bad one is skipped
// with its reason, the rest still sync).
import { z } from 'zod';
import { AppError } from '../infra/errors.ts';
import { describeError } from '../infra/healthCheck.ts';
import { ProxyName } from '../infra/nginx/validateNames.ts';
import { ProxyBody } from './proxyBody.ts';

const TIMEOUT_MS = 10_000;
const MAX_BYTES = 1024 * 1024;
const MAX_ENTRIES = 1000;

export type RegistryEntry =
  | { ok: true; name: string; body: z.output<typeof ProxyBody> }
  | { ok: false; name: string | null; reason: string };

const unavailable = (url: string, why: string) => new AppError('REGISTRY_UNAVAILABLE', `the registry ${url} ${why}`);

const readBounded = async (res: globalThis.Response, url: string): Promise<string> => {
  const declared = Number(res.headers.get('content-length') ?? 0);
  if (declared > MAX_BYTES) throw unavailable(url, `answered ${declared} bytes (at most ${MAX_BYTES})`);
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BYTES) {
      await reader.cancel();
      throw unavailable(url, `answered more than ${MAX_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
};

const Entry = ProxyBody.extend({ name: ProxyName });

const describeIssues = (issues: z.core.$ZodIssue[]) =>
  issues.slice(0, 5).map((i) => `${i.path.join('.') || '(entry)'}: ${i.message}`).join('; ');

export const fetchRegistry = async (url: string): Promise<RegistryEntry[]> => {
  let text: string;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS), headers: { accept: 'application/json' } });
    if (!res.ok) {
      await res.body?.cancel();
      throw unavailable(url, `answered HTTP ${res.status}`);
    }
    text = await readBounded(res, url);
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw unavailable(url, `could not be read: ${describeError(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw unavailable(url, 'did not answer JSON');
  }
  const list = Array.isArray(parsed) ? parsed
    : parsed && typeof parsed === 'object' && Array.isArray((parsed as { proxies?: unknown }).proxies) ? (parsed as { proxies: unknown[] }).proxies
    : null;
  if (!list) throw unavailable(url, 'did not answer a list of proxies (a JSON array, or {"proxies": [...]})');
  if (list.length > MAX_ENTRIES) throw unavailable(url, `lists ${list.length} proxies (at most ${MAX_ENTRIES} per sync)`);
  return list.map((raw): RegistryEntry => {
    const name = raw && typeof raw === 'object' && typeof (raw as { name?: unknown }).name === 'string'
      ? (raw as { name: string }).name.slice(0, 100) : null;
    const entry = Entry.safeParse(raw);
    if (!entry.success) return { ok: false, name, reason: describeIssues(entry.error.issues) };
    const { name: valid, ...body } = entry.data;
    return { ok: true, name: valid, body };
  });
};
