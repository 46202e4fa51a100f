// Mocha global setup: the tests run child services from the compiled dist/ (what ships), so dist/
// is rebuilt first whenever a source under the build is newer than the last build.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, utimesSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../services/authz/package-root.ts';

const BUILT_FOLDERS = ['services', 'certs-ca', 'scripts', join('deploy', 'tools')];
const BUILD_INFO = join(PACKAGE_ROOT, 'dist', '.tsbuildinfo');

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

export function mochaGlobalSetup(): void {
  const sources = Math.max(statSync(join(PACKAGE_ROOT, 'tsconfig.build.json')).mtimeMs, ...BUILT_FOLDERS.map((d) => newestSource(join(PACKAGE_ROOT, d))));
  if (existsSync(BUILD_INFO) && statSync(BUILD_INFO).mtimeMs >= sources) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(PACKAGE_ROOT, 'tsconfig.build.json')], { stdio: 'inherit', timeout: 120_000 });
  // tsc leaves its build info untouched when no output changed; mark this check as done.
  const now = new Date();
  utimesSync(BUILD_INFO, now, now);
}
