// `twokey revoke token|cert|key|list`: record revocations in auth's store; the running auth pushes them to the mesh.
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { decodeJwt } from 'jose';
import { isTwokeyError, TwokeyError } from '../authz/errors.ts';
import { normalizeSerial } from '../authz/revocation-set.ts';
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import { openAuthStorage } from './auth-storage.ts';
import { REVOCATION_REACH_SECONDS } from './revocation-publisher.ts';
import type { RevocationEntry } from './revocation-store.ts';
import { SigningKeys } from './signing-keys.ts';
import { defaultAuthDataDir } from './users-command.ts';

export const usage = `Usage: twokey revoke <token|cert|key|list> [options]

  token --jti ID | --token-file F     refuse one token everywhere until it expires
  cert --serial HEX | --cert F        refuse a workload certificate until its notAfter
  key --kid KID                       withdraw a signing key (every token it signed is refused)
                                      and rotate past it
  list [--json]                       show the live revocations

Options:
  --data-dir DIR   the auth service's data directory (as for twokey users)

The running auth reads new entries on its next heartbeat (2 s) and pushes the signed set to every
mesh server; see README "Revoking access".
`;

export async function run(args: string[]): Promise<number> {
  if (args.length === 0 || args.includes('--help') || args.includes('-h')) {
    process.stdout.write(usage);
    return args.length === 0 ? 2 : 0;
  }
  const options = new Map<string, string>();
  let json = false;
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--json') json = true;
    else if (['--data-dir', '--jti', '--token-file', '--serial', '--cert', '--kid'].includes(arg)) {
      const value = args[++i];
      if (value === undefined || value === '') return fail(`${arg} needs a value`);
      if (options.has(arg)) return fail(`${arg} given twice`);
      options.set(arg, value);
    } else if (arg.startsWith('-')) return fail(`unknown option ${arg}`);
    else positional.push(arg);
  }
  const [action, ...extra] = positional;
  if (extra.length > 0) return fail(`unexpected argument ${JSON.stringify(extra[0])}`);
  const allowed: Record<string, string[]> = {
    token: ['--jti', '--token-file'],
    cert: ['--serial', '--cert'],
    key: ['--kid'],
    list: [],
  };
  if (action === undefined || !(action in allowed)) return fail(`unknown action ${JSON.stringify(action ?? '')}`);
  for (const name of options.keys()) if (name !== '--data-dir' && !allowed[action]!.includes(name)) return fail(`${name} does not go with ${action}`);
  if (json && action !== 'list') return fail('--json goes with list');
  // With TWOKEY_DATABASE_URL set, the revocations are the auth replicas' shared ones in PostgreSQL.
  const pg = postgresConfig(process.env);
  const storage = await openAuthStorage(pg === undefined ? { dataDir: options.get('--data-dir') ?? defaultAuthDataDir() } : { postgres: pg });
  try {
    const store = storage.revocations;
    const now = Math.floor(Date.now() / 1000);
    const record = async (entry: RevocationEntry): Promise<number> => {
      await store.add(entry);
      process.stdout.write(`revoked ${entry.kind} ${entry.value} (kept in the set until ${new Date(entry.keepUntilSeconds * 1000).toISOString()})\n`);
      return 0;
    };
    switch (action) {
      case 'token': {
        const { jti, exp } = tokenTarget(options, now);
        return record({ kind: 'jti', value: jti, atSeconds: now, keepUntilSeconds: exp + 300 });
      }
      case 'cert': {
        const { serial, notAfter } = certTarget(options, now);
        return record({ kind: 'serial', value: serial, atSeconds: now, keepUntilSeconds: notAfter });
      }
      case 'key': {
        const kid = options.get('--kid');
        if (kid === undefined) return fail('key needs --kid');
        if (!/^[\x21-\x7e]{1,128}$/.test(kid)) return fail('--kid must be 1-128 printable characters');
        await record({ kind: 'kid', value: kid, atSeconds: now, keepUntilSeconds: now + REVOCATION_REACH_SECONDS });
        // Never sign again with it: rotate until it is neither the current nor the next key.
        const keys = new SigningKeys(storage.keys, { rotationMs: Number.MAX_SAFE_INTEGER });
        for (let i = 0; i < 2 && (await keys.jwks()).keys.slice(0, 2).some((k) => k.kid === kid); i++) {
          process.stdout.write(`rotated: ${await keys.rotate(`kid ${kid} withdrawn`)} signs now\n`);
        }
        return 0;
      }
      case 'list': {
        const entries = await store.list();
        if (json) process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        else {
          for (const e of entries) {
            process.stdout.write(`${e.kind.padEnd(7)} ${e.value.padEnd(44)} since ${new Date(e.atSeconds * 1000).toISOString()} until ${new Date(e.keepUntilSeconds * 1000).toISOString()}\n`);
          }
          if (entries.length === 0) process.stdout.write('no revocations\n');
        }
        return 0;
      }
    }
    return fail(`unknown action ${JSON.stringify(action)}`);
  } catch (err) {
    if (isTwokeyError(err)) return fail(err.message);
    throw err;
  } finally {
    await storage.close();
  }
}

function tokenTarget(options: Map<string, string>, now: number): { jti: string; exp: number } {
  const file = options.get('--token-file');
  const jti = options.get('--jti');
  if ((file === undefined) === (jti === undefined)) throw new TwokeyError('ERR_REQUEST_INVALID', 'token needs exactly one of --jti or --token-file');
  if (jti !== undefined) {
    if (!/^[A-Za-z0-9_-]{16,128}$/.test(jti)) throw new TwokeyError('ERR_REQUEST_INVALID', '--jti must be 16-128 base64url characters');
    // Its exp is unknown: keep the entry as long as any token can live.
    return { jti, exp: now + REVOCATION_REACH_SECONDS };
  }
  let claims: ReturnType<typeof decodeJwt>;
  try {
    claims = decodeJwt(readFileSync(file!, 'utf8').trim());
  } catch {
    throw new TwokeyError('ERR_REQUEST_INVALID', `${file} does not hold a JWT`);
  }
  if (typeof claims.jti !== 'string' || !/^[A-Za-z0-9_-]{16,128}$/.test(claims.jti)) throw new TwokeyError('ERR_REQUEST_INVALID', 'the token has no usable jti');
  const exp = typeof claims.exp === 'number' ? Math.min(claims.exp, now + REVOCATION_REACH_SECONDS) : now + REVOCATION_REACH_SECONDS;
  return { jti: claims.jti, exp };
}

function certTarget(options: Map<string, string>, now: number): { serial: string; notAfter: number } {
  const file = options.get('--cert');
  const serial = options.get('--serial');
  if ((file === undefined) === (serial === undefined)) throw new TwokeyError('ERR_REQUEST_INVALID', 'cert needs exactly one of --serial or --cert');
  if (serial !== undefined) return { serial: normalizeSerial(serial), notAfter: now + REVOCATION_REACH_SECONDS };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(readFileSync(file!));
  } catch {
    throw new TwokeyError('ERR_REQUEST_INVALID', `${file} does not hold a PEM or DER certificate`);
  }
  return { serial: normalizeSerial(cert.serialNumber), notAfter: Math.floor(Date.parse(cert.validTo) / 1000) };
}

function fail(message: string): number {
  process.stderr.write(`twokey revoke: ${message}\n\n${usage}`);
  return 2;
}
