// The counts docs/security-testing.md states for the attack and property suites come from the
// test files themselves: a dry run of mocha over each row's files, and the hostile token table.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';
import { TOKEN_CASES } from '../adversarial/hostile-tokens.ts';

const PAGE = join(PACKAGE_ROOT, 'docs', 'security-testing.md');
const MOCHA = join(PACKAGE_ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js');

/** The table rows, keyed by the first path in the "where" column, to the files they count. */
const ROWS: Record<string, string[]> = {
  'test/adversarial/hostile-tokens.ts': ['test/adversarial/tokens.test.ts'],
  'test/adversarial/certificates.test.ts': ['test/adversarial/certificates.test.ts'],
  'test/adversarial/server-impersonation.test.ts': ['test/adversarial/server-impersonation.test.ts'],
  'test/adversarial/metadata-paths.test.ts': ['test/adversarial/metadata-paths.test.ts'],
  'test/adversarial/mesh-attacks.test.ts': ['test/adversarial/mesh-attacks.test.ts'],
  'test/property/': ['test/property/*.test.ts'],
  'test/faults/': ['test/faults/*.test.ts'],
};

interface DryTest {
  title: string;
  file: string;
}

/** Every test mocha would run for these files, without running any (nor any hook). */
function dryRun(files: string[]): DryTest[] {
  const run = spawnSync(process.execPath, [MOCHA, '--no-config', '--import=tsx', '--dry-run', '--reporter', 'json', ...files], { cwd: PACKAGE_ROOT, encoding: 'utf8', timeout: 120_000, maxBuffer: 64 * 1024 * 1024 });
  expect(run.status, run.stderr).to.equal(0);
  return (JSON.parse(run.stdout) as { tests: DryTest[] }).tests;
}

/** The "cases" cell of each table row, by its first path. */
function cells(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync(PAGE, 'utf8').split('\n')) {
    const m = /^\| `([^`]+)`.*\| ([^|]+) \|$/.exec(line);
    if (m !== null) out.set(m[1]!, m[2]!.trim());
  }
  return out;
}

describe('docs/security-testing.md: the suite counts come from the tests', function () {
  this.timeout(180_000);
  let table: Map<string, string>;
  let tests: DryTest[];

  before(() => {
    table = cells();
    tests = dryRun([...new Set(Object.values(ROWS).flat())]);
  });

  it('has a row for each counted suite, and no other row', () => {
    expect([...table.keys()].sort()).to.deep.equal(Object.keys(ROWS).sort());
  });

  for (const [row, files] of Object.entries(ROWS)) {
    it(`states the number of tests and controls of ${row}`, () => {
      const patterns = files.map((f) => new RegExp(`^${join(PACKAGE_ROOT, f).replace(/[.]/g, '\\.').replace('*', '[^/]*')}$`));
      const mine = tests.filter((t) => patterns.some((p) => p.test(t.file)));
      const controls = mine.filter((t) => /^control: /.test(t.title)).length;
      const cell = table.get(row)!;
      const m = /^(\d+) tests(?:, (\d+) of them controls|:)?/.exec(cell);
      expect(m, `the cell ${JSON.stringify(cell)} starts with "N tests"`).to.not.equal(null);
      expect(Number(m![1]), `${row}: tests`).to.equal(mine.length);
      if (m![2] !== undefined) expect(Number(m![2]), `${row}: controls`).to.equal(controls);
      else if (row !== 'test/adversarial/hostile-tokens.ts') expect(controls, `${row} has controls the cell does not state`).to.equal(0);
    });
  }

  it('states the token table: hostile cases and controls, each run twice, and the checks of the whole table', () => {
    const hostile = TOKEN_CASES.filter((c) => c.group !== 'control').length;
    const controls = TOKEN_CASES.length - hostile;
    const total = tests.filter((t) => t.file.endsWith('/tokens.test.ts')).length;
    expect(table.get('test/adversarial/hostile-tokens.ts')).to.equal(`${total} tests: ${hostile} attacks and ${controls} controls, each run twice, and ${total - 2 * TOKEN_CASES.length} checks of the whole table`);
  });
});
