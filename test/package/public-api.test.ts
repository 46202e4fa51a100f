// The public API is what the report says, and the library under it imports no example service.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { expect } from 'chai';
import { ENTRY_POINTS, REGENERATE, REPORT_PATH, apiReport, entryPointSources } from '../../scripts/api-report.ts';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';

describe('the public API', function () {
  this.timeout(60_000);

  it('matches the checked-in API report', () => {
    const current = apiReport();
    const recorded = readFileSync(REPORT_PATH, 'utf8');
    if (current !== recorded) {
      const currentLines = current.split('\n');
      const recordedLines = recorded.split('\n');
      const added = currentLines.filter((l) => !recordedLines.includes(l)).slice(0, 10);
      const removed = recordedLines.filter((l) => !currentLines.includes(l)).slice(0, 10);
      expect.fail(
        `the public API changed but services/authz/api-report.md was not regenerated: run \`${REGENERATE}\` and commit the report\n` +
          `  now:    ${added.join('\n          ') || '(nothing new)'}\n  before: ${removed.join('\n          ') || '(nothing gone)'}`,
      );
    }
  });

  it('lists exactly the entry points of package.json "exports"', () => {
    const manifest = JSON.parse(readFileSync(`${PACKAGE_ROOT}/package.json`, 'utf8')) as { exports: Record<string, string | { types: string; default: string }> };
    const modules = Object.entries(manifest.exports).filter(([, target]) => typeof target === 'object');
    expect(modules.map(([key]) => (key === '.' ? 'twokey' : `twokey/${key.slice(2)}`))).to.deep.equal(ENTRY_POINTS.map((e) => e.specifier));
    for (const [key, target] of modules) {
      const entry = ENTRY_POINTS.find((e) => e.specifier === (key === '.' ? 'twokey' : `twokey/${key.slice(2)}`))!;
      const compiled = `./dist/${entry.source.replace(/\.ts$/, '')}`;
      expect(target).to.deep.equal({ types: `${compiled}.d.ts`, default: `${compiled}.js` });
    }
  });

  it('is built from the authorization library and the CA alone, never an example service', () => {
    const sources = entryPointSources();
    expect(sources).to.include('services/authz/server.ts');
    expect(sources).to.include('certs-ca/certificate-authority.ts');
    expect(sources.filter((f) => !f.startsWith('services/authz/') && !f.startsWith('certs-ca/'))).to.deep.equal([]);
  });

  it('keeps every library module (the CLIs included) clear of the example services', () => {
    const outside: string[] = [];
    for (const folder of ['services/authz', 'certs-ca']) {
      const files = readdirSync(join(PACKAGE_ROOT, folder), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'));
      for (const file of files) {
        const path = join(folder, file);
        for (const m of readFileSync(join(PACKAGE_ROOT, path), 'utf8').matchAll(/(?:from |import\()'(\.\.?\/[^']+)'/g)) {
          const target = normalize(join(dirname(path), m[1]!));
          if (!target.startsWith('services/authz/') && !target.startsWith('certs-ca/')) outside.push(`${path} imports ${relative(PACKAGE_ROOT, join(PACKAGE_ROOT, target))}`);
        }
      }
    }
    expect(outside).to.deep.equal([]);
  });
});
