// Writes the hostile certificate fixtures (named for their defect) to test/fixtures/generated/.
import { makeHostileFixtures } from '../certs-ca/hostile-fixtures.ts';
import { packagePath } from '../services/authz/package-root.ts';

const DEFAULT_DIR = packagePath('test', 'fixtures', 'generated');

const dir = process.argv[2] ?? DEFAULT_DIR;
const set = makeHostileFixtures(dir);
for (const f of set.fixtures) {
  process.stdout.write(`${f.name.padEnd(28)} parse=${f.parse.padEnd(28)} chain=${f.chainTrusted ? 'trusted' : 'rejected'}  ${f.description}\n`);
}
process.stdout.write(`wrote ${set.fixtures.length} fixtures and manifest.json to ${dir}\n`);
