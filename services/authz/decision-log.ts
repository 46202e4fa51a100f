// One structured log line per authorization decision; tokens, keys and passwords never appear.
import type { Logger } from 'pino';
import type { CheckName, CheckOutcome, Decision, PeerIdentity } from './decision.ts';

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

export class DecisionLog {
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  write(event: DecisionEvent): void {
    const fields = decisionFields(event);
    if (event.decision.allow) this.#logger.info(fields, 'authz allow');
    else if (event.enforced) this.#logger.warn(fields, 'authz deny');
    else this.#logger.warn(fields, 'authz would deny (dry run)');
  }
}
