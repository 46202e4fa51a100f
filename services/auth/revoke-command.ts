// `twokey revoke token|cert|key|user|list`: asks the running auth over mTLS (or, break-glass, writes its store).
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { decodeJwt } from 'jose';
import { isTwokeyError, TwokeyError } from '../authz/errors.ts';
import { normalizeSerial } from '../authz/revocation-set.ts';
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import { openAuthStorage } from './auth-storage.ts';
import { disabledSubjectEntry, jtiEntry, serialEntry, withdrawnKidEntry } from './revocation-entries.ts';
import type { RevocationEntry } from './revocation-store.ts';
import { SigningKeys } from './signing-keys.ts';
import { defaultAuthDataDir } from './users-command.ts';
import { AdminCallFailed, AdminClient, resolveAdminConnection } from './admin-client.ts';
import { UserStore } from './user-store.ts';
import { isUsername } from './username.ts';

const DEFAULT_REGISTRY_PATH = 'deploy/registry.yaml';
const JTI = /^[A-Za-z0-9_-]{16,128}$/;

export const usage = `Usage: twokey revoke <token|cert|key|user|list> [options]

  token --jti ID | --token-file F     refuse one token everywhere until it expires
  cert --serial HEX | --cert F        refuse a workload certificate until its notAfter
  key --kid KID                       withdraw a signing key (every token it signed is refused)
                                      and rotate past it
  user --username NAME                disable a user: logins refused, issued tokens refused
  list [--json]                       show the live revocations

Each is a call to the running auth over mTLS, as the registry's admin identity: its certificate
and its own service token (scope revocations:admin) must both allow it, and auth logs who asked.
auth pushes the new set to every mesh server at once; see docs/revocation.md.

Options:
  --state-dir DIR    the local mesh's state (default $TWOKEY_STATE_DIR or .twokey): auth's
                     address from its endpoints.json, the certificate from svid/admin
  --auth HOST:PORT   auth's mesh address (default $TWOKEY_AUTH_ADDR, else the local mesh's)
  --svid-dir DIR     the admin certificate folder (default $TWOKEY_SVID_DIR, else DIR/svid/admin)
  --registry FILE    the registry naming auth and the trust domain (default $TWOKEY_REGISTRY,
                     else ${DEFAULT_REGISTRY_PATH})

Break-glass, while auth is down: --direct [--data-dir DIR] writes the entry to auth's store
itself (SQLite in DIR, or PostgreSQL at $TWOKEY_DATABASE_URL); auth pushes it on its next
heartbeat once it runs. It needs access to auth's data, and is not two-key authorized.
`;

const VALUE_OPTIONS = ['--data-dir', '--jti', '--token-file', '--serial', '--cert', '--kid', '--username', '--state-dir', '--auth', '--svid-dir', '--registry'];
const TARGETS: Record<string, string[]> = {
  token: ['--jti', '--token-file'],
  cert: ['--serial', '--cert'],
  key: ['--kid'],
  user: ['--username'],
  list: [],
};
const CONNECTION = ['--state-dir', '--auth', '--svid-dir', '--registry'];

/** One revocation, resolved from the arguments before anything is contacted. */
type Request =
  | { action: 'token'; jti: string; exp: number | undefined }
  | { action: 'cert'; serial: string; notAfter: number | undefined }
  | { action: 'key'; kid: string }
  | { action: 'user'; username: string }
  | { action: 'list'; json: boolean };

export async function run(args: string[]): Promise<number> {
  if (args.length === 0 || args.includes('--help') || args.includes('-h')) {
    process.stdout.write(usage);
    return args.length === 0 ? 2 : 0;
  }
  const options = new Map<string, string>();
  const flags = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--json' || arg === '--direct') flags.add(arg);
    else if (VALUE_OPTIONS.includes(arg)) {
      const value = args[++i];
      if (value === undefined || value === '') return fail(`${arg} needs a value`);
      if (options.has(arg)) return fail(`${arg} given twice`);
      options.set(arg, value);
    } else if (arg.startsWith('-')) return fail(`unknown option ${arg}`);
    else positional.push(arg);
  }
  const [action, ...extra] = positional;
  if (extra.length > 0) return fail(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (action === undefined || !(action in TARGETS)) return fail(`unknown action ${JSON.stringify(action ?? '')}`);
  // --data-dir alone has always meant auth's store, so it implies --direct.
  const direct = flags.has('--direct') || options.has('--data-dir');
  for (const name of options.keys()) {
    if (CONNECTION.includes(name) && direct) return fail(`${name} does not go with --direct (which writes auth's store itself)`);
    if (name === '--data-dir' || CONNECTION.includes(name)) continue;
    if (!TARGETS[action]!.includes(name)) return fail(`${name} does not go with ${action}`);
  }
  if (flags.has('--json') && action !== 'list') return fail('--json goes with list');
  let request: Request;
  try {
    request = resolveRequest(action, options, flags.has('--json'));
  } catch (err) {
    if (isTwokeyError(err)) return fail(err.message);
    throw err;
  }
  try {
    return direct ? await runDirect(request, options.get('--data-dir')) : await runOverMtls(request, options);
  } catch (err) {
    if (isTwokeyError(err) || err instanceof AdminCallFailed) {
      process.stderr.write(`twokey revoke: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

function resolveRequest(action: string, options: Map<string, string>, json: boolean): Request {
  switch (action) {
    case 'token':
      return { action, ...tokenTarget(options) };
    case 'cert':
      return { action, ...certTarget(options) };
    case 'key': {
      const kid = options.get('--kid');
      if (kid === undefined) throw new TwokeyError('ERR_REQUEST_INVALID', 'key needs --kid');
      if (!/^[\x21-\x7e]{1,128}$/.test(kid)) throw new TwokeyError('ERR_REQUEST_INVALID', '--kid must be 1-128 printable characters');
      return { action, kid };
    }
    case 'user': {
      const username = options.get('--username');
      if (username === undefined) throw new TwokeyError('ERR_REQUEST_INVALID', 'user needs --username');
      if (!isUsername(username)) throw new TwokeyError('ERR_REQUEST_INVALID', '--username is not a valid username');
      return { action, username };
    }
    default:
      return { action: 'list', json };
  }
}

async function runOverMtls(request: Request, options: Map<string, string>): Promise<number> {
  const env = process.env;
  const connection = resolveAdminConnection({
    stateDir: options.get('--state-dir') ?? env['TWOKEY_STATE_DIR'] ?? '.twokey',
    registryFile: options.get('--registry') ?? env['TWOKEY_REGISTRY'] ?? DEFAULT_REGISTRY_PATH,
    address: options.get('--auth') ?? env['TWOKEY_AUTH_ADDR'],
    svidDir: options.get('--svid-dir') ?? env['TWOKEY_SVID_DIR'],
  });
  const admin = await AdminClient.connect(connection);
  try {
    const done = (what: string, seq: number): number => {
      process.stdout.write(`${what}; auth pushed revocation set ${seq} to the mesh\n`);
      return 0;
    };
    switch (request.action) {
      case 'token':
        return done(`revoked token ${request.jti}`, await admin.revokeToken(request.jti, request.exp ?? 0));
      case 'cert':
        return done(`revoked certificate ${request.serial}`, await admin.revokeCertificate(request.serial, request.notAfter ?? 0));
      case 'key':
        return done(`withdrew signing key ${request.kid} (auth signs with another from now on)`, await admin.withdrawKey(request.kid));
      case 'user':
        return done(`disabled ${request.username}`, await admin.disableUser(request.username));
      case 'list':
        printEntries((await admin.list()).entries, request.json);
        return 0;
    }
  } finally {
    admin.close();
  }
}

async function runDirect(request: Request, dataDir: string | undefined): Promise<number> {
  // With TWOKEY_DATABASE_URL set, the revocations are the auth replicas' shared ones in PostgreSQL.
  const pg = postgresConfig(process.env);
  const storage = await openAuthStorage(pg === undefined ? { dataDir: dataDir ?? defaultAuthDataDir() } : { postgres: pg });
  try {
    const store = storage.revocations;
    const now = Math.floor(Date.now() / 1000);
    const record = async (entry: RevocationEntry): Promise<number> => {
      await store.add(entry);
      process.stdout.write(`revoked ${entry.kind} ${entry.value} (kept in the set until ${new Date(entry.keepUntilSeconds * 1000).toISOString()})\n`);
      return 0;
    };
    switch (request.action) {
      case 'token':
        return await record(jtiEntry(request.jti, request.exp, now));
      case 'cert':
        return await record(serialEntry(request.serial, request.notAfter, now));
      case 'user':
        await new UserStore(storage.users).setDisabled(request.username, true);
        return await record(disabledSubjectEntry(request.username, now));
      case 'key': {
        await record(withdrawnKidEntry(request.kid, now));
        // Never sign again with it: rotate until it is neither the current nor the next key.
        const keys = new SigningKeys(storage.keys, { rotationMs: Number.MAX_SAFE_INTEGER });
        for (let i = 0; i < 2 && (await keys.jwks()).keys.slice(0, 2).some((k) => k.kid === request.kid); i++) {
          process.stdout.write(`rotated: ${await keys.rotate(`kid ${request.kid} withdrawn`)} signs now\n`);
        }
        return 0;
      }
      case 'list':
        printEntries(await store.list(), request.json);
        return 0;
    }
  } finally {
    await storage.close();
  }
}

function printEntries(entries: readonly RevocationEntry[], json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
    return;
  }
  for (const e of entries) {
    process.stdout.write(`${e.kind.padEnd(7)} ${e.value.padEnd(44)} since ${new Date(e.atSeconds * 1000).toISOString()} until ${new Date(e.keepUntilSeconds * 1000).toISOString()}\n`);
  }
  if (entries.length === 0) process.stdout.write('no revocations\n');
}

// Undefined exp / notAfter: not known, so the entry stays as long as any token / certificate can live.
function tokenTarget(options: Map<string, string>): { jti: string; exp: number | undefined } {
  const file = options.get('--token-file');
  const jti = options.get('--jti');
  if ((file === undefined) === (jti === undefined)) throw new TwokeyError('ERR_REQUEST_INVALID', 'token needs exactly one of --jti or --token-file');
  if (jti !== undefined) {
    if (!JTI.test(jti)) throw new TwokeyError('ERR_REQUEST_INVALID', '--jti must be 16-128 base64url characters');
    return { jti, exp: undefined };
  }
  let claims: ReturnType<typeof decodeJwt>;
  try {
    claims = decodeJwt(readFileSync(file!, 'utf8').trim());
  } catch {
    throw new TwokeyError('ERR_REQUEST_INVALID', `${file} does not hold a JWT`);
  }
  if (typeof claims.jti !== 'string' || !JTI.test(claims.jti)) throw new TwokeyError('ERR_REQUEST_INVALID', 'the token has no usable jti');
  return { jti: claims.jti, exp: typeof claims.exp === 'number' && Number.isSafeInteger(claims.exp) && claims.exp > 0 ? claims.exp : undefined };
}

function certTarget(options: Map<string, string>): { serial: string; notAfter: number | undefined } {
  const file = options.get('--cert');
  const serial = options.get('--serial');
  if ((file === undefined) === (serial === undefined)) throw new TwokeyError('ERR_REQUEST_INVALID', 'cert needs exactly one of --serial or --cert');
  if (serial !== undefined) return { serial: normalizeSerial(serial), notAfter: undefined };
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
