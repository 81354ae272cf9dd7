import { expect } from 'chai';
import { cronProblem, latestCronRun, nextCronRun } from '../../infra/cron.ts';

describe('cron schedules', () => {
  it('fires in the given time zone', () => {
    // 09:00 in Berlin is 08:00 UTC in winter.
    expect(nextCronRun('0 9 * * *', 'Europe/Berlin', new Date('2026-11-23T07:00:00Z'))?.toISOString()).to.equal('2026-11-23T08:00:00.000Z');
    expect(nextCronRun('0 9 * * *', 'UTC', new Date('2026-11-23T07:00:00Z'))?.toISOString()).to.equal('2026-11-23T09:00:00.000Z');
  });
  it('finds only the latest missed run', () =>
    expect(latestCronRun('*/5 * * * *', 'UTC', new Date('2026-11-23T10:00:00Z'), new Date('2026-11-23T10:17:00Z'))?.toISOString())
      .to.equal('2026-11-23T10:15:00.000Z'));
  it('explains bad expressions and zones', () => {
    expect(cronProblem('*/5 * * * *', 'UTC')).to.equal(null);
    expect(cronProblem('61 * * * *', 'UTC')).to.match(/minute/);
    expect(cronProblem('* * *', 'UTC')).to.match(/five fields/);
    expect(cronProblem('* * * * *', 'Mars/Olympus')).to.equal('unknown time zone Mars/Olympus');
  });
});
