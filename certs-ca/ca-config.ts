// The CA's settings, stored beside its key as config.json and validated on every load.
import { encodeOid } from '../services/authz/der.ts';
import { TwokeyError } from '../services/authz/errors.ts';
import { SpiffeId } from '../services/authz/spiffe-id.ts';
import { DEFAULT_GRANTS_OID } from '../services/authz/svid.ts';

export interface CaConfig {
  trustDomain: string;
  /** OID of the grants extension this CA writes (every arc within 32 bits). */
  grantsOid: string;
  /** Longest lifetime of a workload certificate, in seconds. */
  maxTtlSeconds: number;
}

export const DEFAULT_MAX_TTL_SECONDS = 7 * 86400;
/**
 * The longest lifetime any twokey CA may allow (as public CAs, 398 days): a certificate revoked by
 * serial alone, its notAfter unknown, stays in the revocation set this long.
 */
export const MAX_CA_TTL_SECONDS = 398 * 86400;
const FILE_VERSION = 1;
const KEYS = ['version', 'trustDomain', 'grantsOid', 'maxTtlSeconds'];

function bad(why: string): TwokeyError {
  return new TwokeyError('ERR_CA_POLICY', `invalid CA config: ${why}`);
}

/** Validates settings; throws ERR_CA_POLICY / ERR_SPIFFE_ID_INVALID / ERR_CONFIG_INVALID naming the field. */
export function makeCaConfig(input: { trustDomain: string; grantsOid?: string; maxTtlSeconds?: number }): CaConfig {
  // Parsing the trust domain's own ID applies the SPIFFE rules to the name.
  const trustDomain = SpiffeId.forTrustDomain(input.trustDomain).trustDomain;
  const grantsOid = input.grantsOid ?? DEFAULT_GRANTS_OID;
  encodeOid(grantsOid);
  const maxTtlSeconds = input.maxTtlSeconds ?? DEFAULT_MAX_TTL_SECONDS;
  if (!Number.isSafeInteger(maxTtlSeconds) || maxTtlSeconds <= 0) throw bad(`maxTtlSeconds must be a positive integer, got ${maxTtlSeconds}`);
  if (maxTtlSeconds > MAX_CA_TTL_SECONDS) throw bad(`maxTtlSeconds must be at most ${MAX_CA_TTL_SECONDS} (398 days), got ${maxTtlSeconds}`);
  return { trustDomain, grantsOid, maxTtlSeconds };
}

export function serializeCaConfig(config: CaConfig): string {
  return `${JSON.stringify({ version: FILE_VERSION, ...config }, null, 2)}\n`;
}

export function parseCaConfig(text: string, file: string): CaConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw bad(`${file} is not JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(`${file} must hold a JSON object`);
  const obj = raw as Record<string, unknown>;
  for (const key of Object.keys(obj)) if (!KEYS.includes(key)) throw bad(`${file}: unknown key ${JSON.stringify(key)}`);
  if (obj.version !== FILE_VERSION) throw bad(`${file}: unsupported version ${JSON.stringify(obj.version)}`);
  if (typeof obj.trustDomain !== 'string') throw bad(`${file}: trustDomain must be a string`);
  if (typeof obj.grantsOid !== 'string') throw bad(`${file}: grantsOid must be a string`);
  if (typeof obj.maxTtlSeconds !== 'number') throw bad(`${file}: maxTtlSeconds must be a number`);
  return makeCaConfig({ trustDomain: obj.trustDomain, grantsOid: obj.grantsOid, maxTtlSeconds: obj.maxTtlSeconds });
}
