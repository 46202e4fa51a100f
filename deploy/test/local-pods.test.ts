// The pod harness says why a pod cannot start, before starting it: a file its uid cannot reach.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { podCannotRun } from './local-pods.ts';

const POD = { name: 'probe', user: { uid: 10001, gid: 10001, fsGroup: 10001 } };

describe('podCannotRun: reachability of node and the compiled CLI for the pod uid', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-reach-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  if (process.getuid?.() !== 0) {
    it('not run as root, pods run as this user: nothing to check', () => {
      expect(podCannotRun(POD)).to.equal(undefined);
    });
    return;
  }

  it('this checkout: the pod uid reaches node and dist/scripts/twokey.js', () => {
    expect(podCannotRun(POD)).to.equal(undefined);
  });

  it('a CLI under a 0700 directory: names the file and the directory', () => {
    const hidden = join(dir, 'private');
    mkdirSync(hidden);
    chmodSync(dir, 0o711);
    chmodSync(hidden, 0o700);
    writeFileSync(join(hidden, 'twokey.js'), '');
    const reason = podCannotRun(POD, { node: process.execPath, bin: join(hidden, 'twokey.js') });
    expect(reason).to.match(new RegExp(`^probe runs as uid 10001 gid 10001, which cannot read ${join(hidden, 'twokey.js')}: ${hidden} \\(mode 700, owner 0:0\\) is not searchable by it`));
  });

  it('node under a 0700 directory: names the spawn error and the directory', () => {
    const hidden = join(dir, 'private');
    mkdirSync(hidden);
    chmodSync(dir, 0o711);
    chmodSync(hidden, 0o700);
    symlinkSync(process.execPath, join(hidden, 'node'));
    const reason = podCannotRun(POD, { node: join(hidden, 'node'), bin: TWOKEY_BIN });
    expect(reason).to.equal(`probe runs as uid 10001 gid 10001, which cannot start node at ${join(hidden, 'node')} (EACCES): ${hidden} (mode 700, owner 0:0) is not searchable by it`);
  });
});
