// Where twokey's own files (proto/, deploy/, dist/) are, the same whether this module runs from
// its TypeScript source or from the compiled dist/ tree, in this repository or installed as a package.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'twokey') return dir;
    if (dirname(dir) === dir) throw new Error(`no twokey package.json above ${from}`);
  }
}

/** The folder holding twokey's package.json. */
export const PACKAGE_ROOT = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

/** A path inside the package, given relative to its root. */
export function packagePath(...segments: string[]): string {
  return join(PACKAGE_ROOT, ...segments);
}
