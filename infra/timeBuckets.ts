// Calendar arithmetic for rollups (UTC): which minute/hour/day buckets a span of time falls
// into, and the few coarse buckets that cover a long window. Pure.

export type Unit = 'minute' | 'hour' | 'day';
export const UNIT_MS: Readonly<Record<Unit, number>> = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
export const UNITS: readonly Unit[] = ['minute', 'hour', 'day'];

export const floorTo = (ms: number, unitMs: number): number => Math.floor(ms / unitMs) * unitMs;
export const ceilTo = (ms: number, unitMs: number): number => Math.ceil(ms / unitMs) * unitMs;

/** [start, end) cut at `unitMs` boundaries: one `[bucketStart, msInIt]` per bucket touched. */
export const splitSpan = (startMs: number, endMs: number, unitMs: number): Array<[number, number]> => {
  const out: Array<[number, number]> = [];
  for (let t = startMs; t < endMs; ) {
    const bucket = floorTo(t, unitMs);
    const next = Math.min(bucket + unitMs, endMs);
    out.push([bucket, next - t]);
    t = next;
  }
  return out;
};

export type Cover = { unit: Unit; from: number; to: number };

/**
 * The coarsest buckets that exactly tile [from, to) once both ends are widened to whole
 * minutes: minutes up to the first whole hour, hours up to the first whole day, days, then
 * back down. A year is about 365 day rows plus at most 46 hour and 118 minute rows.
 */
export const coverWindow = (fromMs: number, toMs: number): Cover[] => {
  const from = floorTo(fromMs, UNIT_MS.minute);
  const to = ceilTo(toMs, UNIT_MS.minute);
  const out: Cover[] = [];
  const push = (unit: Unit, a: number, b: number) => { if (b > a) out.push({ unit, from: a, to: b }); };
  const h0 = Math.min(ceilTo(from, UNIT_MS.hour), to);
  const h1 = Math.max(floorTo(to, UNIT_MS.hour), h0);
  const d0 = Math.min(ceilTo(h0, UNIT_MS.day), h1);
  const d1 = Math.max(floorTo(h1, UNIT_MS.day), d0);
  push('minute', from, h0);
  push('hour', h0, d0);
  push('day', d0, d1);
  push('hour', d1, h1);
  push('minute', h1, to);
  return out;
};

/** `5m`, `1h`, `1d` as milliseconds, and the rollup unit each is built from. */
export const STAT_BUCKETS = { '5m': { ms: 300_000, unit: 'minute' }, '1h': { ms: 3_600_000, unit: 'hour' }, '1d': { ms: 86_400_000, unit: 'day' } } as const;
export type StatBucket = keyof typeof STAT_BUCKETS;
