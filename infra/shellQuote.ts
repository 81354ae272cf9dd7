// The one way a value reaches a shell (DESIGN §6): POSIX single quotes, inside which the
// shell interprets nothing; a single quote itself is closed, escaped and reopened. The
// result is one word, whatever the value holds.

/** `it's` → `'it'\''s'`. NUL cannot be passed in a command line at all: refused. */
export const shellQuote = (value: string): string => {
  if (value.includes('\u0000')) throw new TypeError('a shell word cannot contain NUL');
  // Plain words stay readable in logs and in `ps`.
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'\\''`)}'`;
};
