// One running mesh per state directory: two would share databases and overwrite endpoints.json.
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TwokeyError } from '../../services/authz/errors.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else, which still means the directory is in use.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes `<root>/mesh.lock` for this process; a lock left by a process that died is taken over. */
export function lockStateDir(root: string): () => void {
  const path = join(root, 'mesh.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(path, 'utf8').trim());
      if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) {
        throw new TwokeyError('ERR_CONFIG_INVALID', `a mesh is already running from ${root} (pid ${pid}); stop it first or use another TWOKEY_STATE_DIR`);
      }
      rmSync(path, { force: true });
    }
  }
  throw new TwokeyError('ERR_CONFIG_INVALID', `could not take ${path}`);
}
