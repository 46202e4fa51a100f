// `twokey ca ...`: the command-line face of the workload CA (init, issue, sign, inspect, bundle).
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isTwokeyError, TwokeyError } from '../services/authz/errors.ts';
import { parseSvid, type Svid } from '../services/authz/svid.ts';
import { CertificateAuthority } from './certificate-authority.ts';
import { DEFAULT_MAX_TTL_SECONDS } from './ca-config.ts';
import { formatDuration } from './duration.ts';
import { protoRootsFor } from './proto-roots.ts';
import { loadRegistry, type Registry } from './registry.ts';

export const usage = `Usage: twokey ca <subcommand> [options]

The workload CA: issues X.509-SVIDs (one SPIFFE ID URI SAN, ECDSA P-256) carrying the gRPC
methods each workload may call, in a non-critical extension.

Subcommands:
  init     --dir DIR --trust-domain TD [--grants-oid OID] [--max-ttl DUR] [--ca-ttl DUR]
           Create a CA in DIR: ca.key (0600, never printed), ca.pem, config.json.
           Refuses to overwrite an existing CA.
             --grants-oid  OID of the grants extension (default 1.3.6.1.4.1.32473.7.1;
                           every arc must fit in 32 bits)
             --max-ttl     longest workload certificate lifetime (default ${formatDuration(DEFAULT_MAX_TTL_SECONDS)})
             --ca-ttl      lifetime of the CA certificate (default 1825d)

  issue    --dir DIR --spiffe-id ID --grant PATH [--grant PATH ...] [--ttl DUR]
           [--dns NAME ...] [--ip ADDR ...] [--proto-root DIR ...] --out OUT
           Issue one workload: OUT/svid.pem (leaf + chain), OUT/svid.key (0600),
           OUT/bundle.pem (trust bundle).
  issue    --dir DIR --registry FILE [--proto-root DIR ...] --out OUT
           Issue every workload in a registry (deploy/registry.yaml), one folder per
           workload name under OUT. Nothing is written unless every workload is valid.
             --spiffe-id   spiffe://<trust domain>/<path>, in the CA's trust domain
             --grant       exact gRPC path /pkg.Service/Method, or /pkg.Service/* for a whole
                           service; it must exist in twokey's own protos or the team's proto
                           roots (below) (repeatable)
             --ttl         certificate lifetime, e.g. 24h (default 24h, at most the CA's max)
             --dns, --ip   DNS / IP SANs for clients that verify hostnames (repeatable)
             --proto-root  further proto directory defining services grants may name
                           (repeatable). Searched: the registry's protoRoots (paths relative
                           to the registry file), every --proto-root, and, when neither
                           names one, ./proto if it exists

  sign     --dir DIR --csr FILE (--spiffe-id ID --grant PATH ... | --registry FILE --workload NAME)
           [--ttl DUR] [--dns NAME ...] [--ip ADDR ...] [--proto-root DIR ...] --out FILE
           Sign a PKCS#10 CSR from a workload that keeps its own key. The CSR signature must
           verify; identity and grants come from these options, never from the CSR.
           Writes the certificate chain to FILE.

  inspect  FILE [--json] [--grants-oid OID]
           Show a certificate's SPIFFE ID, grants, serial, validity, issuer and fingerprints
           (FILE: PEM, first certificate is shown; or DER).

  bundle   --dir DIR
           Print the trust bundle (the CA certificate) to stdout.

Durations: 90s, 15m, 24h, 30d, 1h30m.
Exit status: 0 success, 1 refused or failed (the message names the problem), 2 bad usage.
`;

/** Bad command-line usage: exit code 2. */
class UsageError extends Error {}

type Options = Record<string, string | boolean | string[] | undefined>;

const one = { type: 'string' } as const;
const many = { type: 'string', multiple: true } as const;
const flag = { type: 'boolean' } as const;
const help = { help: { type: 'boolean', short: 'h' } } as const;

const SPECS = {
  init: { ...help, dir: one, 'trust-domain': one, 'grants-oid': one, 'max-ttl': one, 'ca-ttl': one },
  issue: { ...help, dir: one, 'spiffe-id': one, grant: many, ttl: one, dns: many, ip: many, 'proto-root': many, registry: one, out: one },
  sign: { ...help, dir: one, csr: one, 'spiffe-id': one, grant: many, ttl: one, dns: many, ip: many, 'proto-root': many, registry: one, workload: one, out: one },
  inspect: { ...help, json: flag, 'grants-oid': one },
  bundle: { ...help, dir: one },
} satisfies Record<string, ParseArgsConfig['options']>;

type Subcommand = keyof typeof SPECS;

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(usage);
    return sub === undefined ? 2 : 0;
  }
  if (!(sub in SPECS)) return usageFailure(`unknown subcommand ${JSON.stringify(sub)}`);
  let parsed: { values: Options; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: SPECS[sub as Subcommand], strict: true, allowPositionals: sub === 'inspect' }) as typeof parsed;
  } catch (err) {
    return usageFailure(`${sub}: ${(err as Error).message}`);
  }
  if (parsed.values.help === true) {
    process.stdout.write(usage);
    return 0;
  }
  try {
    switch (sub as Subcommand) {
      case 'init':
        return init(parsed.values);
      case 'issue':
        return issue(parsed.values);
      case 'sign':
        return sign(parsed.values);
      case 'inspect':
        return inspect(parsed.values, parsed.positionals);
      case 'bundle':
        process.stdout.write(CertificateAuthority.open(required(parsed.values, 'dir')).bundlePem());
        return 0;
    }
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(`${sub}: ${err.message}`);
    if (isTwokeyError(err)) {
      process.stderr.write(`twokey ca ${sub}: ${err.message} [${err.code}]\n`);
      return 1;
    }
    throw err;
  }
}

function usageFailure(message: string): number {
  process.stderr.write(`twokey ca: ${message}\nRun 'twokey ca --help' for usage.\n`);
  return 2;
}

function required(values: Options, name: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

function optional(values: Options, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

function list(values: Options, name: string): string[] {
  const v = values[name];
  return Array.isArray(v) ? v : [];
}

function forbid(values: Options, names: string[], because: string): void {
  for (const name of names) {
    const v = values[name];
    if (v !== undefined && !(Array.isArray(v) && v.length === 0)) throw new UsageError(`--${name} cannot be combined with ${because}`);
  }
}

function init(values: Options): number {
  const ca = CertificateAuthority.init({
    dir: required(values, 'dir'),
    trustDomain: required(values, 'trust-domain'),
    grantsOid: optional(values, 'grants-oid'),
    maxTtl: optional(values, 'max-ttl'),
    caTtl: optional(values, 'ca-ttl'),
  });
  process.stdout.write(
    `created CA for trust domain ${ca.trustDomain} in ${ca.dir}\n` +
      `  certificate ${ca.dir}/ca.pem (valid until ${new Date(ca.certificate.validTo).toISOString()})\n` +
      `  grants OID  ${ca.grantsOid}\n  max TTL     ${formatDuration(ca.maxTtlSeconds)}\n`,
  );
  return 0;
}

function issue(values: Options): number {
  const ca = CertificateAuthority.open(required(values, 'dir'));
  const out = required(values, 'out');
  const registry = optional(values, 'registry');
  if (registry !== undefined) {
    forbid(values, ['spiffe-id', 'grant', 'ttl', 'dns', 'ip'], '--registry (the registry sets them)');
    const loaded = loadRegistry(registry);
    const extraProtoRoots = protoRootsFor(loaded, list(values, 'proto-root'));
    for (const w of ca.issueRegistry(loaded, out, { extraProtoRoots })) {
      process.stdout.write(`issued ${w.issued.svid.spiffeId} -> ${w.dir} (serial ${w.issued.svid.serialHex}, until ${w.issued.svid.notAfter.toISOString()})\n`);
    }
    return 0;
  }
  const issued = ca.issue({
    spiffeId: required(values, 'spiffe-id'),
    grants: list(values, 'grant'),
    ttl: optional(values, 'ttl'),
    dns: list(values, 'dns'),
    ip: list(values, 'ip'),
    extraProtoRoots: protoRootsFor(undefined, list(values, 'proto-root')),
  });
  ca.writeWorkload(out, issued);
  process.stdout.write(`issued ${issued.svid.spiffeId} -> ${out} (serial ${issued.svid.serialHex}, until ${issued.svid.notAfter.toISOString()})\n`);
  return 0;
}

function sign(values: Options): number {
  const ca = CertificateAuthority.open(required(values, 'dir'));
  const csrPath = required(values, 'csr');
  const out = required(values, 'out');
  let csr: Buffer;
  try {
    csr = readFileSync(csrPath);
  } catch (err) {
    throw new TwokeyError('ERR_CSR_INVALID', `cannot read CSR ${csrPath}: ${(err as Error).message}`);
  }
  const registryPath = optional(values, 'registry');
  let identity: { spiffeId: string; grants: string[]; ttl?: string | number; dns: string[]; ip: string[] };
  let registry: Registry | undefined;
  if (registryPath !== undefined) {
    forbid(values, ['spiffe-id', 'grant'], '--registry');
    const name = required(values, 'workload');
    registry = loadRegistry(registryPath);
    const w = registry.workloads.find((x) => x.name === name);
    if (w === undefined) throw new TwokeyError('ERR_REGISTRY_INVALID', `registry ${registryPath} has no workload named ${JSON.stringify(name)}`);
    identity = { spiffeId: w.spiffeId.toString(), grants: w.grants.toStrings(), ttl: optional(values, 'ttl') ?? w.ttl, dns: values.dns ? list(values, 'dns') : w.dns, ip: values.ip ? list(values, 'ip') : w.ip };
  } else {
    if (values.workload !== undefined) throw new UsageError('--workload needs --registry');
    identity = { spiffeId: required(values, 'spiffe-id'), grants: list(values, 'grant'), ttl: optional(values, 'ttl'), dns: list(values, 'dns'), ip: list(values, 'ip') };
  }
  const signed = ca.signCsr({ ...identity, csr, extraProtoRoots: protoRootsFor(registry, list(values, 'proto-root')) });
  writeFileSync(out, signed.chainPem);
  process.stdout.write(`signed ${signed.svid.spiffeId} -> ${out} (serial ${signed.svid.serialHex}, until ${signed.svid.notAfter.toISOString()})\n`);
  return 0;
}

function inspect(values: Options, positionals: string[]): number {
  if (positionals.length !== 1) throw new UsageError('expects exactly one certificate FILE');
  const file = positionals[0]!;
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new TwokeyError('ERR_PEER_CERT_INVALID', `cannot read ${file}: ${(err as Error).message}`);
  }
  const der = bytes.subarray(0, 11).toString('latin1') === '-----BEGIN ' ? firstPemCertificate(bytes.toString('latin1'), file) : bytes;
  const svid = parseSvid(der, { grantsOid: optional(values, 'grants-oid') });
  const description = describe(svid);
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(description, null, 2)}\n`);
  } else {
    process.stdout.write(
      [
        `SPIFFE ID:    ${description.spiffeId}`,
        `grants:       ${description.grants.length === 0 ? '(none)' : description.grants.join('\n              ')}`,
        `DNS SANs:     ${description.dns.join(', ') || '(none)'}`,
        `IP SANs:      ${description.ip.join(', ') || '(none)'}`,
        `serial:       ${description.serial}`,
        `not before:   ${description.notBefore}`,
        `not after:    ${description.notAfter}${description.expired ? '  (EXPIRED)' : ''}`,
        `issuer:       ${description.issuer}`,
        `SHA-256:      ${description.sha256Fingerprint}`,
        `x5t#S256:     ${description.x5tS256}`,
        '',
      ].join('\n'),
    );
  }
  return 0;
}

function describe(svid: Svid) {
  return {
    spiffeId: svid.spiffeId.toString(),
    grants: svid.grants.toStrings(),
    dns: svid.dns,
    ip: svid.ip,
    serial: svid.serialHex,
    notBefore: svid.notBefore.toISOString(),
    notAfter: svid.notAfter.toISOString(),
    expired: Date.now() > svid.notAfter.getTime(),
    issuer: svid.issuer,
    // The same colon-separated form `openssl x509 -fingerprint -sha256` prints.
    sha256Fingerprint: createHash('sha256').update(svid.der).digest('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:'),
    x5tS256: svid.thumbprint,
  };
}

function firstPemCertificate(text: string, file: string): Buffer {
  const m = /-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----/.exec(text);
  if (m === null) throw new TwokeyError('ERR_PEER_CERT_INVALID', `${file}: no PEM CERTIFICATE block`);
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}
