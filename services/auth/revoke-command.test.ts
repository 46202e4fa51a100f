// `twokey revoke`: entries land in auth's store with the right lifetimes; bad arguments are refused by name.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { run } from './revoke-command.ts';
import { CERTIFICATE_REACH_SECONDS } from './revocation-entries.ts';
import { authDatabasePath, openAuthDatabase } from './database.ts';
import { SqliteRevocationStore } from './revocation-store.ts';

describe('twokey revoke', () => {
  let dir: string;
  let out: string;
  let err: string;
  const write = { out: process.stdout.write, err: process.stderr.write };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-revoke-'));
    out = '';
    err = '';
    process.stdout.write = ((s: string) => ((out += s), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => ((err += s), true)) as typeof process.stderr.write;
  });
  afterEach(() => {
    process.stdout.write = write.out;
    process.stderr.write = write.err;
    rmSync(dir, { recursive: true, force: true });
  });

  const entries = async () => {
    const db = openAuthDatabase(authDatabasePath(dir));
    try {
      return await new SqliteRevocationStore(db).list();
    } finally {
      db.close();
    }
  };

  it('records a jti (from --jti or a token file, expiring with the token), a serial and a withdrawn kid, and lists them', async () => {
    expect(await run(['token', '--jti', 'jti-0123456789abcdef', '--data-dir', dir])).to.equal(0);
    const exp = Math.floor(Date.now() / 1000) + 600;
    const payload = Buffer.from(JSON.stringify({ jti: 'jti-fromfile-0123456', exp })).toString('base64url');
    writeFileSync(join(dir, 'token'), `eyJhbGciOiJFUzI1NiJ9.${payload}.c2ln\n`);
    expect(await run(['token', '--token-file', join(dir, 'token'), '--data-dir', dir])).to.equal(0);
    expect(await run(['cert', '--serial', '00:0a:1B', '--data-dir', dir])).to.equal(0);
    expect(await run(['key', '--kid', 'k-old', '--data-dir', dir])).to.equal(0);
    const listed = await entries();
    expect(listed.map((e) => `${e.kind} ${e.value}`).sort()).to.deep.equal(['jti jti-0123456789abcdef', 'jti jti-fromfile-0123456', 'kid k-old', 'serial A1B']);
    expect(listed.find((e) => e.value === 'jti-fromfile-0123456')!.keepUntilSeconds).to.equal(exp + 300);
    // A serial without its certificate: kept as long as any certificate the CA may issue can live.
    const serialKept = listed.find((e) => e.value === 'A1B')!.keepUntilSeconds - Math.floor(Date.now() / 1000);
    expect(serialKept).to.be.within(CERTIFICATE_REACH_SECONDS - 60, CERTIFICATE_REACH_SECONDS);
    out = '';
    expect(await run(['list', '--json', '--data-dir', dir])).to.equal(0);
    expect(JSON.parse(out)).to.have.length(4);
  });

  it('refuses bad or conflicting arguments with exit 2 and a named reason, recording nothing', async () => {
    const cases: Array<[string[], string]> = [
      [['token', '--data-dir', dir], 'exactly one of --jti or --token-file'],
      [['token', '--jti', 'a', '--token-file', 'f', '--data-dir', dir], 'exactly one of --jti or --token-file'],
      [['token', '--jti', 'short', '--data-dir', dir], '--jti must be 16-128 base64url characters'],
      [['cert', '--serial', 'xyz', '--data-dir', dir], 'hexadecimal'],
      [['cert', '--cert', join(dir, 'missing.pem'), '--data-dir', dir], 'does not hold a PEM or DER certificate'],
      [['key', '--data-dir', dir], 'key needs --kid'],
      [['key', '--kid', 'k', '--jti', 'jti-0123456789abcdef', '--data-dir', dir], '--jti does not go with key'],
      [['token', '--jti', 'jti-0123456789abcdef', '--json', '--data-dir', dir], '--json goes with list'],
      [['forget', '--data-dir', dir], 'unknown action "forget"'],
      [['list', '--jti'], '--jti needs a value'],
      [['cert', '--serial', '0A', '--data-dir', dir, '--auth', '127.0.0.1:1'], '--auth does not go with --direct'],
      [['cert', '--serial', '0A', '--direct', '--svid-dir', dir], '--svid-dir does not go with --direct'],
      [['user', '--data-dir', dir], 'user needs --username'],
      [['user', '--username', 'not a name', '--data-dir', dir], '--username is not a valid username'],
      [['user', '--username', 'alice', '--kid', 'k', '--data-dir', dir], '--kid does not go with user'],
    ];
    for (const [args, message] of cases) {
      err = '';
      expect(await run(args), args.join(' ')).to.equal(2);
      expect(err, args.join(' ')).to.contain(message);
    }
    expect(await entries()).to.deep.equal([]);
  });
});
