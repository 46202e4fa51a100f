// The mesh's revocation set: a signed, sequenced list of what no longer authenticates, and its verifier.
import { createHash, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { TwokeyError, isTwokeyError } from './errors.ts';
import { asKeyObject, jwsSignatureVerifies } from './jws-signature.ts';
import type { VerificationKeys } from './token-verifier.ts';
import type { RevocationEntries, RevocationSet, RevocationView } from './types.ts';

/**
 * The JWS `typ` of a revocation set. Distinct from an access token's `at+jwt`: the access-token
 * verifier refuses a set (wrong typ), and this verifier refuses an access token, so a document
 * signed with the same key can never be taken for the other.
 */
export const REVOCATION_SET_TYPE = 'twokey-revocation+jwt';
/**
 * Most entries one set may hold, all kinds together. auth refuses to add an entry beyond it (the
 * revocation fails loudly; nothing live is dropped) and a verifier refuses a larger set. Entries
 * expire with what they revoke, so reaching it takes a mass revocation inside one token lifetime.
 */
export const MAX_REVOCATION_ENTRIES = 100_000;
/** Largest signed set accepted, checked before any parsing (about 160 bytes an entry at the bound). */
export const MAX_REVOCATION_SET_BYTES = 16 * 1024 * 1024;

const COMPACT_JWS = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/;
const KID_SHAPE = /^[\x21-\x7e]{1,128}$/;
const JTI_SHAPE = /^[A-Za-z0-9_-]{16,128}$/;
const SERIAL_SHAPE = /^[0-9A-F]{1,64}$/;
// Usernames and SPIFFE IDs (a delegated token's actors, a service token's subject).
const SUBJECT_SHAPE = /^[\x21-\x7e]{1,2048}$/;

/** Most published kids a set may name (auth publishes three: current, next, previous). */
const MAX_PUBLISHED_KIDS = 16;

/** A serial as the set keys it: upper-case hex without leading zeros (so "00ab" and "AB" match). */
export function normalizeSerial(hex: string): string {
  const upper = hex.trim().replace(/^0x/i, '').replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]+$/.test(upper)) throw new TwokeyError('ERR_REQUEST_INVALID', 'a certificate serial must be hexadecimal');
  const stripped = upper.replace(/^0+/, '');
  return stripped === '' ? '0' : stripped;
}

function malformed(why: string): TwokeyError {
  return new TwokeyError('ERR_REVOCATION_SET_INVALID', `revocation set refused: ${why}`);
}

/** All entries, every kind together (what MAX_REVOCATION_ENTRIES bounds). */
export function entryCount(e: RevocationEntries): number {
  return e.disabledSubjects.size + e.jtis.size + e.serials.size + e.kids.size;
}

// Sorted pairs: the canonical form is independent of insertion order, so its digest is too.
function canonicalEntries(e: RevocationEntries): Record<string, unknown> {
  const pairs = (m: ReadonlyMap<string, number>): [string, number][] => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    users: pairs(e.disabledSubjects),
    jtis: pairs(e.jtis),
    serials: pairs(e.serials),
    kids: [...e.kids].sort(),
  };
}

function digestOf(canonical: Record<string, unknown>): string {
  return createHash('sha256').update(JSON.stringify(canonical)).digest('base64url');
}

/** Builds a set from entries (auth's side); validates every entry and the bound. */
export function buildRevocationSet(seq: number, issuedAtMs: number, entries: RevocationEntries): RevocationSet {
  if (!Number.isSafeInteger(seq) || seq < 0) throw malformed('"seq" must be a non-negative integer');
  if (!Number.isSafeInteger(issuedAtMs) || issuedAtMs <= 0) throw malformed('"iat" must be a positive integer');
  if (entryCount(entries) > MAX_REVOCATION_ENTRIES) throw malformed(`more than ${MAX_REVOCATION_ENTRIES} entries`);
  const check = (m: ReadonlyMap<string, number>, shape: RegExp, what: string): void => {
    for (const [key, at] of m) {
      if (!shape.test(key)) throw malformed(`a ${what} entry is not well-formed`);
      if (!Number.isSafeInteger(at) || at < 0) throw malformed(`a ${what} entry has no valid time`);
    }
  };
  check(entries.disabledSubjects, SUBJECT_SHAPE, 'user');
  check(entries.jtis, JTI_SHAPE, 'jti');
  check(entries.serials, SERIAL_SHAPE, 'serial');
  for (const kid of entries.kids) if (!KID_SHAPE.test(kid)) throw malformed('a kid entry is not well-formed');
  return {
    seq,
    issuedAtMs,
    disabledSubjects: new Map(entries.disabledSubjects),
    jtis: new Map(entries.jtis),
    serials: new Map(entries.serials),
    kids: new Set(entries.kids),
    digest: digestOf(canonicalEntries(entries)),
  };
}

/** Signs a set as a compact JWS (ES256 with auth's current signing key). */
export function signRevocationSet(set: RevocationSet, key: { kid: string; privateKey: KeyObject | CryptoKey }): string {
  const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: REVOCATION_SET_TYPE, kid: key.kid })).toString('base64url');
  const published = set.publishedKids === undefined ? {} : { keys: [...set.publishedKids] };
  const payload = Buffer.from(JSON.stringify({ seq: set.seq, iat: set.issuedAtMs, ...published, ...canonicalEntries(set) })).toString('base64url');
  const signingInput = `${header}.${payload}`;
  const signature = cryptoSign('sha256', Buffer.from(signingInput, 'latin1'), { key: asKeyObject(key.privateKey), dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${signature.toString('base64url')}`;
}

function readPairs(value: unknown, what: string): Map<string, number> {
  if (!Array.isArray(value)) throw malformed(`"${what}" must be an array`);
  const out = new Map<string, number>();
  for (const pair of value) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'number') {
      throw malformed(`a "${what}" entry is not a [string, number] pair`);
    }
    if (out.has(pair[0])) throw malformed(`a "${what}" entry appears twice`);
    out.set(pair[0], pair[1]);
  }
  return out;
}

// Optional: sets signed before auth named its published keys carry none.
function readPublishedKids(value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > MAX_PUBLISHED_KIDS || value.some((k) => typeof k !== 'string' || !KID_SHAPE.test(k))) {
    throw malformed(`"keys" must be an array of at most ${MAX_PUBLISHED_KIDS} well-formed kids`);
  }
  return value as string[];
}

/**
 * Verifies a signed set against the mesh's verification keys (the same JWKS access tokens verify
 * against). Throws ERR_REVOCATION_SET_INVALID naming what is wrong; never echoes the input.
 */
export async function verifyRevocationSet(jws: unknown, keys: VerificationKeys): Promise<RevocationSet> {
  if (typeof jws !== 'string') throw malformed('not a string');
  if (jws.length > MAX_REVOCATION_SET_BYTES) throw malformed(`larger than ${MAX_REVOCATION_SET_BYTES} bytes`);
  const parts = COMPACT_JWS.exec(jws);
  if (parts === null) throw malformed('not a compact JWS');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    throw malformed('header is not JSON');
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw malformed('header is not an object');
  for (const name of Object.keys(header)) if (!['alg', 'typ', 'kid'].includes(name)) throw malformed('header carries a parameter that is not accepted');
  if (header['alg'] !== 'ES256' && header['alg'] !== 'EdDSA') throw malformed('"alg" must be ES256 or EdDSA');
  if (header['typ'] !== REVOCATION_SET_TYPE) throw malformed(`"typ" must be "${REVOCATION_SET_TYPE}"`);
  const kid = header['kid'];
  if (typeof kid !== 'string' || !KID_SHAPE.test(kid)) throw malformed('"kid" is missing or not well-formed');
  const signature = Buffer.from(parts[3]!, 'base64url');
  if (signature.toString('base64url') !== parts[3]) throw malformed('signature is not canonical base64url');
  let verifies: boolean;
  try {
    verifies = await jwsSignatureVerifies(header['alg'], asKeyObject(await keys.keyFor(kid, header['alg'])), `${parts[1]}.${parts[2]}`, signature);
  } catch (err) {
    // An unknown kid, or no keys at all: the set cannot be trusted either way.
    throw malformed(isTwokeyError(err) && err.code === 'ERR_JWKS_UNAVAILABLE' ? 'no verification keys' : 'its signing key is not one of the mesh keys');
  }
  if (!verifies) throw malformed('signature does not verify');

  let payload: Record<string, unknown>;
  try {
    payload = JSON.parse(Buffer.from(parts[2]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    throw malformed('payload is not JSON');
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw malformed('payload is not an object');
  const kids = payload['kids'];
  if (!Array.isArray(kids) || kids.some((k) => typeof k !== 'string')) throw malformed('"kids" must be an array of strings');
  const kidSet = new Set(kids as string[]);
  if (kidSet.size !== kids.length) throw malformed('a "kids" entry appears twice');
  const set = buildRevocationSet(payload['seq'] as number, payload['iat'] as number, {
    disabledSubjects: readPairs(payload['users'], 'users'),
    jtis: readPairs(payload['jtis'], 'jtis'),
    serials: readPairs(payload['serials'], 'serials'),
    kids: kidSet,
  });
  return { ...set, signedBy: kid, publishedKids: readPublishedKids(payload['keys']) };
}

export interface RevocationHolderOptions {
  keys: VerificationKeys;
  /** Oldest set (by its iat) decisions may rely on; past it calls are refused UNAVAILABLE. Default 30 s. */
  maxStalenessMs?: number;
  /** Epoch ms. */
  clock?: () => number;
  /** How far in the future a set's iat may lie (clock skew); later ones are refused. */
  leewayMs?: number;
}

/**
 * The newest verified set a server holds. Accepts only forward: a lower seq is refused, an equal
 * seq must carry the same entries (a heartbeat, refreshing freshness) and a later iat.
 */
export class RevocationHolder {
  readonly #keys: VerificationKeys;
  readonly #clock: () => number;
  readonly #leewayMs: number;
  readonly #listeners = new Set<(set: RevocationSet, changed: boolean) => void>();
  #current: RevocationSet | null = null;
  #view: RevocationView;

  constructor(options: RevocationHolderOptions) {
    this.#keys = options.keys;
    this.#clock = options.clock ?? Date.now;
    this.#leewayMs = options.leewayMs ?? 30_000;
    const maxStalenessMs = options.maxStalenessMs ?? 30_000;
    if (!(maxStalenessMs > 0)) throw new TwokeyError('ERR_CONFIG_INVALID', 'the revocation staleness bound must be positive');
    this.#view = { set: null, maxStalenessMs, sinceMs: this.#clock() };
  }

  /** What decide() reads: the set held (one object per accepted set, so a call costs no allocation). */
  view(): RevocationView {
    return this.#view;
  }

  get current(): RevocationSet | null {
    return this.#current;
  }

  /** Called after every accepted set; `changed` is false for a heartbeat of the same entries. */
  onUpdate(listener: (set: RevocationSet, changed: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Verifies and, if it moves forward, holds the set. Throws ERR_REVOCATION_SET_INVALID when refused. */
  async accept(jws: unknown): Promise<RevocationSet> {
    const set = await verifyRevocationSet(jws, this.#keys);
    return this.acceptVerified(set);
  }

  /** The ordering rules alone, for a set already verified. */
  acceptVerified(set: RevocationSet): RevocationSet {
    if (set.issuedAtMs > this.#clock() + this.#leewayMs) throw malformed('"iat" lies in the future');
    const held = this.#current;
    if (held !== null) {
      // A stolen key, once withdrawn, must not be able to sign a set that forgives it.
      if (set.signedBy !== undefined && held.kids.has(set.signedBy)) throw malformed('signed with a key the held set withdraws');
      if (set.seq < held.seq) throw malformed('older than the set already held (lower seq)');
      if (set.seq === held.seq && set.digest !== held.digest) throw malformed('same seq as the set held but different entries');
      if (set.seq === held.seq && set.issuedAtMs <= held.issuedAtMs) throw malformed('a replay: not newer than the set held');
    }
    const changed = held === null || held.digest !== set.digest;
    this.#current = set;
    this.#view = { ...this.#view, set };
    for (const listener of this.#listeners) listener(set, changed);
    return set;
  }
}
