// The skip helper, run in a child mocha as CI runs it: a skip prints and records its reason and the
// number of tests it takes out; under TWOKEY_REQUIRE_ALL=1 a missing package fails, naming it.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { installedPostgresBin } from '../postgres/postgres-server.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/declines.fixture.ts', import.meta.url));
const MOCHA = fileURLToPath(new URL('../../node_modules/mocha/bin/mocha.js', import.meta.url));

function runFixture(env: Record<string, string>): { status: number | null; out: string; record: string } {
  const dir = mkdtempSync(join(tmpdir(), 'twokey-requires-'));
  try {
    const record = join(dir, 'skips');
    const base = { ...process.env, TWOKEY_REQUIRE_ALL: '', TWOKEY_ALLOW_MISSING: '' };
    const r = spawnSync(process.execPath, [MOCHA, '--no-config', '--import=tsx', FIXTURE], { env: { ...base, TWOKEY_SKIP_RECORD: record, ...env }, encoding: 'utf8', timeout: 60_000 });
    let recorded = '';
    try {
      recorded = readFileSync(record, 'utf8');
    } catch {
      // Nothing was skipped.
    }
    return { status: r.status, out: r.stdout + r.stderr, record: recorded };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('requireSystem: the one way a test declines to run', function () {
  this.timeout(60_000);

  it('outside CI it skips with the printed reason and records how many tests each skip took out', () => {
    const r = runFixture({});
    expect(r.status).to.equal(0);
    expect(r.out).to.match(/1 passing/).and.match(/4 pending/);
    expect(r.out).to.include('NOT RUN (3 tests, needs pkg-suite): no /nonexistent/suite-binary');
    expect(r.out).to.include('NOT RUN (1 test, needs pkg-test): no /nonexistent/test-binary');
    // The counts CI sums and compares with mocha's pending count: 3 + 1 = 4.
    expect(r.record).to.equal('3\tpkg-suite\tno /nonexistent/suite-binary\n1\tpkg-test\tno /nonexistent/test-binary\n');
  });

  it('under CI (TWOKEY_REQUIRE_ALL=1) a missing package fails, naming the package and the reason', () => {
    const r = runFixture({ TWOKEY_REQUIRE_ALL: '1' });
    expect(r.status).to.not.equal(0);
    expect(r.out).to.match(/2 failing/);
    expect(r.out).to.include('the tests need the system package pkg-suite, and CI requires every one (TWOKEY_REQUIRE_ALL=1): no /nonexistent/suite-binary');
    expect(r.out).to.include('the tests need the system package pkg-test');
    expect(r.record).to.equal('');
  });

  it('under CI a package named in TWOKEY_ALLOW_MISSING is skipped and recorded; the others still fail', () => {
    const r = runFixture({ TWOKEY_REQUIRE_ALL: '1', TWOKEY_ALLOW_MISSING: 'pkg-suite' });
    expect(r.out).to.match(/1 failing/).and.match(/3 pending/);
    expect(r.out).to.include('the tests need the system package pkg-test');
    expect(r.record).to.equal('3\tpkg-suite\tno /nonexistent/suite-binary\n');
  });
});

describe('installedPostgresBin: any PostgreSQL Debian installed, the newest first', () => {
  it('picks the highest major version that has a server binary, comparing numbers, not strings', () => {
    const root = mkdtempSync(join(tmpdir(), 'twokey-pgroot-'));
    try {
      for (const [major, hasServer] of [['9', true], ['15', true], ['17', true], ['18', false], ['common', true]] as const) {
        mkdirSync(join(root, major, 'bin'), { recursive: true });
        if (hasServer) writeFileSync(join(root, major, 'bin', 'postgres'), '');
      }
      expect(installedPostgresBin(root)).to.equal(join(root, '17', 'bin'));
      expect(installedPostgresBin(join(root, 'absent'))).to.equal(undefined);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
