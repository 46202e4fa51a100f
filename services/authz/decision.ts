// The authorization decision for one call: a pure function of peer, token, method rule and time.
import { status } from '@grpc/grpc-js';
import { TwokeyError, grpcStatusOf, logDetail } from './errors.ts';
import type { RevocationView } from './types.ts';
import { CHECKS, type AppliedCeiling, type CheckName, type CheckOutcome, type CheckResult, type Decision, type DecisionInput, type PeerIdentity, type VerifiedToken } from './types.ts';
import type { Ceiling } from './federation.ts';

/**
 * One check's result. The detail of a passed check is written only when read: an allowed call's
 * details are read by nobody on the hot path (the log records only outcomes for allowed calls),
 * and building six strings per call was a measurable share of its cost. The input is immutable,
 * so the detail read later is the one the check would have written at the time.
 */
class CheckRecord implements CheckResult {
  readonly check: CheckName;
  readonly outcome: CheckOutcome;
  readonly #input: DecisionInput | undefined;
  #detail: string | undefined;

  constructor(check: CheckName, outcome: CheckOutcome, detail: string | undefined, input?: DecisionInput) {
    this.check = check;
    this.outcome = outcome;
    this.#detail = detail;
    this.#input = input;
  }

  get detail(): string {
    return (this.#detail ??= passDetail(this.check, this.#input!));
  }

  toJSON(): { check: CheckName; outcome: CheckOutcome; detail: string } {
    return { check: this.check, outcome: this.outcome, detail: this.detail };
  }
}

/** What a passed check says, from the same input it passed on. */
function passDetail(check: CheckName, input: DecisionInput): string {
  // Each check reads only what it had passed on: the token, for instance, is absent before step 3.
  const peer = (input.peer as { readonly identity: PeerIdentity }).identity;
  const rule = input.rule!;
  const token = (input.token as { readonly token: VerifiedToken } | undefined)?.token as VerifiedToken;
  switch (check) {
    case 'peer': {
      if (peer.grantsFrom === 'registry') return `${peer.spiffeId} (named by the proxy; grants from the registry)`;
      const td = peer.spiffeId.trustDomain;
      return td === input.trustDomain
        ? `${peer.spiffeId} (serial ${peer.serialHex})`
        : `${peer.spiffeId} (serial ${peer.serialHex}) of partner trust domain "${td}", verified against its own bundle`;
    }
    case 'rule':
      return 'certificateOnly' in rule ? 'certificate only' : `requires "${rule.permission}"`;
    case 'grant': {
      const ceiling = input.federation?.ceilingFor(peer.spiffeId);
      return ceiling === undefined ? `granted ${input.method}` : `granted ${input.method}, within the ceiling ${ceiling.workloads} of partner trust domain "${ceiling.workloads.trustDomain}"`;
    }
    case 'token':
      return `${token.kind} token ${token.jti} for ${token.subject}`;
    case 'revocation':
      return input.revocation === undefined ? 'not enforced here' : `not revoked (set ${input.revocation.set!.seq})`;
    case 'binding':
      if (token.kind === 'user') return 'user token: any granted workload may present it';
      return peer.grantsFrom === 'registry' ? `bound to ${peer.spiffeId} by SPIFFE ID (no certificate to compare)` : `bound to ${peer.spiffeId}`;
    case 'scope': {
      const permission = (rule as { readonly permission: string }).permission;
      return token.scopes.has(permission) ? `has "${permission}"` : `has "${permission}:any"`;
    }
  }
}

/** An allowing decision; its reason, like the checks' details, is written when first read. */
class Allowed implements Decision {
  readonly allow = true;
  readonly failedCheck = null;
  readonly errorCode = null;
  readonly code = status.OK;
  readonly checks: readonly CheckResult[];
  readonly token: VerifiedToken | undefined;
  readonly ceiling: AppliedCeiling | undefined;
  readonly #input: DecisionInput;
  #reason: string | undefined;

  constructor(input: DecisionInput, checks: readonly CheckResult[], token: VerifiedToken | undefined, ceiling: AppliedCeiling | undefined) {
    this.#input = input;
    this.checks = checks;
    this.token = token;
    this.ceiling = ceiling;
  }

  get reason(): string {
    if (this.#reason === undefined) {
      const input = this.#input;
      const peer = (input.peer as { readonly identity: PeerIdentity }).identity;
      const rule = input.rule!;
      const within = this.ceiling === undefined ? '' : ` within the ceiling ${this.ceiling.workloads}`;
      this.#reason =
        'certificateOnly' in rule
          ? `allowed: certificate-only method granted to ${peer.spiffeId}${within}`
          : `allowed: ${peer.spiffeId} holds the grant${within} and the token carries "${rule.permission}"`;
    }
    return this.#reason;
  }

  toJSON(): Decision {
    const { allow, failedCheck, errorCode, code, reason, checks, token, ceiling } = this;
    return { allow, failedCheck, errorCode, code, reason, checks, token, ...(ceiling === undefined ? {} : { ceiling }) };
  }
}

class Checks {
  readonly results: CheckResult[] = [];
  /** The ceiling in force once the peer is known to be a partner's workload. */
  ceiling: Ceiling | undefined;
  readonly #input: DecisionInput;
  constructor(input: DecisionInput) {
    this.#input = input;
  }
  pass(check: CheckName): void {
    this.results.push(new CheckRecord(check, 'pass', undefined, this.#input));
  }
  skip(check: CheckName, detail: string): void {
    this.results.push(new CheckRecord(check, 'skip', detail));
  }
  deny(check: CheckName, error: TwokeyError, token?: VerifiedToken): Decision {
    // The check's detail goes to the log only and may name what the caller sent; the reason is
    // returned to the caller and holds the message alone.
    this.results.push(new CheckRecord(check, 'fail', logDetail(error)));
    for (const rest of CHECKS.slice(CHECKS.indexOf(check) + 1)) {
      this.results.push(new CheckRecord(rest, 'skip', `not evaluated: ${check} failed`));
    }
    return {
      allow: false,
      failedCheck: check,
      errorCode: error.code,
      code: grpcStatusOf(error),
      reason: `${check} check failed: ${error.message}`,
      checks: this.results,
      token,
      ...(this.ceiling === undefined ? {} : { ceiling: applied(this.ceiling) }),
    };
  }
  allow(token?: VerifiedToken): Decision {
    return new Allowed(this.#input, this.results, token, this.ceiling === undefined ? undefined : applied(this.ceiling));
  }
}

function applied(ceiling: Ceiling): AppliedCeiling {
  return { trustDomain: ceiling.workloads.trustDomain, workloads: ceiling.workloads.toString() };
}

/** The denial for an error thrown while deciding (fail closed): INTERNAL, naming the error. */
export function internalDenial(err: unknown): Decision {
  return {
    allow: false,
    failedCheck: null,
    errorCode: null,
    code: status.INTERNAL,
    reason: `internal error during authorization: ${(err as Error)?.message ?? String(err)}`,
    checks: [],
    token: undefined,
  };
}

/**
 * Steps 1 and 2 of the decision (peer identity, declared rule, certificate grant), which need no
 * token. Returns the final decision when these settle it (a denial, or a certificate-only method
 * that is granted), or null when the token must be read: callers then verify the token and call
 * decide(). This keeps token cryptography away from callers that are not even granted the method.
 */
export function decidePeer(input: DecisionInput): Decision | null {
  return peerChecks(input, new Checks(input));
}

/** The whole decision, in DESIGN.md order, fail-closed. Pure: same input, same decision. */
export function decide(input: DecisionInput): Decision {
  const checks = new Checks(input);
  const settled = peerChecks(input, checks);
  if (settled !== null) return settled;
  const rule = input.rule as { readonly permission: string };
  const peer = (input.peer as { readonly identity: PeerIdentity }).identity;

  // Step 3: exactly one well-formed token that verifies, still within its lifetime now.
  const result = input.token;
  if (result === undefined) {
    return checks.deny('token', new TwokeyError('ERR_TOKEN_MISSING', 'no bearer token was read for this call'));
  }
  if (!result.ok) return checks.deny('token', result.error);
  const token = result.token;
  if (input.now >= token.validUntilMs) {
    return checks.deny('token', new TwokeyError('ERR_TOKEN_EXPIRED', `token ${token.jti} expired`), token);
  }
  if (input.now < token.validFromMs) {
    return checks.deny('token', new TwokeyError('ERR_TOKEN_INVALID', `token ${token.jti} is not yet valid`), token);
  }
  checks.pass('token');

  // Every identity the token speaks for: disabled, or the token itself or its key withdrawn.
  const revoked = tokenRevocation(token, input.revocation);
  if (revoked !== null) return checks.deny('revocation', revoked, token);
  checks.pass('revocation');

  // Delegated and service tokens may be presented only by the workload they are bound to.
  const bindingError = bindingFailure(token, peer);
  if (bindingError !== null) return checks.deny('binding', bindingError, token);
  checks.pass('binding');

  // Step 4: the scope the method declares, or its ':any' form.
  const permission = rule.permission;
  if (!token.scopes.has(permission) && !token.scopes.has(`${permission}:any`)) {
    return checks.deny(
      'scope',
      new TwokeyError('ERR_SCOPE_MISSING', `token scopes do not include "${permission}" (or "${permission}:any")`),
      token,
    );
  }
  // A partner's workload holds no scope beyond its ceiling, whoever issued the token it presents;
  // the handler sees the token with its scopes cut down too (an ':any' outside the ceiling is gone).
  const ceiling = checks.ceiling;
  if (ceiling !== undefined) {
    const capped = cappedToken(token, ceiling);
    if (!capped.scopes.has(permission) && !capped.scopes.has(`${permission}:any`)) {
      return checks.deny(
        'scope',
        new TwokeyError(
          'ERR_CEILING_EXCEEDED',
          `the token's "${permission}" is outside the ceiling ${ceiling.workloads} of partner trust domain "${ceiling.workloads.trustDomain}"`,
        ),
        capped,
      );
    }
    checks.pass('scope');
    return checks.allow(capped);
  }
  checks.pass('scope');
  return checks.allow(token);
}

function peerChecks(input: DecisionInput, checks: Checks): Decision | null {
  // Step 1: a verified certificate naming a SPIFFE ID of our trust domain, valid now.
  if (!input.peer.ok) return checks.deny('peer', input.peer.error);
  const peer = input.peer.identity;
  const federation = input.federation;
  let ceiling: Ceiling | undefined;
  if (!peer.spiffeId.memberOf(input.trustDomain)) {
    const partner = federation?.partner(peer.spiffeId.trustDomain);
    if (partner === undefined) {
      return checks.deny(
        'peer',
        new TwokeyError(
          'ERR_PEER_TRUST_DOMAIN',
          `peer ${peer.spiffeId} is not in trust domain "${input.trustDomain}"${federation === undefined ? '' : ' nor in a federated one'}`,
        ),
      );
    }
    ceiling = federation!.ceilingFor(peer.spiffeId);
  }
  // With several trust domains' roots in the TLS stack, its verdict says nothing about which
  // trust domain vouched: only a chain verified against the named trust domain's own bundle counts.
  if (federation !== undefined && peer.verifiedTrustDomain !== peer.spiffeId.trustDomain) {
    return checks.deny(
      'peer',
      new TwokeyError(
        'ERR_PEER_TRUST_DOMAIN',
        `peer certificate of ${peer.spiffeId} was not verified against the own bundle of trust domain "${peer.spiffeId.trustDomain}"`,
      ),
    );
  }
  // A long-lived HTTP/2 connection must not outlive the certificate it was opened with.
  if (input.now >= peer.notAfter.getTime()) {
    return checks.deny(
      'peer',
      new TwokeyError('ERR_PEER_CERT_EXPIRED', `peer certificate ${peer.serialHex} expired at ${peer.notAfter.toISOString()}`),
    );
  }
  if (input.now < peer.notBefore.getTime()) {
    return checks.deny(
      'peer',
      new TwokeyError('ERR_PEER_CERT_INVALID', `peer certificate ${peer.serialHex} is not valid before ${peer.notBefore.toISOString()}`),
    );
  }
  // A revocation list can only remove access, so one too old to trust decides nothing: deny.
  if (input.revocation !== undefined) {
    const stale = staleness(input.revocation, input.now);
    if (stale !== null) return checks.deny('peer', stale);
    if (input.revocation.set!.serials.has(setSerial(peer))) {
      return checks.deny('peer', new TwokeyError('ERR_PEER_CERT_REVOKED', `peer certificate ${peer.serialHex} is revoked`));
    }
  }
  checks.pass('peer');

  // The proto is the single source of truth: a method that declares nothing is denied.
  const rule = input.rule;
  if (rule === undefined) {
    const why =
      input.methodKnown === false
        ? `method ${input.method} is not in this server's method catalog: pass its proto's rules (the registry's protoRoots, or createMeshServer's rules)`
        : `method ${input.method} declares no authorization rule`;
    return checks.deny('rule', new TwokeyError('ERR_METHOD_UNDECLARED', why));
  }
  checks.pass('rule');

  // Step 2: the method is in the certificate's grants, and for a partner's workload in our
  // ceiling for it as well: its effective grants are the intersection.
  if (!peer.spiffeId.memberOf(input.trustDomain)) {
    const partnerDomain = peer.spiffeId.trustDomain;
    if (ceiling === undefined) {
      return checks.deny(
        'grant',
        new TwokeyError('ERR_CEILING_EXCEEDED', `no ceiling of partner trust domain "${partnerDomain}" covers ${peer.spiffeId}: it is granted nothing here`),
      );
    }
    checks.ceiling = ceiling;
  }
  if (!peer.grants.allows(input.method)) {
    return checks.deny(
      'grant',
      new TwokeyError('ERR_METHOD_NOT_GRANTED', `${peer.grantsFrom === 'registry' ? 'the registry entry' : 'certificate'} of ${peer.spiffeId} does not grant ${input.method}`),
    );
  }
  if (ceiling !== undefined && !ceiling.methods.allows(input.method)) {
    return checks.deny(
      'grant',
      new TwokeyError(
        'ERR_CEILING_EXCEEDED',
        `certificate of ${peer.spiffeId} grants ${input.method}, but the ceiling ${ceiling.workloads} of partner trust domain "${ceiling.workloads.trustDomain}" does not`,
      ),
    );
  }
  checks.pass('grant');

  if ('certificateOnly' in rule) {
    checks.skip('token', 'certificate-only method: no token is read');
    checks.skip('revocation', 'certificate-only method: the peer serial was checked at peer');
    checks.skip('binding', 'certificate-only method');
    checks.skip('scope', 'certificate-only method');
    return checks.allow();
  }
  return null;
}

function bindingFailure(token: VerifiedToken, peer: PeerIdentity): TwokeyError | null {
  if (token.kind === 'user') return null;
  const presenter = token.kind === 'delegated' ? token.actorChain[0] : token.subject;
  const role = token.kind === 'delegated' ? 'actor (act.sub)' : 'subject';
  if (presenter !== peer.spiffeId.toString()) {
    return new TwokeyError('ERR_TOKEN_NOT_BOUND', `${token.kind} token ${role} ${presenter ?? '(none)'} is not the peer ${peer.spiffeId}`);
  }
  // A peer known only by the SPIFFE ID a proxy vouched for has no certificate to compare with.
  if (peer.grantsFrom !== 'registry' && token.boundThumbprint !== peer.thumbprint) {
    return new TwokeyError(
      'ERR_TOKEN_NOT_BOUND',
      `${token.kind} token is bound (cnf.x5t#S256) to another certificate than the peer's (serial ${peer.serialHex})`,
    );
  }
  return null;
}

// The peer's serial as the set keys it (upper case, no leading zeros), worked out once per
// certificate: identities are cached per connection, and this runs on every call.
const setSerials = new WeakMap<PeerIdentity, string>();
function setSerial(peer: PeerIdentity): string {
  let serial = setSerials.get(peer);
  if (serial === undefined) {
    serial = peer.serialHex.toUpperCase().replace(/^0+(?=.)/, '');
    setSerials.set(peer, serial);
  }
  return serial;
}

function staleness(view: RevocationView, now: number): TwokeyError | null {
  const set = view.set;
  if (set === null) {
    return new TwokeyError(
      'ERR_REVOCATION_STALE',
      `no revocation list received from auth since ${new Date(view.sinceMs).toISOString()}: refusing until one arrives`,
    );
  }
  if (now - set.issuedAtMs > view.maxStalenessMs) {
    return new TwokeyError(
      'ERR_REVOCATION_STALE',
      `the revocation list is stale: last refreshed at ${new Date(set.issuedAtMs).toISOString()}, more than ${Math.round(view.maxStalenessMs / 1000)} s ago (auth unreachable?)`,
    );
  }
  return null;
}

function isDisabled(users: ReadonlyMap<string, number>, subject: string, iat: number | undefined): boolean {
  const since = users.get(subject);
  return since !== undefined && (iat === undefined || iat <= since);
}

/**
 * The revocation check alone, for an edge that verifies user tokens without a mesh peer (the
 * public gateway): a missing or stale set refuses (ERR_REVOCATION_STALE), then the token's entries.
 */
export function revocationFailure(token: VerifiedToken, view: RevocationView, now: number): TwokeyError | null {
  return staleness(view, now) ?? tokenRevocation(token, view);
}

function tokenRevocation(token: VerifiedToken, view: RevocationView | undefined): TwokeyError | null {
  if (view === undefined) return null;
  // peerChecks already refused a missing or stale set.
  const set = view.set!;
  if (set.jtis.has(token.jti)) return new TwokeyError('ERR_TOKEN_REVOKED', `token ${token.jti} is revoked`);
  if (token.kid === undefined || set.kids.has(token.kid)) {
    return new TwokeyError('ERR_TOKEN_REVOKED', 'token is signed with a withdrawn signing key');
  }
  // A token from before the disabling is refused; one without iat cannot be placed, so is refused too.
  const users = set.disabledSubjects;
  if (users.size === 0) return null;
  if (isDisabled(users, token.subject, token.issuedAtSeconds)) {
    return new TwokeyError('ERR_TOKEN_REVOKED', `the ${token.kind} token's subject ${token.subject} is disabled`);
  }
  for (const actor of token.actorChain) {
    if (isDisabled(users, actor, token.issuedAtSeconds)) return new TwokeyError('ERR_TOKEN_REVOKED', `delegated token actor ${actor} is disabled`);
  }
  return null;
}

// A partner peer's token as the ceiling lets it count here, worked out once per token and ceiling.
const cappedTokens = new WeakMap<VerifiedToken, WeakMap<Ceiling, VerifiedToken>>();
function cappedToken(token: VerifiedToken, ceiling: Ceiling): VerifiedToken {
  let byCeiling = cappedTokens.get(token);
  if (byCeiling === undefined) cappedTokens.set(token, (byCeiling = new WeakMap()));
  let capped = byCeiling.get(ceiling);
  if (capped === undefined) {
    capped = Object.freeze({ ...token, scopes: new Set([...token.scopes].filter((s) => ceiling.scopes.has(s))) });
    byCeiling.set(ceiling, capped);
  }
  return capped;
}
