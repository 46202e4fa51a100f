// AIP-155 request ids for the image store's writes: the id's syntax, what makes two requests
// "the same", and how long a write is remembered under its id.
import { createHash } from 'node:crypto';
import { TwokeyError } from '../authz/errors.ts';
import { ExampleError } from '../mesh-runtime/example-errors.ts';

/**
 * A keyed write as the repositories remember it. Keys are per subject: the same id sent by
 * someone else names a different request, so nobody can fetch another subject's result by
 * guessing or replaying an id.
 */
export interface RequestKey {
  subject: string;
  requestId: string;
  /** The method, so an id reused for another method is caught as reuse, not replayed. */
  method: string;
  /** Digest of the request as validated; a repeat must match it. */
  fingerprint: string;
}

/** A write is remembered for a day by default (TWOKEY_REQUEST_ID_TTL), then pruned. */
export const DEFAULT_REQUEST_KEY_TTL_MS = 24 * 60 * 60 * 1000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The request id in canonical (lowercase) form; undefined when none was sent. */
export function checkRequestId(raw: string): string | undefined {
  if (raw === '') return undefined;
  const id = raw.toLowerCase();
  if (!UUID.test(id)) throw new TwokeyError('ERR_REQUEST_INVALID', `request_id ${JSON.stringify(raw.slice(0, 80))} is not a UUID (AIP-155)`);
  return id;
}

/** SHA-256 over the method and each part, every part length-prefixed so no two requests collide by concatenation. */
export function requestFingerprint(method: string, parts: readonly (string | Buffer)[]): string {
  const hash = createHash('sha256');
  for (const part of [method, ...parts]) {
    const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    const length = Buffer.alloc(8);
    length.writeBigUInt64BE(BigInt(bytes.length));
    hash.update(length).update(bytes);
  }
  return hash.digest('base64url');
}

/** The key a repository found under the same (subject, request id). */
export interface RememberedKey {
  method: string;
  fingerprint: string;
  resourceId: string;
  createdAtMs: number;
}

/**
 * What to do with a keyed write, given what is remembered under its key: go ahead (nothing, or
 * only an expired entry), replay the first result, or refuse a different request under a used id.
 */
export function judgeRequestKey(key: RequestKey, remembered: RememberedKey | undefined, nowMs: number, ttlMs: number): { replayOf: string } | 'new' {
  if (remembered === undefined || remembered.createdAtMs <= nowMs - ttlMs) return 'new';
  if (remembered.method !== key.method || remembered.fingerprint !== key.fingerprint) {
    throw new ExampleError(
      'ERR_REQUEST_ID_REUSED',
      `request_id ${key.requestId} was already used for a different ${remembered.method === key.method ? `${key.method} request` : `method (${remembered.method})`}; send a new id for a new request`,
    );
  }
  return { replayOf: remembered.resourceId };
}
