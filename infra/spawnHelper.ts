// The child half of infra/programRunner.ts: runs programs for its parent, one message per
// run. It stays small, so its forks are cheap. Plain JavaScript in a .ts file: it must not
// need anything but Node.
import { execFile } from 'node:child_process';

type Run = { id: number; file: string; args: string[]; timeoutMs: number };

process.on('message', (m: Run) => {
  execFile(m.file, m.args, { timeout: m.timeoutMs, encoding: 'utf8', maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
    process.send?.({ id: m.id, failed: !!err, message: err ? err.message : null, stdout, stderr });
  });
});
// The parent went away: nothing left to run for.
process.on('disconnect', () => process.exit(0));
