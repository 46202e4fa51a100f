// `twokey authz check`: the decision a mesh server would make for one call, computed offline with every check shown;
// and `twokey authz serve | nginx-config | envoy-config`, the external authorizer (services/authorizer/).
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { status } from '@grpc/grpc-js';
import { SignJWT, exportJWK } from 'jose';
import { publishedJwks } from '../services/auth/published-keys.ts';
import { CA_FILES } from '../certs-ca/certificate-authority.ts';
import { parseCaConfig } from '../certs-ca/ca-config.ts';
import { protoRootsFor } from '../certs-ca/proto-roots.ts';
import { defaultIssuerFor, loadRegistry } from '../certs-ca/registry.ts';
import { decide } from '../services/authz/decision.ts';
import type { Decision, DecisionInput, PeerResult } from '../services/authz/types.ts';
import { TwokeyError, isTwokeyError } from '../services/authz/errors.ts';
import { StaticKeys } from '../services/authz/jwks.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { packagePath } from '../services/authz/package-root.ts';
import { PeerIdentityCache } from '../services/authz/peer-identity.ts';
import { authorizeOwner } from '../services/authz/resource.ts';
import { certificatesIn, chainsToBundle } from '../services/authz/svid-source.ts';
import type { FederationPolicy } from '../services/authz/federation.ts';
import { SpiffeBundle } from '../services/authz/spiffe-bundle.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { TrustBundleSet } from '../services/authz/trust-bundle-set.ts';
import { DEFAULT_GRANTS_OID } from '../services/authz/svid.ts';
import { TokenAuthenticator } from '../services/authz/token-authenticator.ts';
import { TokenVerifier, type VerificationKeys } from '../services/authz/token-verifier.ts';
import { AUTHORIZER_SUBCOMMANDS, runAuthorizerCommand, usage as authorizerUsage } from '../services/authorizer/authorizer-cli.ts';

export const checkUsage = `Usage: twokey authz check --cert FILE (--token JWT | --token-file FILE | --claims FILE)
                          --method /pkg.Service/Method [options]

Computes, with no service running, the decision a twokey server would make for one call:
the calling workload's certificate, the bearer token it presents, and the method. Prints the
result of every check in decision order and the reason, like a server's decision log.

  --cert FILE          the caller's certificate (svid.pem: PEM, leaf first; or DER)
  --token JWT          the bearer token (without "Bearer "); it lands in shell history and
                       the process list, so prefer --token-file for a live token
  --token-file FILE    read the token from a file ("-" for stdin)
  --claims FILE        a JSON claims set instead of a token: it is signed here with a throwaway
                       key, so every check runs except trust in the signing key
  --method PATH        the gRPC method, e.g. /twokey.images.v1.ImageStore/GetImage
  --owner ID           also run the handler's resource check against this owner
  --jwks FILE          verification keys: a JWK Set file (e.g. from /.well-known/jwks.json)
  --state DIR          a local state directory (npm start): keys from its auth database,
                       trust bundle, trust domain and grants OID from its CA
  --server SPIFFE_ID   the service receiving the call (accepted as token audience)
  --trust-domain TD    default: the state's CA, else the registry's
  --registry FILE      for the trust domain and token issuer (default deploy/registry.yaml)
  --issuer URL         expected token issuer (default: the registry's)
  --bundle FILE        trust bundle to check the certificate chain against
  --partner-bundle FILE  a federated partner's SPIFFE bundle (JSON) to check a partner
                       certificate's chain against (default: the bundle file the registry's
                       federation section names for that partner)
  --grants-oid OID     OID of the grants extension (default: the state's CA, else ${DEFAULT_GRANTS_OID})
  --proto-root DIR     further proto roots declaring methods (repeatable; the registry's
                       protoRoots are searched too, and ./proto when neither names one)
  --at TIME            evaluate at this ISO 8601 time instead of now
  --json               print the decision as JSON

A certificate of a partner trust domain (the registry's federation section) is checked against
that partner's own bundle and its grants are cut down to our ceiling for it: the output shows
the certificate's grants, the ceiling and the intersection that decides.

Exit status: 0 allowed, 1 denied, 2 bad usage or unreadable input.
`;

export const usage = `${checkUsage}\n${authorizerUsage}`;

class UsageError extends Error {}

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  cert: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  claims: { type: 'string' },
  method: { type: 'string' },
  owner: { type: 'string' },
  jwks: { type: 'string' },
  state: { type: 'string' },
  server: { type: 'string' },
  'trust-domain': { type: 'string' },
  registry: { type: 'string' },
  issuer: { type: 'string' },
  bundle: { type: 'string' },
  'partner-bundle': { type: 'string' },
  'grants-oid': { type: 'string' },
  'proto-root': { type: 'string', multiple: true },
  at: { type: 'string' },
  json: { type: 'boolean' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>['values'];

const DEFAULT_REGISTRY = packagePath('deploy', 'registry.yaml');

/** `twokey authz <subcommand>`. */
export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage);
    return sub === undefined ? 2 : 0;
  }
  const authorizerSub = AUTHORIZER_SUBCOMMANDS.find((s) => s === sub);
  if (authorizerSub !== undefined) return runAuthorizerCommand(authorizerSub, rest);
  if (sub !== 'check') return usageFailure(`unknown subcommand ${JSON.stringify(sub)}`);
  let values: Values;
  try {
    ({ values } = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    return usageFailure((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(checkUsage);
    return 0;
  }
  try {
    const result = await check(values);
    process.stdout.write(values.json ? `${JSON.stringify(result.json, null, 2)}\n` : result.text);
    return result.allow ? 0 : 1;
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(err.message);
    if (isTwokeyError(err)) {
      process.stderr.write(`twokey authz check: ${err.message} [${err.code}]\n`);
      return 2;
    }
    throw err;
  }
}

function usageFailure(message: string): number {
  process.stderr.write(`twokey authz check: ${message}\nRun 'twokey authz --help' for usage.\n`);
  return 2;
}

interface Settings {
  trustDomain: string;
  issuer: string;
  grantsOid: string | undefined;
  bundle: X509Certificate[] | undefined;
  jwks: unknown;
  federation: FederationPolicy | undefined;
  /** The registry's proto roots, when a registry was read. */
  protoRoots: string[] | undefined;
}

function readInput(path: string, what: string): Buffer {
  try {
    return path === '-' ? readFileSync(0) : readFileSync(path);
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Reads what a --state directory (npm start) holds: CA settings and the auth service's published keys. */
function fromState(dir: string): { trustDomain: string; grantsOid: string; bundle: Buffer; jwks: unknown } {
  const root = resolve(dir);
  const caDir = join(root, 'ca');
  const configFile = join(caDir, CA_FILES.config);
  const authDir = join(root, 'data', 'auth');
  if (!existsSync(configFile)) throw new UsageError(`${dir} is not a twokey state directory (no ca/${CA_FILES.config})`);
  const config = parseCaConfig(readFileSync(configFile, 'utf8'), configFile);
  // Read-only (auth's own storage code, opened read-only): the offline check must never change a running mesh's state.
  const jwks = publishedJwks(authDir);
  if (jwks === undefined) throw new UsageError(`${dir} has no auth database yet (in ${authDir}): start the mesh once, or pass --jwks`);
  return { trustDomain: config.trustDomain, grantsOid: config.grantsOid, bundle: readFileSync(join(caDir, CA_FILES.cert)), jwks };
}

function settingsFrom(values: Values): Settings {
  if (values.jwks !== undefined && values.state !== undefined) throw new UsageError('give --jwks or --state, not both');
  const state = values.state !== undefined ? fromState(values.state) : undefined;
  let registry: { trustDomain: string; issuer: string; protoRoots: string[]; federation: FederationPolicy | undefined } | undefined;
  const registryPath = values.registry ?? DEFAULT_REGISTRY;
  if (values.registry !== undefined || existsSync(registryPath)) {
    const loaded = loadRegistry(registryPath);
    registry = { trustDomain: loaded.trustDomain, issuer: loaded.auth.issuer, protoRoots: loaded.protoRoots, federation: loaded.federation };
  }
  const trustDomain = values['trust-domain'] ?? state?.trustDomain ?? registry?.trustDomain;
  if (trustDomain === undefined || !SpiffeId.isValidTrustDomain(trustDomain)) throw new UsageError('no valid trust domain: pass --trust-domain, --state or --registry');
  const bundleBytes = values.bundle !== undefined ? readInput(values.bundle, 'bundle') : state?.bundle;
  return {
    trustDomain,
    issuer: values.issuer ?? registry?.issuer ?? defaultIssuerFor(trustDomain),
    grantsOid: values['grants-oid'] ?? state?.grantsOid,
    bundle: bundleBytes === undefined ? undefined : certificatesIn(bundleBytes, 'bundle'),
    jwks: values.jwks !== undefined ? readInput(values.jwks, 'JWK Set').toString('utf8') : state?.jwks,
    federation: registry?.federation,
    protoRoots: registry?.protoRoots,
  };
}

/**
 * With a federation section: the chain is verified, as a server does, against the bundle of the
 * trust domain the certificate names (ours from --bundle/--state, a partner's from its bundle file).
 */
function federatedPeerFrom(chain: X509Certificate[], peers: PeerIdentityCache, settings: Settings, partnerBundleFile: string | undefined): { peer: PeerResult; chainNote: string } {
  const leaf = peers.fromDer(Buffer.from(chain[0]!.raw));
  if (!leaf.ok) return { peer: leaf, chainNote: 'chain: not checked (the certificate is not a valid X.509-SVID)' };
  const td = leaf.identity.spiffeId.trustDomain;
  const partner = settings.federation!.partner(td);
  if (td === settings.trustDomain) {
    if (settings.bundle === undefined) {
      return { peer: { ok: true, identity: { ...leaf.identity, verifiedTrustDomain: td } }, chainNote: 'chain: not checked (no --bundle or --state)' };
    }
    peers.setTrustBundles(TrustBundleSet.of(td, settings.bundle));
    return { peer: peers.fromChain(chain), chainNote: `chain: verified against the bundle of our trust domain ${td}` };
  }
  if (partner === undefined) return { peer: leaf, chainNote: `chain: not checked (${td} is not a federated partner)` };
  const file = partnerBundleFile ?? (partner.bundle.kind === 'file' ? partner.bundle.path : partner.bundle.initialFile);
  if (file === undefined) throw new UsageError(`no bundle file for partner ${td} in the registry: pass --partner-bundle FILE (its SPIFFE bundle)`);
  const roots = SpiffeBundle.parse(readInput(file, 'partner bundle'), td).x509Authorities;
  // Our own roots go in too, kept apart: a partner certificate that names us is told apart from one our CA issued.
  peers.setTrustBundles(TrustBundleSet.of(settings.trustDomain, settings.bundle ?? []).withBundle(td, roots));
  return { peer: peers.fromChain(chain), chainNote: `chain: verified against partner ${td}'s own bundle (${file})` };
}

function peerFrom(certFile: string, settings: Settings, partnerBundleFile?: string): { peer: PeerResult; chainNote: string } {
  const bytes = readInput(certFile, 'certificate');
  let chain: X509Certificate[];
  try {
    chain = bytes.includes('-----BEGIN') ? certificatesIn(bytes, certFile) : [new X509Certificate(bytes)];
  } catch (err) {
    throw new UsageError(`${certFile} is not a certificate: ${(err as Error).message}`);
  }
  const peers = new PeerIdentityCache(settings.grantsOid === undefined ? {} : { grantsOid: settings.grantsOid });
  if (settings.federation !== undefined) return federatedPeerFrom(chain, peers, settings, partnerBundleFile);
  if (settings.bundle !== undefined && !chainsToBundle(chain, settings.bundle)) {
    return { peer: { ok: false, error: new TwokeyError('ERR_PEER_CERT_INVALID', 'certificate does not chain to the trust bundle (TLS would refuse the connection)') }, chainNote: 'chain: does not chain to the bundle' };
  }
  return { peer: peers.fromDer(Buffer.from(chain[0]!.raw)), chainNote: settings.bundle === undefined ? 'chain: not checked (no --bundle or --state)' : 'chain: verified against the bundle' };
}

/** Signs a claims file with a throwaway key, so the real verifier runs every claim check on it. */
async function tokenFromClaims(file: string): Promise<{ token: string; keys: VerificationKeys }> {
  let claims: unknown;
  try {
    claims = JSON.parse(readInput(file, 'claims').toString('utf8'));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${file} is not JSON`);
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) throw new UsageError(`${file} must hold a JSON object of claims`);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = 'offline-claims';
  const token = await new SignJWT(claims as Record<string, unknown>).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid }).sign(privateKey);
  const keys = await StaticKeys.fromJwks({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] });
  return { token, keys };
}

interface CheckOutput {
  allow: boolean;
  text: string;
  json: Record<string, unknown>;
}

export async function check(values: Values): Promise<CheckOutput> {
  if (values.cert === undefined) throw new UsageError('--cert is required');
  if (values.method === undefined) throw new UsageError('--method is required');
  const tokenInputs = [values.token, values['token-file'], values.claims].filter((v) => v !== undefined);
  if (tokenInputs.length > 1) throw new UsageError('give one of --token, --token-file, --claims');
  const settings = settingsFrom(values);
  const now = values.at !== undefined ? Date.parse(values.at) : Date.now();
  if (Number.isNaN(now)) throw new UsageError(`--at ${JSON.stringify(values.at)} is not an ISO 8601 time`);
  const catalog = MethodCatalog.load({ extraRoots: protoRootsFor(settings.protoRoots === undefined ? undefined : { protoRoots: settings.protoRoots }, values['proto-root'] ?? []) });
  const { peer, chainNote } = peerFrom(values.cert, settings, values['partner-bundle']);

  let raw: string | undefined = values.token ?? (values['token-file'] !== undefined ? readInput(values['token-file'], 'token').toString('utf8').trim() : undefined);
  let keys: VerificationKeys | undefined;
  if (values.claims !== undefined) ({ token: raw, keys } = await tokenFromClaims(values.claims));
  else if (raw !== undefined) {
    if (settings.jwks === undefined) throw new UsageError('verifying a token needs keys: pass --jwks FILE or --state DIR (or use --claims)');
    keys = await StaticKeys.fromJwks(settings.jwks);
  }
  raw = raw?.replace(/^Bearer /, '');

  const audiences = [SpiffeId.forTrustDomain(settings.trustDomain).toString()];
  if (values.server !== undefined) audiences.push(SpiffeId.parse(values.server).toString());
  const input: DecisionInput = {
    peer,
    method: values.method,
    rule: catalog.ruleOf(values.method),
    methodKnown: catalog.has(values.method),
    now,
    trustDomain: settings.trustDomain,
    federation: settings.federation,
    token:
      raw === undefined || keys === undefined
        ? { ok: false, error: new TwokeyError('ERR_TOKEN_MISSING', 'no token given (--token, --token-file or --claims)') }
        : await new TokenAuthenticator({ verifier: new TokenVerifier({ keys, issuer: settings.issuer, audiences, ...(values.server !== undefined ? { delegatedAudience: audiences[1]! } : {}), clock: () => now }), clock: () => now }).verify(raw),
  };
  const decision = decide(input);
  const rule = input.rule;
  let resource: { outcome: 'pass' | 'fail' | 'skip'; detail: string } | undefined;
  if (values.owner !== undefined) {
    if (!decision.allow) resource = { outcome: 'skip', detail: `not evaluated: ${decision.failedCheck ?? 'decision'} failed` };
    else if (rule === undefined || 'certificateOnly' in rule) resource = { outcome: 'skip', detail: 'certificate-only method: no resource check' };
    else {
      try {
        authorizeOwner(decision.token, rule.permission, values.owner);
        resource = { outcome: 'pass', detail: decision.token?.subject === values.owner ? `owner ${values.owner} is the subject` : `holds "${rule.permission}:any"` };
      } catch (err) {
        resource = { outcome: 'fail', detail: (err as Error).message };
      }
    }
  }
  const allow = decision.allow && resource?.outcome !== 'fail';
  const ceiling = peer.ok ? settings.federation?.ceilingFor(peer.identity.spiffeId) : undefined;
  const partner = peer.ok && settings.federation?.partner(peer.identity.spiffeId.trustDomain) !== undefined ? peer.identity : undefined;
  return render(decision, {
    allow,
    resource,
    chainNote,
    method: values.method,
    claimsMode: values.claims !== undefined,
    federation:
      partner === undefined
        ? undefined
        : {
            trustDomain: partner.spiffeId.trustDomain,
            ceiling: ceiling?.workloads.toString() ?? null,
            certificateGrants: partner.grants.toStrings(),
            ceilingMethods: ceiling?.methods.toStrings() ?? [],
            effectiveGrants: ceiling === undefined ? [] : ceiling.effectiveGrants(partner.grants).toStrings(),
            ceilingScopes: ceiling === undefined ? [] : [...ceiling.scopes],
          },
  });
}

interface FederationView {
  trustDomain: string;
  ceiling: string | null;
  certificateGrants: string[];
  ceilingMethods: string[];
  effectiveGrants: string[];
  ceilingScopes: string[];
}

function render(
  decision: Decision,
  extra: {
    allow: boolean;
    resource: { outcome: string; detail: string } | undefined;
    chainNote: string;
    method: string;
    claimsMode: boolean;
    federation: FederationView | undefined;
  },
): CheckOutput {
  const code = extra.allow ? status.OK : extra.resource?.outcome === 'fail' ? status.PERMISSION_DENIED : decision.code;
  const rows: Array<{ check: string; outcome: string; detail: string }> = decision.checks.map((c) => ({ check: c.check, outcome: c.outcome, detail: c.detail }));
  if (extra.resource) rows.push({ check: 'resource', ...extra.resource });
  const reason = extra.resource?.outcome === 'fail' ? `resource check failed: ${extra.resource.detail.replace(/^resource check failed: /, '')}` : decision.reason;
  const lines = [
    `${extra.method}: ${extra.allow ? 'ALLOW' : 'DENY'} (${status[code]})`,
    ...rows.map((r) => `  ${r.check.padEnd(10)} ${r.outcome.padEnd(5)} ${r.detail}`),
    `reason: ${reason}`,
    `note: ${extra.chainNote}${extra.claimsMode ? '; token built from --claims (signature trust not checked)' : ''}`,
  ];
  const f = extra.federation;
  if (f !== undefined) {
    const list = (items: string[]): string => (items.length === 0 ? '(none)' : items.join(' '));
    lines.push(
      `partner trust domain ${f.trustDomain}, ${f.ceiling === null ? 'no ceiling covers this workload: it is granted nothing' : `ceiling ${f.ceiling}`}`,
      `  certificate grants: ${list(f.certificateGrants)}`,
      `  ceiling methods:    ${list(f.ceilingMethods)}`,
      `  effective grants:   ${list(f.effectiveGrants)}`,
      `  ceiling scopes:     ${list(f.ceilingScopes)}`,
    );
  }
  return {
    allow: extra.allow,
    text: `${lines.join('\n')}\n`,
    json: {
      method: extra.method,
      allow: extra.allow,
      code: status[code],
      checks: rows,
      reason,
      note: extra.chainNote,
      claimsMode: extra.claimsMode,
      ...(f === undefined ? {} : { federation: f }),
    },
  };
}
