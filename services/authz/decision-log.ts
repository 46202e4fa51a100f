// One structured log line per authorization decision; tokens, keys and passwords never appear.
import type { Logger } from 'pino';
import type { CheckName, CheckOutcome, Decision, PeerIdentity, VerifiedToken } from './types.ts';
import { LineFolder, type FoldSummary, type FoldingPolicy } from './log-folding.ts';
import { PinoLineWriter } from './pino-line.ts';

export interface DecisionEvent {
  readonly decisionId: string;
  readonly method: string;
  readonly peer: PeerIdentity | undefined;
  readonly decision: Decision;
  /** Whether a denial was enforced; false in dry-run mode, where the call proceeds. */
  readonly enforced: boolean;
  readonly latencyUs: number;
  readonly requestId?: string | undefined;
}

/** The JSON fields of a decision line: stable names that log pipelines can index. */
export function decisionFields(event: DecisionEvent): Record<string, unknown> {
  const { decision, peer } = event;
  const token = decision.token;
  const checks: Partial<Record<CheckName, CheckOutcome>> = {};
  for (const c of decision.checks) checks[c.check] = c.outcome;
  return {
    event: 'authz.decision',
    decision_id: event.decisionId,
    request_id: event.requestId,
    method: event.method,
    allow: decision.allow,
    ...(decision.allow || event.enforced ? {} : { would_deny: true, dry_run: true }),
    failed_check: decision.failedCheck,
    error_code: decision.errorCode,
    grpc_code: decision.code,
    peer_spiffe_id: peer?.spiffeId.toString(),
    peer_serial: peer?.serialHex,
    grants_from: peer?.grantsFrom,
    // A partner's workload: the trust domain that vouched for it and the ceiling that capped it.
    partner_trust_domain: decision.ceiling?.trustDomain,
    ceiling: decision.ceiling?.workloads,
    subject: token?.subject,
    token_kind: token?.kind,
    actor_chain: token?.actorChain.length ? token.actorChain : undefined,
    jti: token?.jti,
    checks,
    // Every detail of a denial; an allowed call's details only restate its checks (and cost time per call).
    ...(decision.allow ? {} : { check_details: decision.checks.filter((c) => c.outcome !== 'skip').map((c) => `${c.check}: ${c.detail}`) }),
    reason: decision.reason,
    latency_us: Math.round(event.latencyUs),
  };
}

/** The keys decisionFields() can write, which a logger's serializers must leave alone for the fast path. */
const FIELD_KEYS = [
  'event', 'decision_id', 'request_id', 'method', 'allow', 'would_deny', 'dry_run', 'failed_check', 'error_code', 'grpc_code',
  'peer_spiffe_id', 'peer_serial', 'grants_from', 'partner_trust_domain', 'ceiling', 'subject', 'token_kind', 'actor_chain', 'jti', 'checks', 'check_details', 'reason', 'latency_us',
] as const;

const str = JSON.stringify;

/**
 * The members of an allowed decision's line, in decisionFields() order and as pino serializes them,
 * built by hand: an allowed call is logged on every call, and pino's walk over a fresh object (and
 * its nested `checks`) was most of the log's cost. Parts that repeat are kept, stringified: per
 * peer certificate and method, and per verified token (cached tokens are the same object).
 */
class AllowedLine {
  readonly #byPeer = new WeakMap<PeerIdentity, Map<string, { readonly json: string; reason: string; reasonJson: string }>>();
  readonly #byToken = new WeakMap<VerifiedToken, string>();

  fields(event: DecisionEvent): string {
    const { decision, peer } = event;
    const id = str(event.decisionId);
    let line = ',"event":"authz.decision","decision_id":' + id;
    // A call without x-request-id takes its decision id as request id.
    if (event.requestId !== undefined) line += ',"request_id":' + (event.requestId === event.decisionId ? id : str(event.requestId));
    const reason = decision.reason;
    let part = peer === undefined ? undefined : this.#byPeer.get(peer)?.get(event.method);
    if (part === undefined) {
      part = { json: this.#callJson(event), reason, reasonJson: str(reason) };
      if (peer !== undefined) {
        let methods = this.#byPeer.get(peer);
        if (methods === undefined) this.#byPeer.set(peer, (methods = new Map()));
        methods.set(event.method, part);
      }
    } else if (part.reason !== reason) {
      part.reason = reason;
      part.reasonJson = str(reason);
    }
    line += part.json;
    const token = decision.token;
    if (token !== undefined) {
      let json = this.#byToken.get(token);
      if (json === undefined) this.#byToken.set(token, (json = tokenJson(token)));
      line += json;
    }
    let checks = '';
    for (const c of decision.checks) checks += (checks === '' ? '{"' : ',"') + c.check + '":"' + c.outcome + '"';
    const latency = Math.round(event.latencyUs);
    return line + ',"checks":' + (checks === '' ? '{}' : checks + '}') + ',"reason":' + part.reasonJson + ',"latency_us":' + (Number.isFinite(latency) ? latency : 'null');
  }

  #callJson(event: DecisionEvent): string {
    const { decision, peer } = event;
    let json = ',"method":' + str(event.method) + ',"allow":true,"failed_check":null,"error_code":null,"grpc_code":' + decision.code;
    if (peer !== undefined) json += ',"peer_spiffe_id":' + str(peer.spiffeId.toString()) + ',"peer_serial":' + str(peer.serialHex);
    if (peer?.grantsFrom !== undefined) json += ',"grants_from":' + str(peer.grantsFrom);
    const ceiling = decision.ceiling;
    if (ceiling !== undefined) json += ',"partner_trust_domain":' + str(ceiling.trustDomain) + ',"ceiling":' + str(ceiling.workloads);
    return json;
  }
}

function tokenJson(token: VerifiedToken): string {
  return (
    ',"subject":' + str(token.subject) + ',"token_kind":' + str(token.kind) +
    (token.actorChain.length ? ',"actor_chain":' + str(token.actorChain) : '') + ',"jti":' + str(token.jti)
  );
}

/** A call refused by a load limit before (or instead of) its decision. */
export interface ShedEvent {
  readonly method: string;
  readonly peer: PeerIdentity | undefined;
  /** The limit's name (a fixed string of the code that sheds). */
  readonly limit: string;
  readonly reason: string;
  readonly requestId?: string | undefined;
}

export interface DecisionLogOptions {
  /** How denial and shed lines are folded; DEFAULT_FOLDING when absent. */
  folding?: FoldingPolicy;
  /** Epoch ms, for the folding windows. */
  clock?: () => number;
}

/**
 * Writes decision lines. Allowed calls' lines are always written. Denials (and calls shed by a
 * load limit) are rate-limited per peer and reason: the first lines of each window are written,
 * the rest are counted into one `authz.decision.folded` line naming the peer, the reason and how
 * many were folded, so a flood of denials costs bounded disk and none goes unrecorded.
 */
export class DecisionLog {
  readonly #logger: Logger;
  /** Where the decision lines go; refusals inside handlers are written there too. */
  readonly logger: Logger;
  /** Allowed decisions' lines, written without pino's object walk when the logger allows it. */
  readonly #allowed: PinoLineWriter | undefined;
  readonly #allowedLine = new AllowedLine();
  readonly #folder: LineFolder;

  constructor(logger: Logger, options: DecisionLogOptions = {}) {
    this.#logger = logger;
    this.logger = logger;
    this.#allowed = PinoLineWriter.of(logger, 'info', 'authz allow', FIELD_KEYS);
    this.#folder = new LineFolder((s) => this.#summary(s), {
      ...(options.folding === undefined ? {} : { policy: options.folding }),
      ...(options.clock === undefined ? {} : { now: options.clock }),
    });
  }

  write(event: DecisionEvent): void {
    if (event.decision.allow && this.#allowed !== undefined) return this.#allowed.write(this.#allowedLine.fields(event));
    if (event.decision.allow) return this.#logger.info(decisionFields(event), 'authz allow');
    const { decision, peer } = event;
    const peerId = peer?.spiffeId.toString();
    const key = `${peerId ?? ''}|${decision.failedCheck ?? ''}|${decision.errorCode ?? ''}|${event.enforced ? 1 : 0}`;
    const fold = () => ({
      peer_spiffe_id: peerId,
      failed_check: decision.failedCheck,
      error_code: decision.errorCode,
      grpc_code: decision.code,
      ...(event.enforced ? {} : { dry_run: true }),
      reason: decision.reason,
    });
    if (!this.#folder.admit(key, fold)) return;
    const fields = decisionFields(event);
    if (event.enforced) this.#logger.warn(fields, 'authz deny');
    else this.#logger.warn(fields, 'authz would deny (dry run)');
  }

  /** A call shed by a load limit: folded per peer and limit like a denial. */
  shed(event: ShedEvent): void {
    const peerId = event.peer?.spiffeId.toString();
    if (!this.#folder.admit(`${peerId ?? ''}|shed:${event.limit}`, () => ({ peer_spiffe_id: peerId, limit: event.limit, reason: event.reason }))) return;
    this.#logger.warn(
      { event: 'authz.shed', request_id: event.requestId, method: event.method, peer_spiffe_id: peerId, peer_serial: event.peer?.serialHex, limit: event.limit, reason: event.reason },
      'call shed',
    );
  }

  /** Writes the summaries of windows still open (a closing server). */
  close(): void {
    this.#folder.close();
  }

  #summary(s: FoldSummary): void {
    this.#logger.warn(
      { event: 'authz.decision.folded', ...s.fields, folded: s.folded, window_start: new Date(s.fromMs).toISOString(), window_ms: s.toMs - s.fromMs },
      `${s.folded} more lines like this were folded`,
    );
  }
}
