// Who may call what: the registry's grants joined with proto/'s permissions, as nodes and edges.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORKLOAD_FILES } from '../../certs-ca/certificate-authority.ts';
import type { Registry } from '../../certs-ca/registry.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import type { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { certificatesIn } from '../../services/authz/svid-source.ts';
import { parseSvid } from '../../services/authz/svid.ts';

export interface GraphNode {
  name: string;
  spiffeId: string;
  /** gRPC services it serves on the mesh. */
  serves: string[];
  serviceScopes: string[];
  delegation: { scopes: string[]; audiences: string[]; withoutSubjectToken: boolean };
}

export interface GraphMethod {
  name: string;
  path: string;
  /** The permission the method's rule declares; null for a certificate-only method. */
  permission: string | null;
}

/** One granted method group: every method `from`'s certificate grants on one service `to` serves. */
export interface GraphEdge {
  from: string;
  to: string;
  service: string;
  /** Whether the grant was the service wildcard `/pkg.Service/*`. */
  wildcard: boolean;
  methods: GraphMethod[];
}

export interface PolicyGraph {
  trustDomain: string;
  userScopes: string[];
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/**
 * Builds the graph. `servedBy` names the workload serving each gRPC service; a grant on a service
 * no workload serves is still drawn, to a node named for the service, so no grant goes unseen.
 */
export function buildPolicyGraph(registry: Registry, catalog: MethodCatalog, servedBy: Readonly<Record<string, readonly string[]>>): PolicyGraph {
  const server = new Map<string, string>();
  for (const [workload, services] of Object.entries(servedBy)) for (const s of services) server.set(s, workload);
  const nodes: GraphNode[] = registry.workloads.map((w) => ({
    name: w.name,
    spiffeId: w.spiffeId.toString(),
    serves: [...(servedBy[w.name] ?? [])],
    serviceScopes: [...w.serviceScopes],
    delegation: { scopes: [...w.delegation.scopes], audiences: w.delegation.audiences.map((a) => a.toString()), withoutSubjectToken: w.delegation.withoutSubjectToken },
  }));
  const edges: GraphEdge[] = [];
  for (const w of registry.workloads) {
    const byService = new Map<string, GraphEdge>();
    for (const grant of w.grants.toStrings()) {
      const [, service, method] = /^\/([^/]+)\/([^/]+)$/.exec(grant) ?? [];
      if (service === undefined || method === undefined) continue;
      let edge = byService.get(service);
      if (edge === undefined) {
        edge = { from: w.name, to: server.get(service) ?? service, service, wildcard: false, methods: [] };
        byService.set(service, edge);
      }
      const granted = method === '*' ? catalog.methods().filter((m) => m.service === service) : [catalog.get(grant)].filter((m) => m !== undefined);
      if (method === '*') edge.wildcard = true;
      for (const m of granted) {
        if (edge.methods.some((e) => e.path === m.path)) continue;
        edge.methods.push({ name: m.name, path: m.path, permission: m.rule !== undefined && 'permission' in m.rule ? m.rule.permission : null });
      }
    }
    edges.push(...byService.values());
  }
  return { trustDomain: registry.trustDomain, userScopes: [...registry.auth.userScopes], nodes, edges };
}

export interface CertificateView {
  workload: string;
  spiffeId: string;
  serial: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  thumbprint: string;
  dns: string[];
  ip: string[];
  grants: string[];
}

/** The public facts of a workload's issued certificate (svid.pem); its key file is never opened. */
export function readCertificate(svidRoot: string, workload: string, grantsOid: string): CertificateView {
  const file = join(svidRoot, workload, WORKLOAD_FILES.chain);
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `no certificate for ${workload} at ${file}: ${(err as Error).message}`, { cause: err });
  }
  const leaf = certificatesIn(pem, file)[0]!;
  const svid = parseSvid(Buffer.from(leaf.raw), { grantsOid });
  return {
    workload,
    spiffeId: svid.spiffeId.toString(),
    serial: svid.serialHex,
    issuer: svid.issuer,
    notBefore: svid.notBefore.toISOString(),
    notAfter: svid.notAfter.toISOString(),
    thumbprint: svid.thumbprint,
    dns: svid.dns,
    ip: svid.ip,
    grants: svid.grants.toStrings(),
  };
}
