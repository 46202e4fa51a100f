// Console sessions: random ids held server-side with a hard expiry; the cookie carries only the id.
import { randomBytes } from 'node:crypto';

export const SESSION_COOKIE = '__Host-twokey-console';
/** The scope an auth token must hold for its user to use the console. */
export const CONSOLE_SCOPE = 'console:read';

export interface Session {
  subject: string;
  expiresAtMs: number;
}

export interface SessionStoreOptions {
  ttlMs?: number;
  /** Sessions beyond this many push out the oldest: a login loop cannot grow memory. */
  maxSessions?: number;
  clock?: () => number;
  random?: (bytes: number) => Buffer;
}

export class SessionStore {
  readonly #sessions = new Map<string, Session>();
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #clock: () => number;
  readonly #random: (bytes: number) => Buffer;

  constructor(opts: SessionStoreOptions = {}) {
    this.#ttlMs = opts.ttlMs ?? 30 * 60_000;
    this.#max = opts.maxSessions ?? 256;
    this.#clock = opts.clock ?? Date.now;
    this.#random = opts.random ?? randomBytes;
  }

  /** A new session for `subject`, ending `ttlMs` from now whatever it does meanwhile. */
  create(subject: string): { id: string; session: Session } {
    const id = this.#random(32).toString('base64url');
    const session = { subject, expiresAtMs: this.#clock() + this.#ttlMs };
    this.#sessions.set(id, session);
    while (this.#sessions.size > this.#max) this.#sessions.delete(this.#sessions.keys().next().value!);
    return { id, session };
  }

  /** The live session a cookie value names, or undefined (expired ones are dropped on sight). */
  get(id: string | undefined): Session | undefined {
    if (id === undefined || !/^[A-Za-z0-9_-]{43}$/.test(id)) return undefined;
    const session = this.#sessions.get(id);
    if (session === undefined) return undefined;
    if (this.#clock() >= session.expiresAtMs) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session;
  }

  delete(id: string | undefined): void {
    if (id !== undefined) this.#sessions.delete(id);
  }
}

/** The session cookie's value from a Cookie header; undefined when absent or sent twice. */
export function sessionIdFrom(cookieHeader: string | undefined): string | undefined {
  if (cookieHeader === undefined) return undefined;
  const values = cookieHeader
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p.startsWith(`${SESSION_COOKIE}=`))
    .map((p) => p.slice(SESSION_COOKIE.length + 1));
  // Two cookies of one name mean someone planted one: trust neither.
  return values.length === 1 ? values[0] : undefined;
}

