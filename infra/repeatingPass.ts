// One pass of a reconciling worker at a time: a wake-up during a pass asks for one more
// pass after it (not one per wake-up), and callers share the running one. A pass that
// throws is reported and left for the next wake-up or tick.
export const repeatingPass = (pass: () => Promise<void>, o: { stopped(): boolean; onError(err: Error): void }) => {
  let running: Promise<void> | null = null;
  let again = false;
  const run = (): Promise<void> => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await pass();
        } while (again && !o.stopped());
      } catch (err) {
        o.onError(err as Error);
      } finally {
        running = null;
      }
    })();
    return running;
  };
  return { run, busy: () => running !== null, settled: () => running ?? Promise.resolve() };
};
