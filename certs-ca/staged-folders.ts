// Replaces a set of folders under one root all together or not at all: built in a temporary sibling, then renamed into place.
import { lstatSync, mkdirSync, mkdtempSync, renameSync, rmSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { TwokeyError } from '../services/authz/errors.ts';

function lstatIfAny(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Builds `root/<name>` for every name with `build(dir)`, where `dir` is a folder in a temporary
 * sibling (`root/.staging-*`, so every rename stays on one file system). Only once all are built
 * are the existing folders moved aside and the new ones renamed into place; a failure at any point
 * puts every moved folder back, so `root` ends as it was or with all new folders, and no staging
 * folder is left behind. (Between the two renames of one folder it is briefly absent: readers that
 * poll it, as SvidSource does, keep what they last loaded.)
 */
export function replaceFolders(root: string, names: readonly string[], build: (name: string, dir: string) => void): void {
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const staging = mkdtempSync(join(root, '.staging-'));
  const fresh = join(staging, 'new');
  const previous = join(staging, 'previous');
  let recoverable = true;
  try {
    mkdirSync(fresh);
    mkdirSync(previous);
    for (const name of names) build(name, join(fresh, name));
    const movedAside: string[] = [];
    const placed: string[] = [];
    try {
      for (const name of names) {
        const target = join(root, name);
        const existing = lstatIfAny(target);
        if (existing === undefined) continue;
        if (!existing.isDirectory()) throw new TwokeyError('ERR_CONFIG_INVALID', `${target} exists and is not a folder`);
        renameSync(target, join(previous, name));
        movedAside.push(name);
      }
      for (const name of names) {
        renameSync(join(fresh, name), join(root, name));
        placed.push(name);
      }
    } catch (err) {
      try {
        for (const name of placed) renameSync(join(root, name), join(fresh, name));
        for (const name of movedAside) renameSync(join(previous, name), join(root, name));
      } catch (undo) {
        // The previous folders are only in staging now: it must survive for an operator to recover them.
        recoverable = false;
        throw new TwokeyError('ERR_CONFIG_INVALID', `${(err as Error).message}; putting the previous folders back failed too (${(undo as Error).message}): they are in ${previous}`, { cause: err });
      }
      throw err;
    }
  } finally {
    if (recoverable) rmSync(staging, { recursive: true, force: true });
  }
}
