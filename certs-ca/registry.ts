// The declarative registry (deploy/registry.yaml): every workload's identity, method grants and
// token settings, parsed strictly so a typo fails loudly with its place in the file.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { encodeOid } from '../services/authz/der.ts';
import { TwokeyError } from '../services/authz/errors.ts';
import { GrantSet } from '../services/authz/grant.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { DEFAULT_GRANTS_OID } from '../services/authz/svid.ts';
import { parseDuration } from './duration.ts';
import { checkDnsName, checkIpAddress } from './host-names.ts';

export interface Delegation {
  /** Scopes this workload may obtain for a user by token exchange (empty: none). */
  scopes: string[];
  /** Services such a delegated token may be addressed to. */
  audiences: SpiffeId[];
  /** Whether it may name the user without presenting the user's token (asynchronous work). */
  withoutSubjectToken: boolean;
}

export interface RegistryWorkload {
  name: string;
  namespace: string;
  serviceAccount: string;
  /** spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount> */
  spiffeId: SpiffeId;
  grants: GrantSet;
  /** Certificate lifetime in seconds (the workload's `ttl`, else `defaultTtl`). */
  ttl: number;
  /** DNS SANs; when not listed: the Kubernetes service names of `name`, and localhost. */
  dns: string[];
  /** IP SANs; when not listed: 127.0.0.1 and ::1. */
  ip: string[];
  /** Scopes of the workload's own service token (empty: it gets none). */
  serviceScopes: string[];
  delegation: Delegation;
  /**
   * False for an identity people hold rather than a pod (the `twokey revoke` operator): it gets a
   * certificate from `twokey ca issue`, but no ServiceAccount, pod or Secret in the cluster.
   */
  deployed: boolean;
}

export interface AuthSettings {
  /** Scopes every user token carries. */
  userScopes: string[];
  /** Extra scopes a user holds by role (roles are assigned in auth's user database). */
  roleScopes: Record<string, string[]>;
  /** Token lifetimes in seconds. */
  userTokenTtl: number;
  delegatedTokenTtl: number;
  serviceTokenTtl: number;
  /** Longest actor chain a delegated token may carry. */
  maxDelegationDepth: number;
  /** The `iss` of every token. */
  issuer: string;
}

export interface Registry {
  trustDomain: string;
  /** OID of the certificates' grants extension; must equal the issuing CA's setting. */
  grantsOid: string;
  /** Default certificate lifetime in seconds. */
  defaultTtl: number;
  auth: AuthSettings;
  workloads: RegistryWorkload[];
  /**
   * The team's proto roots (`protoRoots:`, paths relative to the registry file), absolute: the CA
   * checks grants against them and servers load their method rules from them, on top of twokey's
   * own proto/.
   */
  protoRoots: string[];
}

export const DEFAULT_AUTH_ISSUER = 'https://auth.twokey.local';

/** The issuer when the registry sets no `auth.issuer`: auth's name in the trust domain. */
export function defaultIssuerFor(trustDomain: string): string {
  return `https://auth.${trustDomain}`;
}
const DEFAULTS = { defaultTtl: '24h', userTokenTtl: '15m', delegatedTokenTtl: '5m', serviceTokenTtl: '10m', maxDelegationDepth: 2 };

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const SCOPE = /^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)*$/;

type Path = (string | number)[];

/** Validation context: knows where each path sits in the source so messages can say so. */
class Checker {
  constructor(
    private readonly source: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  fail(path: Path, why: string): never {
    const shown = path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc === '' ? p : `${acc}.${p}`), '');
    const node = path.length === 0 ? this.doc.contents : (this.doc.getIn(path, true) as { range?: [number, number, number] } | undefined);
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    const where = range === undefined ? this.source : `${this.source}:${this.lines.linePos(range[0]).line}`;
    throw new TwokeyError('ERR_REGISTRY_INVALID', `invalid registry ${where}: ${shown === '' ? '' : `${shown}: `}${why}`);
  }

  /** Runs a value-type constructor, re-raising its error at `path`. */
  wrap<T>(path: Path, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof TwokeyError && err.code !== 'ERR_REGISTRY_INVALID') this.fail(path, err.message);
      throw err;
    }
  }

  object(value: unknown, path: Path, allowed: readonly string[], required: readonly string[]): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) this.fail(path, 'must be a mapping');
    const obj = value as Record<string, unknown>;
    for (const key of Object.keys(obj)) if (!allowed.includes(key)) this.fail([...path, key], `unknown key (allowed: ${allowed.join(', ')})`);
    for (const key of required) if (!(key in obj)) this.fail(path, `missing required key ${JSON.stringify(key)}`);
    return obj;
  }

  string(value: unknown, path: Path): string {
    if (typeof value !== 'string') this.fail(path, `must be a string, got ${describe(value)}`);
    return value;
  }

  boolean(value: unknown, path: Path): boolean {
    if (typeof value !== 'boolean') this.fail(path, `must be true or false, got ${describe(value)}`);
    return value;
  }

  list(value: unknown, path: Path): unknown[] {
    if (!Array.isArray(value)) this.fail(path, `must be a list, got ${describe(value)}`);
    return value;
  }

  /** A list of distinct strings, each checked by `check`. */
  strings(value: unknown, path: Path, check: (s: string, path: Path) => void = () => {}): string[] {
    const seen = new Set<string>();
    return this.list(value, path).map((item, i) => {
      const s = this.string(item, [...path, i]);
      if (seen.has(s)) this.fail([...path, i], `duplicate entry ${JSON.stringify(s)}`);
      seen.add(s);
      check(s, [...path, i]);
      return s;
    });
  }

  scopes(value: unknown, path: Path): string[] {
    return this.strings(value, path, (s, p) => {
      if (!SCOPE.test(s) || s.length > 128) this.fail(p, `invalid scope ${JSON.stringify(s)} (lowercase words joined by ":", e.g. images:read:any)`);
    });
  }

  duration(value: unknown, path: Path): number {
    return this.wrap(path, () => parseDuration(value, ''));
  }

  name(value: unknown, path: Path): string {
    const s = this.string(value, path);
    if (!NAME.test(s)) this.fail(path, `invalid name ${JSON.stringify(s)} (a lowercase DNS label: a-z, 0-9, "-", at most 63 characters)`);
    return s;
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a mapping' : `${typeof value} ${JSON.stringify(value)}`;
}

/** Reads and validates a registry file; throws ERR_REGISTRY_INVALID naming the file, line and path. */
export function loadRegistry(path: string): Registry {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new TwokeyError('ERR_REGISTRY_INVALID', `cannot read registry ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseRegistry(text, path, dirname(resolve(path)));
}

/** `baseDir` resolves relative `protoRoots` (the registry file's folder; the working directory by default). */
export function parseRegistry(text: string, source = 'registry', baseDir = process.cwd()): Registry {
  const lines = new LineCounter();
  // Aliases would let one entry silently stand for another; YAML 1.2 core schema, unique keys.
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, schema: 'core', prettyErrors: false });
  const first = doc.errors[0] ?? doc.warnings[0];
  if (first !== undefined) {
    const line = lines.linePos(first.pos[0]).line;
    throw new TwokeyError('ERR_REGISTRY_INVALID', `invalid registry ${source}:${line}: ${first.message.split('\n')[0]}`);
  }
  const c = new Checker(source, doc, lines);
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 0 });
  } catch (err) {
    throw new TwokeyError('ERR_REGISTRY_INVALID', `invalid registry ${source}: ${(err as Error).message} (aliases are not allowed)`, { cause: err });
  }
  const top = c.object(raw, [], ['trustDomain', 'grantsOid', 'defaultTtl', 'protoRoots', 'auth', 'workloads'], ['trustDomain', 'workloads']);
  const trustDomain = c.wrap(['trustDomain'], () => SpiffeId.forTrustDomain(c.string(top.trustDomain, ['trustDomain'])).trustDomain);
  const defaultTtl = c.duration(top.defaultTtl ?? DEFAULTS.defaultTtl, ['defaultTtl']);
  const grantsOid = c.wrap(['grantsOid'], () => {
    const oid = c.string(top.grantsOid ?? DEFAULT_GRANTS_OID, ['grantsOid']);
    encodeOid(oid);
    return oid;
  });

  const authRaw = c.object(top.auth ?? {}, ['auth'], ['userScopes', 'roles', 'userTokenTtl', 'delegatedTokenTtl', 'serviceTokenTtl', 'maxDelegationDepth', 'issuer'], []);
  const depth = authRaw.maxDelegationDepth ?? DEFAULTS.maxDelegationDepth;
  if (typeof depth !== 'number' || !Number.isInteger(depth) || depth < 0 || depth > 10) {
    return c.fail(['auth', 'maxDelegationDepth'], `must be an integer from 0 to 10, got ${describe(depth)}`);
  }
  const issuer = c.string(authRaw.issuer ?? defaultIssuerFor(trustDomain), ['auth', 'issuer']);
  if (!/^https:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(issuer)) c.fail(['auth', 'issuer'], `must be an https URL without query or fragment, got ${JSON.stringify(issuer)}`);
  const auth: AuthSettings = {
    userScopes: c.scopes(authRaw.userScopes ?? [], ['auth', 'userScopes']),
    roleScopes: roleScopesOf(c, authRaw.roles ?? {}),
    userTokenTtl: c.duration(authRaw.userTokenTtl ?? DEFAULTS.userTokenTtl, ['auth', 'userTokenTtl']),
    delegatedTokenTtl: c.duration(authRaw.delegatedTokenTtl ?? DEFAULTS.delegatedTokenTtl, ['auth', 'delegatedTokenTtl']),
    serviceTokenTtl: c.duration(authRaw.serviceTokenTtl ?? DEFAULTS.serviceTokenTtl, ['auth', 'serviceTokenTtl']),
    maxDelegationDepth: depth,
    issuer,
  };

  const names = new Set<string>();
  const ids = new Set<string>();
  const workloads = c.list(top.workloads, ['workloads']).map((item, i): RegistryWorkload => {
    const p: Path = ['workloads', i];
    const w = c.object(
      item,
      p,
      ['name', 'namespace', 'serviceAccount', 'grants', 'ttl', 'dns', 'ip', 'serviceScopes', 'delegation', 'deployed'],
      ['name', 'namespace', 'serviceAccount', 'grants'],
    );
    const name = c.name(w.name, [...p, 'name']);
    if (names.has(name)) c.fail([...p, 'name'], `duplicate workload name ${JSON.stringify(name)}`);
    names.add(name);
    const namespace = c.name(w.namespace, [...p, 'namespace']);
    const serviceAccount = c.name(w.serviceAccount, [...p, 'serviceAccount']);
    const spiffeId = c.wrap(p, () => SpiffeId.forServiceAccount(trustDomain, namespace, serviceAccount));
    if (ids.has(spiffeId.toString())) c.fail([...p, 'serviceAccount'], `another workload already has SPIFFE ID ${spiffeId}`);
    ids.add(spiffeId.toString());
    const grantTexts = c.strings(w.grants, [...p, 'grants']);
    const grants = GrantSet.parse(grantTexts.map((g, j) => c.wrap([...p, 'grants', j], () => GrantSet.parse([g]).grants[0]!.text)));
    const dns =
      w.dns === undefined
        ? [name, `${name}.${namespace}`, `${name}.${namespace}.svc`, `${name}.${namespace}.svc.cluster.local`, 'localhost']
        : c.strings(w.dns, [...p, 'dns'], (s, q) => c.wrap(q, () => checkDnsName(s, '')));
    const ip = w.ip === undefined ? ['127.0.0.1', '::1'] : c.strings(w.ip, [...p, 'ip'], (s, q) => c.wrap(q, () => checkIpAddress(s, '')));
    const d = c.object(w.delegation ?? {}, [...p, 'delegation'], ['scopes', 'audiences', 'withoutSubjectToken'], []);
    const audienceTexts = c.strings(d.audiences ?? [], [...p, 'delegation', 'audiences']);
    const audiences = audienceTexts.map((a, j) => {
      const q: Path = [...p, 'delegation', 'audiences', j];
      const id = c.wrap(q, () => SpiffeId.parse(a));
      if (!id.memberOf(trustDomain)) c.fail(q, `audience ${a} is outside the trust domain ${trustDomain}`);
      return id;
    });
    return {
      name,
      namespace,
      serviceAccount,
      spiffeId,
      grants,
      ttl: w.ttl === undefined ? defaultTtl : c.duration(w.ttl, [...p, 'ttl']),
      dns,
      ip,
      serviceScopes: c.scopes(w.serviceScopes ?? [], [...p, 'serviceScopes']),
      delegation: {
        scopes: c.scopes(d.scopes ?? [], [...p, 'delegation', 'scopes']),
        audiences,
        withoutSubjectToken: c.boolean(d.withoutSubjectToken ?? false, [...p, 'delegation', 'withoutSubjectToken']),
      },
      deployed: c.boolean(w.deployed ?? true, [...p, 'deployed']),
    };
  });
  // Audiences must name workloads the registry knows, or a delegated token could target nothing.
  workloads.forEach((w, i) =>
    w.delegation.audiences.forEach((a, j) => {
      if (!ids.has(a.toString())) c.fail(['workloads', i, 'delegation', 'audiences', j], `audience ${a} is not a workload in this registry`);
    }),
  );
  const protoRoots = c.strings(top.protoRoots ?? [], ['protoRoots'], (s, q) => {
    if (s === '') c.fail(q, 'must be a directory path');
  }).map((r) => (isAbsolute(r) ? r : resolve(baseDir, r)));
  return { trustDomain, grantsOid, defaultTtl, auth, workloads, protoRoots };
}

function roleScopesOf(c: Checker, value: unknown): Record<string, string[]> {
  const raw = c.object(value, ['auth', 'roles'], Object.keys(value ?? {}), []);
  // A null-prototype map: a role named "constructor" or "__proto__" must stay an ordinary key.
  const roles: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  for (const [role, scopes] of Object.entries(raw)) {
    roles[c.name(role, ['auth', 'roles'])] = c.scopes(scopes, ['auth', 'roles', role]);
  }
  return roles;
}

/** The workload with this SPIFFE ID, if any. */
export function findWorkload(registry: Registry, spiffeId: SpiffeId | string): RegistryWorkload | undefined {
  const id = spiffeId.toString();
  return registry.workloads.find((w) => w.spiffeId.toString() === id);
}
