// Progress for long CLI work: a live bar on a terminal, plain lines otherwise (CI logs,
// pipes), so that neither gets the other's noise.
import cliProgress from 'cli-progress';

export type ProgressReporter = { update(done: number, total: number): void; finish(summary: string): void };

export const createProgressReporter = (label: string, stream: NodeJS.WriteStream = process.stderr): ProgressReporter => {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      { stream, format: `${label} [{bar}] {percentage}% {value}/{total} events | {eta_formatted} left`, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(done, total) {
        if (!started) { bar.start(total, done); started = true; }
        bar.setTotal(total);
        bar.update(done);
      },
      finish(summary) {
        if (started) bar.stop();
        stream.write(`${summary}\n`);
      },
    };
  }
  let lastAt = 0;
  let lastTenth = -1;
  return {
    update(done, total) {
      const tenth = total === 0 ? 10 : Math.floor((done / total) * 10);
      const now = Date.now();
      // A line per 10 % or per 5 s, whichever comes first.
      if (tenth !== lastTenth || now - lastAt > 5000) {
        lastTenth = tenth;
        lastAt = now;
        const pct = total === 0 ? 100 : Math.floor((done / total) * 100);
        stream.write(`${label}: ${done}/${total} events (${pct}%)\n`);
      }
    },
    finish(summary) {
      stream.write(`${summary}\n`);
    },
  };
};
