// One execution's output stream (stdout or stderr) on its way to the output store: decoded
// as UTF-8 across chunk boundaries, written in batches (not a row per chunk), stored up to
// `maxBytes` and then closed with one truncation marker, and handed live to subscribers.
import { StringDecoder } from 'node:string_decoder';
import type { Kysely } from 'kysely';
import type { Tables } from '../infra/db/tables.ts';

export type OutputStreamName = 'stdout' | 'stderr';

const FLUSH_BYTES = 64 * 1024;
const FLUSH_MS = 200;

export type OutputSink = {
  write(chunk: Buffer): void;
  /** Writes what is left (and the marker when output was cut) and reports the totals. */
  close(): Promise<{ bytes: number; truncated: boolean }>;
};

export const createOutputSink = (o: {
  db: Kysely<Tables>; executionId: string; stream: OutputStreamName; maxBytes: number;
  live?: (text: string) => void; onError?: (err: unknown) => void;
}): OutputSink => {
  const decoder = new StringDecoder('utf8');
  let total = 0;
  let stored = 0;
  let seq = 0;
  let pending = '';
  let pendingBytes = 0;
  let timer: NodeJS.Timeout | null = null;
  let writing: Promise<void> = Promise.resolve();

  const flush = () => {
    if (timer) { clearTimeout(timer); timer = null; }
    if (pending === '') return;
    const data = pending;
    const row = { execution_id: o.executionId, stream: o.stream, seq: seq++, data };
    pending = '';
    pendingBytes = 0;
    writing = writing.then(() => o.db.insertInto('execution_output').values(row)
      .onConflict((oc) => oc.columns(['execution_id', 'stream', 'seq']).doNothing()).execute().then(() => undefined))
      .catch((err: unknown) => o.onError?.(err));
  };

  const add = (text: string, bytes: number) => {
    if (text === '') return;
    pending += text;
    pendingBytes += bytes;
    o.live?.(text);
    if (pendingBytes >= FLUSH_BYTES) flush();
    else if (!timer) {
      timer = setTimeout(flush, FLUSH_MS);
      timer.unref();
    }
  };

  return {
    write(chunk) {
      total += chunk.length;
      if (stored >= o.maxBytes) return;
      const part = stored + chunk.length > o.maxBytes ? chunk.subarray(0, o.maxBytes - stored) : chunk;
      stored += part.length;
      add(decoder.write(part), part.length);
    },
    async close() {
      add(decoder.end(), 0);
      const truncated = total > stored;
      if (truncated) add(`\n[output truncated: ${stored} of ${total} bytes stored (MAX_OUTPUT_BYTES)]\n`, 0);
      flush();
      await writing;
      return { bytes: total, truncated };
    },
  };
};
