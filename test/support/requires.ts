// The one way a test may decline to run: a missing system package. It prints why and records how
// many tests it takes out, so CI can tell an explained skip from any other pending test; under CI
// (TWOKEY_REQUIRE_ALL=1) a missing package fails the suite instead, naming the package to install.
import { appendFileSync } from 'node:fs';

/** Packages CI may run without (comma-separated in TWOKEY_ALLOW_MISSING); empty unless someone says so. */
function allowedMissing(): ReadonlySet<string> {
  return new Set((process.env['TWOKEY_ALLOW_MISSING'] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));
}

function testsUnder(suite: Mocha.Suite): number {
  return suite.tests.length + suite.suites.reduce((n, s) => n + testsUnder(s), 0);
}

/** Thrown under CI when a package a test needs is missing: the run must not pass without it. */
export class MissingSystemPackage extends Error {
  constructor(readonly pkg: string, reason: string) {
    super(`the tests need the system package ${pkg}, and CI requires every one (TWOKEY_REQUIRE_ALL=1): ${reason}`);
    this.name = 'MissingSystemPackage';
  }
}

/**
 * Lets the test (or, from a `before` hook, the whole suite) run when `missing` is undefined; else
 * prints `missing` and skips, or throws MissingSystemPackage under TWOKEY_REQUIRE_ALL=1 unless
 * `pkg` is in TWOKEY_ALLOW_MISSING. Each skip appends "<count>\t<pkg>\t<reason>" to the file named
 * by TWOKEY_SKIP_RECORD, where <count> is the number of tests the skip takes out of the run.
 */
export function requireSystem(ctx: Mocha.Context, pkg: string, missing: string | undefined): void {
  if (missing === undefined) return;
  if (process.env['TWOKEY_REQUIRE_ALL'] === '1' && !allowedMissing().has(pkg)) throw new MissingSystemPackage(pkg, missing);
  // From a hook the skip takes out every test of the hook's suite; from a test, that test.
  const runnable = ctx.test as (Mocha.Runnable & { type?: string }) | undefined;
  const count = runnable?.type === 'hook' && runnable.parent !== undefined ? testsUnder(runnable.parent) : 1;
  console.log(`      NOT RUN (${count} test${count === 1 ? '' : 's'}, needs ${pkg}): ${missing}`);
  const record = process.env['TWOKEY_SKIP_RECORD'];
  if (record !== undefined && record !== '') appendFileSync(record, `${count}\t${pkg}\t${missing.replace(/[\t\n]/g, ' ')}\n`);
  ctx.skip();
}
