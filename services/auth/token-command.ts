// `twokey token login|mint|jwks`: a user token for development, from a running auth (login) or
// signed offline with a local development key that no mesh trusts (mint, jwks).
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { JWK } from 'jose';
import { loadRegistry } from '../../certs-ca/registry.ts';
import { parseDuration } from '../../certs-ca/duration.ts';
import { AuthConnection } from '../authz/auth-connection.ts';
import { TwokeyError, isTwokeyError } from '../authz/errors.ts';
import { SvidSource } from '../authz/svid-source.ts';
import { SpiffeId } from '../authz/spiffe-id.ts';
import { TestTokens } from '../authz/testing/test-tokens.ts';

export const usage = `Usage: twokey token <login|mint|jwks> [options]

  login --user NAME --password-stdin [--auth HOST:PORT] [--svid-dir DIR] [--registry FILE]
        [--auth-workload NAME] [--json]
        Logs NAME in at a running auth (Auth/Login over mTLS) and prints the access token.
        The password is read from stdin only. The certificate in --svid-dir must grant
        /twokey.auth.v1.Auth/Login: auth accepts logins only from workloads the registry
        allows to make them (give developers an entry with 'deployed: false' that grants only
        Auth/Login). auth throttles failed logins per user and source.
          --auth           auth's mesh address (default $TWOKEY_AUTH_ADDR, else 127.0.0.1:8443)
          --svid-dir       the caller's certificate folder (default $TWOKEY_SVID_DIR)
          --registry       the registry (default $TWOKEY_REGISTRY): trust domain, auth's identity
          --auth-workload  auth's workload name in the registry (default auth)
          --json           print the whole response: access_token, token_type, expires_in, scope

  mint  --key FILE --sub NAME [--scope SCOPE ...] [--ttl DUR]
        (--registry FILE | --trust-domain TD) [--issuer URL] [--audience ID]
        DEVELOPMENT ONLY. Signs a user token offline with the ES256 key in FILE (created, 0600,
        when missing), never with auth's keys: no mesh member trusts it, only code handed the
        key's JWK Set ('twokey token jwks --key FILE' into StaticKeys.fromJwks in a local test,
        or 'twokey authz check --jwks'). Its kid starts with "dev-".
          --scope     a scope the token carries (repeatable)
          --ttl       lifetime (default 15m, at most 24h)
          --issuer    default: the registry's auth.issuer, else https://auth.<trust domain>
          --audience  default: spiffe://<trust domain>

  jwks  --key FILE
        DEVELOPMENT ONLY. Prints the public JWK Set of FILE's key (creating it when missing).
`;

class UsageError extends Error {}

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  user: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  auth: { type: 'string' },
  'svid-dir': { type: 'string' },
  registry: { type: 'string' },
  'auth-workload': { type: 'string' },
  json: { type: 'boolean' },
  key: { type: 'string' },
  sub: { type: 'string' },
  scope: { type: 'string', multiple: true },
  ttl: { type: 'string' },
  'trust-domain': { type: 'string' },
  issuer: { type: 'string' },
  audience: { type: 'string' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>['values'];

const ALLOWED: Record<string, readonly (keyof Values)[]> = {
  login: ['user', 'password-stdin', 'auth', 'svid-dir', 'registry', 'auth-workload', 'json'],
  mint: ['key', 'sub', 'scope', 'ttl', 'registry', 'trust-domain', 'issuer', 'audience'],
  jwks: ['key'],
};

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage);
    return sub === undefined ? 2 : 0;
  }
  try {
    const allowed = ALLOWED[sub];
    if (allowed === undefined) throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}`);
    let values: Values;
    try {
      ({ values } = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    const stray = Object.keys(values).find((k) => !allowed.includes(k as keyof Values));
    if (stray !== undefined) throw new UsageError(`--${stray} does not go with ${sub}`);
    if (sub === 'login') await login(values);
    else if (sub === 'mint') await mint(values);
    else process.stdout.write(`${JSON.stringify((await devTokens(required(values, 'key'), 'spiffe://dev.invalid', 'https://auth.dev.invalid')).jwks, null, 2)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`twokey token: ${err.message}\nRun 'twokey token --help' for usage.\n`);
      return 2;
    }
    const e = err as { code?: unknown; details?: unknown };
    if (isTwokeyError(err)) process.stderr.write(`twokey token ${sub}: ${err.message} [${err.code}]\n`);
    else if (typeof e?.code === 'number' && typeof e.details === 'string') process.stderr.write(`twokey token ${sub}: refused by auth: ${e.details}\n`);
    else throw err;
    return 1;
  }
}

function required(values: Values, name: 'key' | 'sub' | 'user'): string {
  const value = values[name];
  if (value === undefined || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function login(values: Values): Promise<void> {
  const user = required(values, 'user');
  // A password on the command line is readable by every user of the machine (ps, /proc).
  if (values['password-stdin'] !== true) throw new UsageError('login reads the password from stdin only: pass --password-stdin');
  const registryPath = values.registry ?? process.env['TWOKEY_REGISTRY'];
  if (registryPath === undefined) throw new UsageError('--registry (or TWOKEY_REGISTRY) is required: it names the trust domain and auth');
  const svidDir = values['svid-dir'] ?? process.env['TWOKEY_SVID_DIR'];
  if (svidDir === undefined) throw new UsageError('--svid-dir (or TWOKEY_SVID_DIR) is required: a certificate granted /twokey.auth.v1.Auth/Login');
  const registry = loadRegistry(registryPath);
  const authName = values['auth-workload'] ?? 'auth';
  const authEntry = registry.workloads.find((w) => w.name === authName);
  if (authEntry === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `the registry ${registryPath} names no workload ${JSON.stringify(authName)}`);
  const password = await readStdin();
  if (password === '') throw new UsageError('no password on stdin');
  const svid = await SvidSource.open(svidDir, { trustDomain: registry.trustDomain, grantsOid: registry.grantsOid, pollIntervalMs: 0 });
  const auth = new AuthConnection({ svid, address: values.auth ?? process.env['TWOKEY_AUTH_ADDR'] ?? '127.0.0.1:8443', authId: authEntry.spiffeId });
  try {
    if (!svid.svid.grants.allows('/twokey.auth.v1.Auth/Login')) {
      throw new TwokeyError('ERR_METHOD_NOT_GRANTED', `the certificate in ${svidDir} (${svid.svid.spiffeId}) does not grant /twokey.auth.v1.Auth/Login: use one whose registry entry grants it`);
    }
    const issued = await auth.login(user, password);
    process.stdout.write(values.json ? `${JSON.stringify(issued)}\n` : `${issued.access_token}\n`);
  } finally {
    auth.close();
    svid.close();
  }
}

/** The development key in `file` (created 0600 when missing) as a token signer. */
async function devTokens(file: string, audience: string, issuer: string): Promise<TestTokens> {
  let jwk: JWK;
  if (existsSync(file)) {
    try {
      jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
    } catch (err) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `${file} is not a development key (JSON JWK): ${(err as Error).message}`);
    }
  } else {
    jwk = await TestTokens.generatePrivateJwk('dev');
    writeFileSync(file, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
    process.stderr.write(`twokey token: created the development key ${file} (keep it out of version control)\n`);
  }
  if (typeof jwk.kid !== 'string' || !jwk.kid.startsWith('dev-')) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${file} is not a development key made by 'twokey token' (its kid must start with "dev-")`);
  }
  try {
    return await TestTokens.fromPrivateJwk(jwk, { audience, issuer });
  } catch (err) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${file}: ${(err as Error).message}`);
  }
}

async function mint(values: Values): Promise<void> {
  const file = required(values, 'key');
  const subject = required(values, 'sub');
  let trustDomain = values['trust-domain'];
  let issuer = values.issuer;
  if (values.registry !== undefined) {
    const registry = loadRegistry(values.registry);
    if (trustDomain !== undefined && trustDomain !== registry.trustDomain) throw new UsageError(`--trust-domain ${trustDomain} differs from the registry's ${registry.trustDomain}`);
    trustDomain = registry.trustDomain;
    issuer ??= registry.auth.issuer;
  }
  if (trustDomain === undefined) throw new UsageError('pass --registry FILE or --trust-domain TD');
  const audience = values.audience ?? SpiffeId.forTrustDomain(trustDomain).toString();
  const ttl = parseDuration(values.ttl ?? '15m', '--ttl', 'ERR_CONFIG_INVALID');
  if (ttl > 24 * 3600) throw new UsageError('--ttl is at most 24h');
  const tokens = await devTokens(file, audience, issuer ?? `https://auth.${trustDomain}`);
  const now = Math.floor(Date.now() / 1000);
  const token = await tokens.userToken(subject, values.scope ?? [], { exp: now + ttl });
  process.stderr.write(`twokey token mint: DEVELOPMENT ONLY: signed with ${file}; only servers given its JWK Set accept it\n`);
  process.stdout.write(`${token}\n`);
}
