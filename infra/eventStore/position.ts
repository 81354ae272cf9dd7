// A position in the global log. Shaped after EventStoreDB's {commit, prepare}: on
// PostgreSQL `commit` is the writing transaction's xid8 and `prepare` the event's
// global_position; ordering is lexicographic on the pair, which is commit order for
// everything a reader can see (DESIGN.md §3). Callers treat it as opaque.
export type Position = { readonly commit: bigint; readonly prepare: bigint };

export const START: Position = { commit: 0n, prepare: 0n };

export const comparePositions = (a: Position, b: Position): number =>
  a.commit !== b.commit ? (a.commit < b.commit ? -1 : 1) : a.prepare === b.prepare ? 0 : a.prepare < b.prepare ? -1 : 1;

export const maxPosition = (a: Position, b: Position): Position => (comparePositions(a, b) >= 0 ? a : b);

/** `X-Event-Position` and CLI form: "commit/prepare". */
export const formatPosition = (p: Position): string => `${p.commit}/${p.prepare}`;

export const parsePosition = (text: string): Position | null => {
  const m = /^(\d{1,20})\/(\d{1,20})$/.exec(text.trim());
  return m ? { commit: BigInt(m[1]!), prepare: BigInt(m[2]!) } : null;
};
