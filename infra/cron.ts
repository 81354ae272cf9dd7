// Cron schedules with a time zone (job templates, SPEC §6), on croner: five fields
// (minute hour day month weekday), evaluated in an IANA time zone.
import { Cron } from 'croner';

/** Why the expression or zone is not usable, or null when it is. */
export const cronProblem = (expression: string, timezone: string): string | null => {
  if (expression.trim().split(/\s+/).length !== 5) return 'a cron expression has five fields: minute hour day month weekday';
  try {
    new Cron(expression, { timezone, paused: true }).nextRun();
    return null;
  } catch (err) {
    const msg = (err as Error).message;
    return /timezone/i.test(msg) ? `unknown time zone ${timezone}` : msg.replace(/^CronPattern: /, '');
  }
};

/** The first time strictly after `after` that the schedule fires, or null if never. */
export const nextCronRun = (expression: string, timezone: string, after: Date): Date | null =>
  new Cron(expression, { timezone, paused: true }).nextRun(after);

/** The latest time in (after, until] that the schedule fires, or null (missed runs are not all made up). */
export const latestCronRun = (expression: string, timezone: string, after: Date, until: Date): Date | null => {
  const cron = new Cron(expression, { timezone, paused: true });
  let found: Date | null = null;
  for (let t = cron.nextRun(after); t && t <= until; t = cron.nextRun(t)) found = t;
  return found;
};
