// Failed-login limiting per username and per source, persisted so a restart does not reset it.
import { TwokeyError } from '../authz/errors.ts';
import type { AuthDatabase } from './database.ts';

export interface ThrottlePolicy {
  windowMs: number;
  maxFailuresPerUser: number;
  maxFailuresPerSource: number;
}

// Five wrong passwords lock a username for the rest of a 15-minute window; a source that is
// guessing across many usernames is stopped after twenty.
export const DEFAULT_THROTTLE: ThrottlePolicy = { windowMs: 15 * 60_000, maxFailuresPerUser: 5, maxFailuresPerSource: 20 };

export type ThrottleVerdict = { allowed: true } | { allowed: false; reason: string; retryAfterMs: number };

/** Pure: given failure times in the window, may another attempt be made? */
export function decideThrottle(
  policy: ThrottlePolicy,
  now: number,
  userFailures: readonly number[],
  sourceFailures: readonly number[],
): ThrottleVerdict {
  const check = (failures: readonly number[], max: number, what: string): ThrottleVerdict | undefined => {
    const recent = failures.filter((at) => at > now - policy.windowMs).sort((a, b) => a - b);
    if (recent.length < max) return undefined;
    const retryAfterMs = recent[recent.length - max]! + policy.windowMs - now;
    return { allowed: false, reason: `too many failed logins for this ${what}`, retryAfterMs };
  };
  return (
    check(userFailures, policy.maxFailuresPerUser, 'username') ??
    check(sourceFailures, policy.maxFailuresPerSource, 'source') ?? { allowed: true }
  );
}

export class LoginThrottle {
  readonly #db: AuthDatabase;
  readonly #policy: ThrottlePolicy;
  readonly #now: () => number;

  constructor(db: AuthDatabase, policy: ThrottlePolicy = DEFAULT_THROTTLE, now: () => number = Date.now) {
    this.#db = db;
    this.#policy = policy;
    this.#now = now;
  }

  #failures(key: string, now: number): number[] {
    const rows = this.#db
      .prepare('SELECT at_ms FROM login_failures WHERE key = ? AND at_ms > ?')
      .all(key, now - this.#policy.windowMs) as { at_ms: number }[];
    return rows.map((r) => r.at_ms);
  }

  /** Throws ERR_LOGIN_THROTTLED when either the username or the source is over its limit. */
  check(username: string, source: string): void {
    const now = this.#now();
    const verdict = decideThrottle(this.#policy, now, this.#failures(`user:${username}`, now), this.#failures(`source:${source}`, now));
    if (!verdict.allowed) {
      throw new TwokeyError('ERR_LOGIN_THROTTLED', `${verdict.reason}; retry in ${Math.ceil(verdict.retryAfterMs / 1000)} s`);
    }
  }

  recordFailure(username: string, source: string): void {
    const now = this.#now();
    const insert = this.#db.prepare('INSERT INTO login_failures (key, at_ms) VALUES (?, ?)');
    this.#db.transaction(() => {
      insert.run(`user:${username}`, now);
      insert.run(`source:${source}`, now);
      this.#db.prepare('DELETE FROM login_failures WHERE at_ms <= ?').run(now - this.#policy.windowMs);
    })();
  }

  /** A successful login clears the username's failures (not the source's). */
  recordSuccess(username: string): void {
    this.#db.prepare('DELETE FROM login_failures WHERE key = ?').run(`user:${username}`);
  }
}
