// Which proto roots a command searches for the methods grants and rules name: the registry's own
// `protoRoots`, any given on the command line, else the project's ./proto when it exists.
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { DEFAULT_PROTO_ROOT } from '../services/authz/method-catalog.ts';
import type { Registry } from './registry.ts';

/**
 * The extra proto roots (besides twokey's own proto/) for a command run in `cwd`. A team's
 * registry names its roots once; `--proto-root` adds more. With neither, the project's ./proto is
 * searched when it exists, so `twokey ca issue` in a service's repository finds its methods.
 */
export function protoRootsFor(registry: Pick<Registry, 'protoRoots'> | undefined, flags: readonly string[], cwd = process.cwd()): string[] {
  const roots = [...(registry?.protoRoots ?? []), ...flags.map((f) => resolve(cwd, f))];
  if (roots.length === 0) {
    const local = resolve(cwd, 'proto');
    if (local !== DEFAULT_PROTO_ROOT && existsSync(local) && statSync(local).isDirectory()) roots.push(local);
  }
  return [...new Set(roots)];
}
