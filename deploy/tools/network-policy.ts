// Kubernetes NetworkPolicy semantics, evaluated offline: may this endpoint open a connection to
// that pod on that port? Constructs it does not model make it throw, never guess.
import { TwokeyError } from '../../services/authz/errors.ts';
import { isObject, objectId, type JsonObject, type K8sObject } from './manifest.ts';
import { objects } from './pod-spec.ts';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol: Protocol;
}

/** A pod, as policies see it: its namespace (and that namespace's labels), its labels, its ports. */
export interface PodEndpoint {
  kind: 'pod';
  namespace: string;
  namespaceLabels: Readonly<Record<string, string>>;
  labels: Readonly<Record<string, string>>;
  ports: readonly ContainerPort[];
}

/** Anything outside the cluster's pods: a client on the internet, a node, an external API. */
export interface ExternalEndpoint {
  kind: 'external';
  ip: string;
}

export type Endpoint = PodEndpoint | ExternalEndpoint;

function unsupported(where: string, what: string): never {
  throw new TwokeyError('ERR_CONFIG_INVALID', `${where}: ${what} is outside what the NetworkPolicy evaluator models`);
}

/** The labels Kubernetes itself puts on every namespace. */
export function namespaceLabels(namespace: string, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  return { ...extra, 'kubernetes.io/metadata.name': namespace };
}

export function matchesSelector(selector: unknown, labels: Readonly<Record<string, string>>, where: string): boolean {
  if (!isObject(selector)) unsupported(where, 'a selector that is not a mapping');
  for (const key of Object.keys(selector)) if (key !== 'matchLabels' && key !== 'matchExpressions') unsupported(where, `selector field ${key}`);
  const matchLabels = selector['matchLabels'] ?? {};
  if (!isObject(matchLabels)) unsupported(where, 'matchLabels that is not a mapping');
  for (const [k, v] of Object.entries(matchLabels)) if (labels[k] !== v) return false;
  for (const expr of objects(selector, 'matchExpressions')) {
    const key = expr['key'];
    const values = Array.isArray(expr['values']) ? (expr['values'] as unknown[]) : [];
    if (typeof key !== 'string') unsupported(where, 'a matchExpression without a key');
    const has = Object.hasOwn(labels, key);
    switch (expr['operator']) {
      case 'In':
        if (!has || !values.includes(labels[key])) return false;
        break;
      case 'NotIn':
        if (has && values.includes(labels[key])) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        unsupported(where, `matchExpression operator ${JSON.stringify(expr['operator'])}`);
    }
  }
  return true;
}

function ipv4ToInt(ip: string, where: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) unsupported(where, `address ${JSON.stringify(ip)} (IPv4 only)`);
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

function inCidr(ip: string, cidr: string, where: string): boolean {
  const [base, bitsText] = cidr.split('/');
  const bits = Number(bitsText);
  if (base === undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) unsupported(where, `CIDR ${JSON.stringify(cidr)}`);
  if (bits === 0) return true;
  const size = 2 ** (32 - bits);
  return Math.floor(ipv4ToInt(ip, where) / size) === Math.floor(ipv4ToInt(base, where) / size);
}

/** Whether a `from`/`to` peer entry matches an endpoint, for a policy in `policyNamespace`. */
function peerMatches(peer: JsonObject, policyNamespace: string, endpoint: Endpoint, where: string): boolean {
  for (const key of Object.keys(peer)) {
    if (!['podSelector', 'namespaceSelector', 'ipBlock'].includes(key)) unsupported(where, `peer field ${key}`);
  }
  if (peer['ipBlock'] !== undefined) {
    const block = peer['ipBlock'];
    if (!isObject(block) || typeof block['cidr'] !== 'string') unsupported(where, 'an ipBlock without a cidr');
    // Whether ipBlock applies to pod IPs is left to each network plugin; only external
    // endpoints are taken to match it, and a policy meant for pods must select pods.
    if (endpoint.kind !== 'external') return false;
    const except = Array.isArray(block['except']) ? (block['except'] as string[]) : [];
    return inCidr(endpoint.ip, block['cidr'], where) && !except.some((c) => inCidr(endpoint.ip, c, where));
  }
  if (endpoint.kind === 'external') return false;
  const nsSelector = peer['namespaceSelector'];
  const podSelector = peer['podSelector'];
  const nsOk = nsSelector === undefined ? endpoint.namespace === policyNamespace : matchesSelector(nsSelector, endpoint.namespaceLabels, where);
  const podOk = podSelector === undefined ? true : matchesSelector(podSelector, endpoint.labels, where);
  return nsOk && podOk;
}

/** Whether a rule's `ports` admits the port; a named port resolves against the destination pod. */
function portMatches(ports: unknown, port: number, protocol: Protocol, destination: Endpoint, where: string): boolean {
  if (ports === undefined) return true;
  if (!Array.isArray(ports)) unsupported(where, 'ports that are not a list');
  if (ports.length === 0) return true;
  return ports.some((p) => {
    if (!isObject(p)) unsupported(where, 'a port entry that is not a mapping');
    for (const key of Object.keys(p)) if (!['port', 'protocol', 'endPort'].includes(key)) unsupported(where, `port field ${key}`);
    if ((p['protocol'] ?? 'TCP') !== protocol) return false;
    const spec = p['port'];
    if (spec === undefined) return true;
    if (typeof spec === 'string') {
      if (destination.kind !== 'pod') return false;
      return destination.ports.some((cp) => cp.name === spec && cp.containerPort === port && cp.protocol === protocol);
    }
    if (typeof spec !== 'number') unsupported(where, 'a port that is neither a number nor a name');
    const end = p['endPort'];
    if (end === undefined) return spec === port;
    if (typeof end !== 'number') unsupported(where, 'a non-numeric endPort');
    return port >= spec && port <= end;
  });
}

type Direction = 'Ingress' | 'Egress';

function policyTypes(spec: JsonObject, where: string): Direction[] {
  const types = spec['policyTypes'];
  if (types === undefined) return spec['egress'] !== undefined ? ['Ingress', 'Egress'] : ['Ingress'];
  if (!Array.isArray(types) || !types.every((t) => t === 'Ingress' || t === 'Egress')) unsupported(where, 'policyTypes other than Ingress and Egress');
  return types as Direction[];
}

/**
 * Whether `subject` (a pod) may receive from / send to `peer` on `port`: allowed when no policy
 * selecting the subject covers that direction, else when some rule of such a policy matches.
 */
function directionAllows(policies: readonly K8sObject[], direction: Direction, subject: PodEndpoint, peer: Endpoint, port: number, protocol: Protocol): boolean {
  let isolated = false;
  for (const policy of policies) {
    const where = objectId(policy);
    if (policy.kind !== 'NetworkPolicy') continue;
    const namespace = policy.metadata.namespace;
    if (namespace === undefined) unsupported(where, 'a policy without a namespace');
    if (namespace !== subject.namespace) continue;
    const spec = policy['spec'];
    if (!isObject(spec)) unsupported(where, 'a policy without a spec');
    for (const key of Object.keys(spec)) if (!['podSelector', 'policyTypes', 'ingress', 'egress'].includes(key)) unsupported(where, `spec field ${key}`);
    if (!matchesSelector(spec['podSelector'], subject.labels, where)) continue;
    if (!policyTypes(spec, where).includes(direction)) continue;
    isolated = true;
    const rulesKey = direction === 'Ingress' ? 'ingress' : 'egress';
    const peersKey = direction === 'Ingress' ? 'from' : 'to';
    const destination = direction === 'Ingress' ? subject : peer;
    const rules = spec[rulesKey] ?? [];
    if (!Array.isArray(rules)) unsupported(where, `${rulesKey} that is not a list`);
    for (const rule of rules) {
      if (!isObject(rule)) unsupported(where, 'a rule that is not a mapping');
      for (const key of Object.keys(rule)) if (key !== peersKey && key !== 'ports') unsupported(where, `${rulesKey} rule field ${key}`);
      const peers = rule[peersKey];
      if (peers !== undefined && !Array.isArray(peers)) unsupported(where, `${peersKey} that is not a list`);
      const peerOk = peers === undefined || peers.length === 0 || peers.some((p) => isObject(p) && peerMatches(p, namespace, peer, where));
      if (peerOk && portMatches(rule['ports'], port, protocol, destination, where)) return true;
    }
  }
  return !isolated;
}

/** Whether a connection from `source` to `destination` on `port` is allowed by both ends' policies. */
export function connectionAllowed(policies: readonly K8sObject[], source: Endpoint, destination: Endpoint, port: number, protocol: Protocol = 'TCP'): boolean {
  const egressOk = source.kind === 'external' || directionAllows(policies, 'Egress', source, destination, port, protocol);
  const ingressOk = destination.kind === 'external' || directionAllows(policies, 'Ingress', destination, source, port, protocol);
  return egressOk && ingressOk;
}
