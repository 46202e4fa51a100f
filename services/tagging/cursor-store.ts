// The tagging worker's durable cursor and its lease: which replica follows the upload log, and how far it got.
import { TwokeyError } from '../authz/errors.ts';

/**
 * Where the worker records the last event it finished. Only the lease holder may advance a cursor,
 * so two replicas never work the same log at once: the other waits until the lease lapses.
 */
export interface CursorStore {
  /**
   * Takes (or renews) the lease on `name` for `holder` until `nowMs + ttlMs`; returns the cursor
   * when it is ours, undefined while another holder's lease is still running.
   */
  acquire(name: string, holder: string, nowMs: number, ttlMs: number): Promise<number | undefined>;
  /** Advances the cursor and renews the lease; throws ERR_STORAGE_UNAVAILABLE (leaseLost) when the lease is no longer ours. */
  advance(name: string, holder: string, sequence: number, nowMs: number, ttlMs: number): Promise<void>;
  /** Gives the lease up (a clean stop), so another replica takes over at once. */
  release(name: string, holder: string): Promise<void>;
  /** Resolves when the database answers (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** The error `advance` throws when another replica holds the lease now; the worker stops and re-acquires. */
export function leaseLost(name: string): TwokeyError {
  return new TwokeyError('ERR_STORAGE_UNAVAILABLE', `the lease on cursor ${name} passed to another replica`);
}
