// Access-token verification: cheap structural checks first, then the signature with pinned algorithms, then claims.
import type { KeyObject } from 'node:crypto';
import { TwokeyError, isTwokeyError } from './errors.ts';
import { asKeyObject, jwsSignatureVerifies } from './jws-signature.ts';
import { SpiffeId } from './spiffe-id.ts';
import type { TokenKind, VerifiedToken } from './types.ts';

export const ALLOWED_ALGORITHMS = ['ES256', 'EdDSA'] as const;
export const TOKEN_TYPE = 'at+jwt';
export const USERNAME_SHAPE = /^[a-z][a-z0-9._-]{0,63}$/;

const COMPACT_JWS = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/;
// Only what twokey's issuer sets. Everything else (crit, b64, jku, jwk, x5u, x5c, zip, ...) either
// changes how the token is processed or points at keys the token chooses itself: refused by name.
const ALLOWED_HEADER_PARAMS = new Set(['alg', 'typ', 'kid']);
const TOKEN_KINDS: readonly TokenKind[] = ['user', 'delegated', 'service'];
const JTI_SHAPE = /^[A-Za-z0-9_-]{16,128}$/;
const KID_SHAPE = /^[\x21-\x7e]{1,128}$/;
const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'jti'] as const;
const THUMBPRINT_SHAPE = /^[A-Za-z0-9_-]{43}$/;
// RFC 6749 section 3.3 scope-token.
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/;

/** Where verification keys come from (the JWKS key set, or a fixed set offline). */
export interface VerificationKeys {
  /** The public key for a kid and algorithm; throws TwokeyError when there is none. */
  keyFor(kid: string, alg: string): Promise<CryptoKey | KeyObject>;
}

export interface TokenVerifierOptions {
  keys: VerificationKeys;
  /** Expected `iss`. */
  issuer: string;
  /** Audiences this service accepts: the trust-domain ID and its own SPIFFE ID. */
  audiences: readonly string[];
  /**
   * The one audience a delegated token must name: the receiving service's own SPIFFE ID. A
   * delegated token is minted for one target service and never valid mesh-wide.
   */
  delegatedAudience?: string;
  /** Epoch milliseconds; injected so tests and the offline check control time. */
  clock?: () => number;
  /** Clock skew tolerated on exp, nbf and iat, in seconds. */
  leewaySeconds?: number;
  maxTokenBytes?: number;
  /** Longest exp - iat accepted, in seconds: bounds the damage of a mis-set lifetime. */
  maxLifetimeSeconds?: number;
  maxActorDepth?: number;
}

interface Limits {
  maxTokenBytes: number;
  maxHeaderChars: number;
  maxClaims: number;
  maxDepth: number;
  maxScopes: number;
}

const LIMITS: Limits = { maxTokenBytes: 8192, maxHeaderChars: 1024, maxClaims: 32, maxDepth: 8, maxScopes: 64 };

function malformed(why: string, untrusted?: Record<string, string>): TwokeyError {
  return new TwokeyError('ERR_TOKEN_MALFORMED', `malformed token: ${why}`, untrusted === undefined ? undefined : { untrusted });
}

function invalid(why: string, cause?: unknown): TwokeyError {
  return new TwokeyError('ERR_TOKEN_INVALID', `invalid token: ${why}`, { cause });
}

export class TokenVerifier {
  readonly #keys: VerificationKeys;
  readonly #issuer: string;
  readonly #audiences: ReadonlySet<string>;
  readonly #delegatedAudience: string | undefined;
  readonly #clock: () => number;
  readonly #leeway: number;
  readonly #maxTokenBytes: number;
  readonly #maxLifetime: number;
  readonly #maxActorDepth: number;

  constructor(options: TokenVerifierOptions) {
    if (options.audiences.length === 0) throw new TwokeyError('ERR_CONFIG_INVALID', 'token verifier needs at least one accepted audience');
    if (typeof options.issuer !== 'string' || options.issuer === '') {
      throw new TwokeyError('ERR_CONFIG_INVALID', 'token verifier needs the expected issuer');
    }
    this.#keys = options.keys;
    this.#issuer = options.issuer;
    this.#audiences = new Set(options.audiences);
    this.#delegatedAudience = options.delegatedAudience;
    this.#clock = options.clock ?? Date.now;
    this.#leeway = options.leewaySeconds ?? 30;
    this.#maxTokenBytes = options.maxTokenBytes ?? LIMITS.maxTokenBytes;
    this.#maxLifetime = options.maxLifetimeSeconds ?? 24 * 3600;
    this.#maxActorDepth = options.maxActorDepth ?? 4;
    if (!(this.#leeway >= 0 && this.#leeway <= 300)) throw new TwokeyError('ERR_CONFIG_INVALID', 'token leeway must be 0..300 seconds');
  }

  /** Verifies a compact JWS access token; throws TwokeyError naming what is wrong, never echoing it. */
  async verify(token: string): Promise<VerifiedToken> {
    const now = this.#clock();
    const jws = precheck(token, this.#maxTokenBytes);
    let verifies: boolean;
    try {
      verifies = await jwsSignatureVerifies(jws.alg, asKeyObject(await this.#keys.keyFor(jws.kid, jws.alg)), jws.signingInput, jws.signature);
    } catch (err) {
      throw isTwokeyError(err) ? err : invalid('verification failed', err);
    }
    if (!verifies) throw invalid('signature does not verify', SIGNATURE_MISMATCH);
    // RFC 9068 allows the media-type spelling "application/at+jwt"; case does not matter (RFC 7515).
    if (jws.typ.toLowerCase().replace(/^application\//, '') !== TOKEN_TYPE) throw invalid(`"typ" header must be "${TOKEN_TYPE}"`);
    return this.#claims(jws.payload, now, jws.kid);
  }

  #claims(payload: Record<string, unknown>, now: number, kid: string): VerifiedToken {
    for (const claim of REQUIRED_CLAIMS) {
      if (payload[claim] === undefined) throw invalid(`missing required "${claim}" claim`);
    }
    if (payload['iss'] !== this.#issuer) throw invalid('"iss" is not the expected issuer');
    const sub = payload['sub'];
    if (typeof sub !== 'string' || sub === '') throw invalid('"sub" must be a non-empty string');
    const aud = payload['aud'];
    const audience = Array.isArray(aud) ? (aud.length === 1 ? aud[0] : undefined) : aud;
    if (typeof audience !== 'string') throw invalid('"aud" must name exactly one audience');
    if (!this.#audiences.has(audience)) throw invalid(`audience "${audience}" is not accepted here`);
    const jti = payload['jti'];
    if (typeof jti !== 'string' || !JTI_SHAPE.test(jti)) throw invalid('"jti" must be 16-128 base64url characters');
    const { exp, iat } = payload as { exp: number; iat: number };
    if (!Number.isSafeInteger(exp) || !Number.isSafeInteger(iat)) throw invalid('"exp" and "iat" must be integers');
    const nbf = payload['nbf'];
    if (nbf !== undefined && !Number.isSafeInteger(nbf)) throw invalid('"nbf" must be an integer');
    const nowSeconds = Math.floor(now / 1000);
    if (exp <= nowSeconds - this.#leeway) throw new TwokeyError('ERR_TOKEN_EXPIRED', 'token expired');
    if (typeof nbf === 'number' && nbf > nowSeconds + this.#leeway) throw invalid('"nbf" is in the future');
    if (iat * 1000 > now + this.#leeway * 1000) throw invalid('"iat" is in the future');
    if (exp <= iat) throw invalid('"exp" is not after "iat"');
    if (exp - iat > this.#maxLifetime) throw invalid(`lifetime exp - iat exceeds ${this.#maxLifetime} seconds`);

    const kind = payload['token_kind'];
    if (typeof kind !== 'string' || !(TOKEN_KINDS as readonly string[]).includes(kind)) {
      throw invalid('"token_kind" must be "user", "delegated" or "service"');
    }
    const scopes = parseScopes(payload['scope']);
    const clientIdClaim = payload['client_id'];
    let clientId: string | undefined;
    if (clientIdClaim !== undefined) {
      if (typeof clientIdClaim !== 'string') throw invalid('"client_id" must be a string');
      clientId = parseSpiffeClaim(clientIdClaim, 'client_id');
    }
    const act = payload['act'];
    const cnf = payload['cnf'];

    let actorChain: string[] = [];
    let boundThumbprint: string | undefined;
    switch (kind as TokenKind) {
      case 'user':
        if (act !== undefined || cnf !== undefined) throw invalid('a user token carries no "act" and no "cnf"');
        if (!USERNAME_SHAPE.test(sub)) throw invalid('user token "sub" is not a username');
        break;
      case 'delegated':
        if (!USERNAME_SHAPE.test(sub)) throw invalid('delegated token "sub" is not a username');
        if (act === undefined) throw invalid('a delegated token must name its actor in "act"');
        if (this.#delegatedAudience !== undefined && audience !== this.#delegatedAudience) {
          throw invalid(`a delegated token must be addressed to this service (${this.#delegatedAudience}), not "${audience}"`);
        }
        actorChain = parseActorChain(act, this.#maxActorDepth);
        boundThumbprint = parseCnf(cnf, 'delegated');
        // Without a service of its own to compare with (the gateway, the offline check), still
        // refuse the one audience no service would accept for it: the whole trust domain.
        if (this.#delegatedAudience === undefined && isTrustDomainId(audience)) {
          throw invalid(`a delegated token must be addressed to one service, not the whole trust domain "${audience}"`);
        }
        break;
      case 'service':
        if (act !== undefined) throw invalid('a service token carries no "act"');
        parseSpiffeClaim(sub, 'sub');
        boundThumbprint = parseCnf(cnf, 'service');
        break;
    }
    const leewayMs = this.#leeway * 1000;
    return {
      kind: kind as TokenKind,
      subject: sub,
      issuer: this.#issuer,
      audience,
      jti,
      scopes,
      actorChain,
      boundThumbprint,
      clientId,
      validFromMs: ((nbf as number | undefined) ?? iat) * 1000 - leewayMs,
      validUntilMs: exp * 1000 + leewayMs,
      kid,
      issuedAtSeconds: iat,
    };
  }
}

/** A compact JWS that passed the structural checks, in the parts verification needs. */
export interface CheckedJws {
  alg: (typeof ALLOWED_ALGORITHMS)[number];
  kid: string;
  typ: string;
  /** The ASCII `header.payload` the signature covers. */
  signingInput: string;
  signature: Buffer;
  payload: Record<string, unknown>;
}

/** Structural checks that run before any key lookup or signature work. */
export function precheck(token: unknown, maxTokenBytes: number = LIMITS.maxTokenBytes): CheckedJws {
  if (typeof token !== 'string') throw malformed('not a string');
  if (token.length === 0) throw malformed('empty');
  if (token.length > maxTokenBytes) throw malformed(`longer than ${maxTokenBytes} bytes`);
  const parts = COMPACT_JWS.exec(token);
  if (parts === null) throw malformed('not a compact JWS (three base64url parts separated by dots)');
  if (parts[1]!.length > LIMITS.maxHeaderChars) throw malformed(`header longer than ${LIMITS.maxHeaderChars} characters`);
  const header = decodeJsonPart(parts[1]!, 'header');
  for (const name of Object.keys(header)) {
    if (!ALLOWED_HEADER_PARAMS.has(name)) throw malformed(`header parameter ${shownName(name)} is not accepted`, { parameter: name });
  }
  if (typeof header['alg'] !== 'string' || !(ALLOWED_ALGORITHMS as readonly string[]).includes(header['alg'])) {
    throw malformed(`"alg" must be one of ${ALLOWED_ALGORITHMS.join(', ')}`);
  }
  if (typeof header['typ'] !== 'string') throw malformed('"typ" header is missing');
  if (typeof header['kid'] !== 'string' || !KID_SHAPE.test(header['kid'])) throw malformed('"kid" must be a short printable string');
  const payload = decodeJsonPart(parts[2]!, 'payload');
  const names = Object.keys(payload);
  if (names.length > LIMITS.maxClaims) throw malformed(`more than ${LIMITS.maxClaims} claims`);
  if (depthOf(payload) > LIMITS.maxDepth) throw malformed(`claims nested deeper than ${LIMITS.maxDepth} levels`);
  // Node's decoder ignores the spare bits of the last base64url character, so without this one
  // signature would have several spellings, each a different token string for the cache and for logs.
  const signature = Buffer.from(parts[3]!, 'base64url');
  if (signature.toString('base64url') !== parts[3]) throw malformed('signature is not canonical base64url');
  return {
    alg: header['alg'] as CheckedJws['alg'],
    kid: header['kid'],
    typ: header['typ'],
    signingInput: `${parts[1]}.${parts[2]}`,
    signature,
    payload,
  };
}

function decodeJsonPart(part: string, what: string): Record<string, unknown> {
  const bytes = Buffer.from(part, 'base64url');
  // Node's decoder is lenient: insist on the one canonical encoding so two strings never mean one token.
  if (bytes.toString('base64url') !== part) throw malformed(`${what} is not canonical base64url`);
  let value: unknown;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    value = JSON.parse(text);
  } catch {
    throw malformed(`${what} is not UTF-8 JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw malformed(`${what} is not a JSON object`);
  const duplicate = duplicateMember(text);
  if (duplicate !== undefined) throw malformed(`${what} repeats the member ${shownName(duplicate)}`, { member: duplicate });
  return value as Record<string, unknown>;
}

const JSON_STRING = /"(?:[^"\\]|\\.)*"/y;

/**
 * The first member name an object in already-valid JSON text repeats. JSON.parse keeps the last
 * duplicate while other JOSE libraries keep the first, so {"alg":"none","alg":"ES256"} or two
 * "sub" members could mean one thing here and another to a different verifier in the mesh.
 */
function duplicateMember(text: string): string | undefined {
  const objects: Array<Set<string> | null> = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{') objects.push(new Set());
    else if (c === '[') objects.push(null);
    else if (c === '}' || c === ']') objects.pop();
    else if (c === '"') {
      JSON_STRING.lastIndex = i;
      const literal = JSON_STRING.exec(text)![0];
      i += literal.length - 1;
      const names = objects[objects.length - 1];
      if (names === null || names === undefined) continue;
      let j = i + 1;
      while (text[j] === ' ' || text[j] === '\t' || text[j] === '\n' || text[j] === '\r') j++;
      if (text[j] !== ':') continue;
      // Escapes are decoded, so "s\u0075b" and "sub" are one name.
      const name = JSON.parse(literal) as string;
      if (names.has(name)) return name;
      names.add(name);
    }
  }
  return undefined;
}

function depthOf(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  let deepest = 0;
  for (const child of Object.values(value as object)) deepest = Math.max(deepest, depthOf(child));
  return deepest + 1;
}

// The registered JOSE header parameters (RFC 7515, 7516, 7797, 8555) and JWT claims (RFC 7519,
// 8693, 9068, 8705) twokey's tokens or attacks on them use. A message names a member only when it
// is one of these: any other name was made up by whoever wrote the token, and an unverified token's
// text is never reflected to the caller (the log gets it, sanitized, through TwokeyError.untrusted).
const REGISTERED_NAMES: ReadonlySet<string> = new Set([
  'alg', 'typ', 'kid', 'cty', 'crit', 'jku', 'jwk', 'x5u', 'x5c', 'x5t', 'x5t#S256', 'b64', 'zip', 'enc', 'epk', 'apu', 'apv', 'iv', 'tag', 'p2s', 'p2c', 'url', 'nonce',
  'iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'scope', 'client_id', 'act', 'cnf', 'may_act', 'token_kind',
]);

function shownName(name: string): string {
  return REGISTERED_NAMES.has(name) ? `"${name}"` : '(a name not registered for JWTs)';
}

function parseScopes(claim: unknown): ReadonlySet<string> {
  if (claim === undefined) return new Set();
  if (typeof claim !== 'string') throw invalid('"scope" must be a space-separated string');
  if (claim === '') return new Set();
  const scopes = claim.split(' ');
  if (scopes.length > LIMITS.maxScopes) throw invalid(`more than ${LIMITS.maxScopes} scopes`);
  for (const scope of scopes) {
    if (!SCOPE_TOKEN.test(scope)) throw invalid('"scope" holds an empty or ill-formed scope token');
  }
  return new Set(scopes);
}

function parseSpiffeClaim(value: unknown, claim: string): string {
  try {
    return SpiffeId.parse(value).toString();
  } catch (err) {
    throw invalid(`"${claim}" is not a SPIFFE ID`, err);
  }
}

function isTrustDomainId(audience: string): boolean {
  try {
    return SpiffeId.parse(audience).path === '';
  } catch {
    return false; // not a SPIFFE ID at all, so not a trust domain's
  }
}

function parseActorChain(act: unknown, maxDepth: number): string[] {
  const chain: string[] = [];
  let node = act;
  while (node !== undefined) {
    if (node === null || typeof node !== 'object' || Array.isArray(node)) throw invalid('"act" must be an object');
    for (const name of Object.keys(node)) {
      if (name !== 'sub' && name !== 'act') throw invalid(`"act" may hold only "sub" and "act", not ${shownName(name)}`);
    }
    const { sub, act: inner } = node as { sub?: unknown; act?: unknown };
    chain.push(parseSpiffeClaim(sub, 'act.sub'));
    if (chain.length > maxDepth) throw invalid(`delegation chain deeper than ${maxDepth}`);
    node = inner;
  }
  return chain;
}

function parseCnf(cnf: unknown, kind: string): string {
  if (cnf === null || typeof cnf !== 'object' || Array.isArray(cnf)) {
    throw invalid(`a ${kind} token must be bound to a certificate ("cnf")`);
  }
  const names = Object.keys(cnf);
  const thumbprint = (cnf as Record<string, unknown>)['x5t#S256'];
  if (names.length !== 1 || typeof thumbprint !== 'string' || !THUMBPRINT_SHAPE.test(thumbprint)) {
    throw invalid('"cnf" must hold exactly one "x5t#S256" certificate thumbprint');
  }
  return thumbprint;
}

// The cause of every signature mismatch, so the token cache can tell it from other failures.
const SIGNATURE_MISMATCH = new Error('signature does not verify');

/**
 * Whether verification failed on the signature itself: the key the token's kid names does not
 * verify these bytes. Only this failure is certain to repeat while the keys stay the same.
 */
export function isSignatureFailure(err: TwokeyError): boolean {
  return err.cause === SIGNATURE_MISMATCH;
}
