// The decision on one call a proxy holds: the library's decide(), fed with what the proxy forwarded.
import { randomUUID } from 'node:crypto';
import { requestIdFrom } from '../authz/call-context.ts';
import { decide, decidePeer, internalDenial } from '../authz/decision.ts';
import type { Decision, DecisionInput, PeerIdentity, PeerResult, TokenResult } from '../authz/types.ts';
import type { DecisionEvent, DecisionLog } from '../authz/decision-log.ts';
import type { DecisionMetrics } from '../authz/decision-metrics.ts';
import { TwokeyError } from '../authz/errors.ts';
import { denialMessage, type RevocationSource, type RuleSource } from '../authz/interceptor.ts';
import type { PeerIdentityCache } from '../authz/peer-identity.ts';
import type { TokenAuthenticator } from '../authz/token-authenticator.ts';
import { backendHeaders, type IdentityHeader } from './backend-headers.ts';
import type { ForwardedCall } from './forwarded-call.ts';
import type { FederationPolicy } from '../authz/federation.ts';
import type { RegistryPeers } from './registry-peers.ts';

export interface ForwardedDecisionOptions {
  trustDomain: string;
  rules: RuleSource;
  tokens: TokenAuthenticator;
  /** Verifies forwarded certificates against the trust bundle it holds (the one the mesh server's TLS uses). */
  peers: PeerIdentityCache;
  log?: DecisionLog | undefined;
  metrics?: DecisionMetrics | undefined;
  revocation?: RevocationSource | undefined;
  /** Istio mode: a call forwarded with a principal and no certificate takes its grants from the registry. */
  registryPeers?: RegistryPeers | undefined;
  /** Partner trust domains and their ceilings (the peers cache must hold their bundles: createMeshServer's federation). */
  federation?: FederationPolicy | undefined;
  clock?: () => number;
  newDecisionId?: () => string;
}

// The peer of a call whose reading threw (the decision is then an internal denial).
const NOT_READ: PeerResult = { ok: false, error: new TwokeyError('ERR_PEER_CERT_MISSING', 'the peer could not be read') };

/** A decision with what the proxy needs to act on it. */
export interface ForwardedDecision {
  readonly decisionId: string;
  readonly decision: Decision;
  readonly peer: PeerIdentity | undefined;
  /** For the backend on allow: every identity header, empty where the call has no value. */
  readonly headers: Record<IdentityHeader, string> | undefined;
  /** What the caller is told on denial: the library's status message (failed check, reason, decision id). */
  readonly message: string;
}

/**
 * Decides forwarded calls with the same checks, in the same order, as the interceptor of a mesh
 * server: decidePeer() (peer, rule, grant) before any token is read, then decide() with the
 * verified token (token, revocation, binding, scope). Every decision is one event for the same
 * decision log and metrics. Any error denies.
 */
export class ForwardedDecisions {
  readonly #o: ForwardedDecisionOptions;
  readonly #clock: () => number;
  readonly #newId: () => string;

  constructor(options: ForwardedDecisionOptions) {
    this.#o = options;
    this.#clock = options.clock ?? Date.now;
    this.#newId = options.newDecisionId ?? randomUUID;
  }

  async decide(call: ForwardedCall): Promise<ForwardedDecision> {
    const started = process.hrtime.bigint();
    const decisionId = this.#newId();
    const metadata = call.metadata;
    const requestId = metadata instanceof TwokeyError ? decisionId : requestIdFrom(metadata, decisionId);
    let peer: PeerResult = NOT_READ;
    let decision: Decision;
    let headers: Record<IdentityHeader, string> | undefined;
    try {
      peer = this.#peerOf(call);
      decision = await this.#decide(call, peer);
      if (decision.allow) headers = backendHeaders(decisionId, peer.ok ? peer.identity : undefined, decision.token);
    } catch (err) {
      // Fail closed: an unexpected error (or a value that cannot travel as a header) is a denial.
      decision = internalDenial(err);
      headers = undefined;
    }
    const event: DecisionEvent = {
      decisionId,
      method: call.method,
      peer: peer.ok ? peer.identity : undefined,
      decision,
      enforced: !decision.allow,
      latencyUs: Number(process.hrtime.bigint() - started) / 1000,
      requestId,
    };
    // A decision that cannot be recorded is not acted on.
    try {
      this.#o.log?.write(event);
      this.#o.metrics?.record(event);
    } catch (err) {
      const denied = internalDenial(new Error('the decision could not be logged', { cause: err }));
      return { decisionId, decision: denied, peer: event.peer, headers: undefined, message: `twokey: the decision could not be logged (decision ${decisionId})` };
    }
    // An internal error's text stays in the log; the caller learns only that it happened (as from a mesh server).
    const message = decision.allow ? '' : decision.failedCheck === null ? `twokey: authorization failed internally (decision ${decisionId})` : denialMessage(decision, decisionId);
    return { decisionId, decision, peer: event.peer, headers, message };
  }

  #peerOf(call: ForwardedCall): PeerResult {
    const certificates = call.certificates;
    if (certificates instanceof TwokeyError) return { ok: false, error: certificates };
    if (certificates.length > 0) return this.#o.peers.fromChain(certificates);
    if (this.#o.registryPeers !== undefined) return this.#o.registryPeers.fromPrincipal(call.principal);
    return { ok: false, error: new TwokeyError('ERR_PEER_CERT_MISSING', 'the proxy forwarded no verified client certificate') };
  }

  async #decide(call: ForwardedCall, peer: PeerResult): Promise<Decision> {
    const o = this.#o;
    const input: DecisionInput = {
      peer,
      method: call.method,
      rule: o.rules.ruleOf(call.method),
      now: this.#clock(),
      trustDomain: o.trustDomain,
      revocation: o.revocation?.view(),
      federation: o.federation,
    };
    const settled = decidePeer(input);
    if (settled !== null) return settled;
    const metadata = call.metadata;
    let token: TokenResult;
    if (metadata instanceof TwokeyError) token = { ok: false, error: metadata };
    else {
      const read = o.tokens.fromMetadata(metadata);
      token = read instanceof Promise ? await read : read;
    }
    return decide({ ...input, token, now: this.#clock() });
  }
}
