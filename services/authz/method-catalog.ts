// Every gRPC method defined under the proto roots, with the authorization rule it declares.
import { readdirSync, statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { packagePath } from './package-root.ts';
import { loadSync, type MethodDefinition, type PackageDefinition } from '@grpc/proto-loader';
import { TwokeyError } from './errors.ts';
import type { MethodGrant } from './grant.ts';

/** What a method requires besides the certificate grant, as declared by `(twokey.authz.v1.rule)`. */
export type MethodRule = { permission: string } | { certificateOnly: true };

export interface CatalogMethod {
  /** The gRPC path, `/pkg.Service/Method`. */
  path: string;
  /** Fully qualified service name, `pkg.Service`. */
  service: string;
  name: string;
  /** Undefined when the method declares no rule: such a method is always denied. */
  rule: MethodRule | undefined;
  requestStream: boolean;
  responseStream: boolean;
  /** protobuf's standard `idempotency_level` method option: may a client repeat the call? */
  idempotency: Idempotency;
  /**
   * The field number of the request's AIP-155 `string request_id`, when it has one: a call that
   * sets it may be repeated (the server answers a repeat with the first result).
   */
  requestIdField: number | undefined;
}

/** protobuf's MethodOptions.IdempotencyLevel, as the proto declares it. */
export type Idempotency = 'NO_SIDE_EFFECTS' | 'IDEMPOTENT' | 'IDEMPOTENCY_UNKNOWN';

/** The loader options the contract fixes, so every part decodes messages the same way. */
export const PROTO_LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
} as const;

/** twokey's own proto/ directory. */
export const DEFAULT_PROTO_ROOT = packagePath('proto');

const RULE_OPTION = '(twokey.authz.v1.rule)';

export interface LoadCatalogOptions {
  /** Proto roots to load every .proto file from; defaults to [DEFAULT_PROTO_ROOT]. */
  roots?: readonly string[];
  /** Further roots (services other teams own), loaded in addition to `roots`. */
  extraRoots?: readonly string[];
}

export class MethodCatalog {
  /** The loaded package definition, for servers and clients that want the same protos. */
  readonly definition: PackageDefinition;
  readonly roots: readonly string[];
  readonly #methods: ReadonlyMap<string, CatalogMethod>;
  readonly #services: ReadonlySet<string>;

  private constructor(definition: PackageDefinition, roots: readonly string[]) {
    this.definition = definition;
    this.roots = roots;
    const methods = new Map<string, CatalogMethod>();
    for (const [service, value] of Object.entries(definition)) {
      // Message and enum entries carry `format`; services are plain maps of method definitions.
      if ('format' in value) continue;
      for (const [name, def] of Object.entries(value as Record<string, MethodDefinition<object, object>>)) {
        methods.set(def.path, {
          path: def.path,
          service,
          name,
          rule: ruleOf(def),
          requestStream: def.requestStream,
          responseStream: def.responseStream,
          idempotency: idempotencyOf(def),
          requestIdField: requestIdFieldOf(def),
        });
      }
    }
    this.#methods = methods;
    this.#services = new Set([...methods.values()].map((m) => m.service));
  }

  /** Loads every .proto file under the roots (each root is also an include directory). */
  static load(opts: LoadCatalogOptions = {}): MethodCatalog {
    const roots = [...(opts.roots ?? [DEFAULT_PROTO_ROOT]), ...(opts.extraRoots ?? [])].map((r) => resolve(r));
    // twokey's own root stays includable so other teams' protos can import the rule option.
    const includeDirs = roots.includes(DEFAULT_PROTO_ROOT) ? roots : [...roots, DEFAULT_PROTO_ROOT];
    const files = new Set<string>();
    for (const root of roots) {
      for (const file of protoFiles(root)) files.add(relative(root, file).split(sep).join('/'));
    }
    if (files.size === 0) throw new TwokeyError('ERR_CONFIG_INVALID', `no .proto files under ${roots.join(', ')}`);
    let definition: PackageDefinition;
    try {
      definition = loadSync([...files].sort(), { ...PROTO_LOADER_OPTIONS, includeDirs });
    } catch (err) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `cannot load protos from ${roots.join(', ')}: ${(err as Error).message}`, { cause: err });
    }
    return new MethodCatalog(definition, roots);
  }

  static #default: MethodCatalog | undefined;

  /** The catalog of twokey's own proto/, loaded once per process. */
  static default(): MethodCatalog {
    MethodCatalog.#default ??= MethodCatalog.load();
    return MethodCatalog.#default;
  }

  get(path: string): CatalogMethod | undefined {
    return this.#methods.get(path);
  }

  /** Whether the method is defined in these protos (with or without a rule). */
  has(path: string): boolean {
    return this.#methods.has(path);
  }

  /** The rule a method declares; undefined for unknown or undeclared methods (deny). */
  ruleOf(path: string): MethodRule | undefined {
    return this.#methods.get(path)?.rule;
  }

  hasService(service: string): boolean {
    return this.#services.has(service);
  }

  methods(): CatalogMethod[] {
    return [...this.#methods.values()];
  }

  services(): string[] {
    return [...this.#services];
  }

  /** Whether a grant names a method (or, for `/pkg.Service/*`, a service) defined here. */
  covers(grant: MethodGrant): boolean {
    return grant.isWildcard ? this.#services.has(grant.service) : this.#methods.has(grant.text);
  }

  /** Throws ERR_GRANT_INVALID naming the grant when it names nothing in these protos. */
  requireGrant(grant: MethodGrant): void {
    if (this.covers(grant)) return;
    const what = grant.isWildcard ? `service ${grant.service}` : `method ${grant.text}`;
    throw new TwokeyError(
      'ERR_GRANT_INVALID',
      `grant ${JSON.stringify(grant.text)} names no existing ${what} in ${this.roots.join(', ')} (add the proto root that defines it)`,
    );
  }
}

function ruleOf(def: MethodDefinition<object, object>): MethodRule | undefined {
  const options = (def as { options?: Record<string, unknown> }).options;
  const raw = options?.[RULE_OPTION] as { permission?: unknown; certificate_only?: unknown } | undefined;
  if (raw === undefined || raw === null) return undefined;
  // A oneof: a rule that names neither (or both) is malformed, and a malformed rule must not
  // silently become "no permission needed".
  const hasPermission = typeof raw.permission === 'string' && raw.permission !== '';
  const certificateOnly = raw.certificate_only === true;
  if (hasPermission === certificateOnly) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `method ${def.path}: ${RULE_OPTION} must set exactly one of permission or certificate_only`);
  }
  return hasPermission ? { permission: raw.permission as string } : { certificateOnly: true };
}

function idempotencyOf(def: MethodDefinition<object, object>): Idempotency {
  const level = (def as { options?: Record<string, unknown> }).options?.['idempotency_level'];
  return level === 'NO_SIDE_EFFECTS' || level === 'IDEMPOTENT' ? level : 'IDEMPOTENCY_UNKNOWN';
}

function requestIdFieldOf(def: MethodDefinition<object, object>): number | undefined {
  const type = (def.requestType as { type?: { field?: { name?: string; number?: number; type?: string; label?: string }[] } } | undefined)?.type;
  const field = type?.field?.find((f) => f.name === 'request_id');
  // AIP-155's field is a singular string; anything else named so is not a request id.
  return field?.type === 'TYPE_STRING' && field.label !== 'LABEL_REPEATED' && typeof field.number === 'number' ? field.number : undefined;
}

function protoFiles(dir: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (err) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `cannot read proto root ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const out: string[] = [];
  for (const entry of entries.sort()) {
    const full = join(dir, entry);
    if (statSync(full).isDirectory()) out.push(...protoFiles(full));
    else if (entry.endsWith('.proto')) out.push(full);
  }
  return out;
}
