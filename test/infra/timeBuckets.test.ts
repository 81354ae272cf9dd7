import { expect } from 'chai';
import { coverWindow, splitSpan, UNIT_MS } from '../../infra/timeBuckets.ts';

const T = Date.parse('2026-01-01T00:00:00Z');
const H = UNIT_MS.hour;
const M = UNIT_MS.minute;

describe('time buckets', () => {
  it('splits a span at bucket boundaries', () => {
    expect(splitSpan(T + 30_000, T + 150_000, M)).to.deep.equal([[T, 30_000], [T + M, M], [T + 2 * M, 30_000]]);
    expect(splitSpan(T, T, M)).to.deep.equal([]);
  });

  it('tiles a window exactly with the coarsest buckets: minutes, hours, days, hours, minutes', () => {
    const from = T + 5 * M + 10_000; // widened down to 00:05
    const to = T + 3 * UNIT_MS.day + 2 * H + 7 * M + 1; // widened up to day 3, 02:08
    const cover = coverWindow(from, to);
    expect(cover.map((c) => c.unit)).to.deep.equal(['minute', 'hour', 'day', 'hour', 'minute']);
    expect(cover[0]).to.deep.equal({ unit: 'minute', from: T + 5 * M, to: T + H });
    expect(cover[2]).to.deep.equal({ unit: 'day', from: T + UNIT_MS.day, to: T + 3 * UNIT_MS.day });
    // Contiguous, no overlap, covering the widened window.
    for (let i = 1; i < cover.length; i++) expect(cover[i]!.from).to.equal(cover[i - 1]!.to);
    expect(cover.at(-1)!.to).to.equal(T + 3 * UNIT_MS.day + 2 * H + 8 * M);
  });

  it('reads a year in about 365 day rows and at most a day’s worth of finer ones', () => {
    const now = Date.parse('2026-11-23T12:34:56Z');
    const rows = coverWindow(now - 365 * UNIT_MS.day, now)
      .reduce((n, c) => n + (c.to - c.from) / UNIT_MS[c.unit], 0);
    expect(rows).to.be.below(365 + 48 + 120);
  });

  it('covers a window inside one hour with minutes only', () =>
    expect(coverWindow(T + 10 * M, T + 20 * M)).to.deep.equal([{ unit: 'minute', from: T + 10 * M, to: T + 20 * M }]));
});
