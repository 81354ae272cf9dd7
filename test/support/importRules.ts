// The import direction of DESIGN §1 as a pure function over (path, source) pairs, so the
// architecture test can also prove that it catches violations.
import { posix } from 'node:path';
import ts from 'typescript';

export const SCANNED_LAYERS = ['domain', 'commands', 'projections', 'read-api', 'workers', 'infra', 'bin'] as const;

// What each layer may import besides itself. bin/, bench/ and test/ see everything.
const MAY_IMPORT: Record<string, readonly string[] | 'anything'> = {
  domain: [],
  commands: ['domain', 'infra'],
  projections: ['domain', 'infra'],
  workers: ['domain', 'infra'],
  'read-api': ['infra'],
  infra: [],
  bin: 'anything',
  bench: 'anything',
  test: 'anything',
};

export type SourceFile = { path: string; source: string };
export type Violation = { file: string; specifier: string; from: string; to: string };

/** Every module specifier in the source: static imports, `export … from`, and `import('…')` with a literal. */
export const findImports = (source: string): string[] =>
  // The compiler's own pre-processor skips comments and strings, which a regex would not.
  ts.preProcessFile(source, true, true).importedFiles.map((f) => f.fileName);

/** The top-level folder of a repo-relative posix path ('' for a file at the root, '..' outside it). */
export const layerOf = (path: string): string => {
  const normalized = posix.normalize(path);
  return normalized.startsWith('../') ? '..' : normalized.includes('/') ? normalized.split('/')[0]! : '';
};

const isRelative = (specifier: string) => specifier === '.' || specifier === '..' || /^\.\.?\//.test(specifier);

/** Violations in files given by repo-relative posix paths. Packages (non-relative specifiers) are not ours and always allowed. */
export const checkImports = (files: readonly SourceFile[]): Violation[] =>
  files.flatMap(({ path, source }) => {
    const from = layerOf(path);
    const allowed = MAY_IMPORT[from];
    if (allowed === 'anything') return [];
    return findImports(source)
      .filter(isRelative)
      .map((specifier) => ({ file: path, specifier, from, to: layerOf(posix.join(posix.dirname(path), specifier)) }))
      .filter(({ to }) => to !== from && !(allowed ?? []).includes(to));
  });

export const formatViolation = (v: Violation): string =>
  `${v.file} -> ${v.specifier} (layer ${v.from} may not import layer ${v.to || '(repository root)'})`;
