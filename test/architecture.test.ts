// DESIGN §1's import direction, checked on every build: the layering only holds if a test
// fails the moment someone imports across it.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { checkImports, findImports, formatViolation, SCANNED_LAYERS, type SourceFile } from './support/importRules.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const tsFilesUnder = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.[cm]?ts$/.test(e.name) && !join(e.parentPath, e.name).includes(`${sep}node_modules${sep}`))
    .map((e) => join(e.parentPath, e.name));

const scan = (): SourceFile[] =>
  SCANNED_LAYERS.flatMap((layer) => {
    const dir = join(ROOT, layer);
    try {
      return tsFilesUnder(dir);
    } catch {
      return []; // a layer with no folder yet has nothing to check
    }
  }).map((file) => ({ path: relative(ROOT, file).split(sep).join('/'), source: readFileSync(file, 'utf8') }));

describe('architecture: import direction (DESIGN §1)', () => {
  it('no layer imports one it may not', () => {
    const files = scan();
    expect(files.length, 'the scan found no source files, so it proves nothing').to.be.greaterThan(0);
    const violations = checkImports(files).map(formatViolation);
    expect(violations, `import rule violations:\n  ${violations.join('\n  ')}`).to.deep.equal([]);
  });

  describe('the checker', () => {
    const check = (path: string, source: string) => checkImports([{ path, source }]).map(formatViolation);

    it('finds static, re-export, side-effect and dynamic imports, but not ones in comments or strings', () => {
      const source = [
        "// import { x } from '../infra/commented.ts';",
        "import type { A } from '../a.ts';",
        "export * from './b.ts';",
        "export { c } from '../c.ts';",
        "import '../side.ts';",
        "const s = \"import z from '../in-a-string.ts'\";",
        "const later = () => import('../d.ts');",
      ].join('\n');
      expect(findImports(source)).to.deep.equal(['../a.ts', './b.ts', '../c.ts', '../side.ts', '../d.ts']);
    });

    it('reports domain importing infra, and infra importing a layer above it', () => {
      expect(check('domain/jobs.ts', "import { AppError } from '../infra/errors.ts';")).to.deep.equal([
        'domain/jobs.ts -> ../infra/errors.ts (layer domain may not import layer infra)',
      ]);
      expect(check('infra/db/tables.ts', "import type { Job } from '../../domain/jobs.ts';")).to.deep.equal([
        'infra/db/tables.ts -> ../../domain/jobs.ts (layer infra may not import layer domain)',
      ]);
    });

    it('reports read-api importing domain, anyone but bin importing bin, and dynamic imports', () => {
      expect(check('read-api/jobs.ts', "const m = await import('../domain/jobs.ts');")).to.deep.equal([
        'read-api/jobs.ts -> ../domain/jobs.ts (layer read-api may not import layer domain)',
      ]);
      expect(check('workers/poller.ts', "export { VERSION } from '../bin/app.ts';")).to.deep.equal([
        'workers/poller.ts -> ../bin/app.ts (layer workers may not import layer bin)',
      ]);
      expect(check('commands/jobs.ts', "import { projectors } from '../projections/jobs.ts';")).to.have.length(1);
    });

    it('allows what DESIGN §1 allows', () => {
      const ok: SourceFile[] = [
        { path: 'domain/jobs.ts', source: "import { z } from 'zod'; import type { Id } from './ids.ts';" },
        { path: 'commands/jobs.ts', source: "import { decide } from '../domain/jobs.ts'; import { AppError } from '../infra/errors.ts';" },
        { path: 'projections/jobs.ts', source: "import type { JobEvent } from '../domain/jobs.ts'; import { sql } from 'kysely';" },
        { path: 'workers/jobRunner.ts', source: "import { x } from '../infra/ssh.ts'; import { y } from '../domain/jobs.ts';" },
        { path: 'read-api/jobs.ts', source: "import { db } from '../infra/db/database.ts'; import { r } from './router.ts';" },
        { path: 'infra/db/migrate.ts', source: "import { m } from './migrations/0001.ts'; import { e } from '../errors.ts';" },
        { path: 'bin/app.ts', source: "import { a } from '../read-api/jobs.ts'; import { b } from './cli.ts';" },
        { path: 'test/app.test.ts', source: "import { startServer } from '../bin/app.ts';" },
      ];
      expect(checkImports(ok).map(formatViolation)).to.deep.equal([]);
    });
  });
});
