// Process helpers for the throwaway servers the tests start.
import { readFileSync } from 'node:fs';

/** Alive and not a zombie (a daemon is re-parented to PID 1, which may not reap it in a container). */
export const isRunning = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    // Gone between the two looks.
    return false;
  }
};

/** Blocks the thread (for exit handlers, which cannot wait on promises). */
export const sleepSync = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
