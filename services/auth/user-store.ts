// Users and their password hashes, in the auth database.
import { TwokeyError } from '../authz/errors.ts';
import type { SqliteStatement as Statement } from '../mesh-runtime/durable-database.ts';
import type { AuthDatabase } from './database.ts';
import { checkPasswordStrength, hashPassword, UNUSABLE_HASH, verifyPassword } from './password.ts';
import { parseUsername } from './username.ts';

export interface User {
  username: string;
  disabled: boolean;
  createdAtMs: number;
  updatedAtMs: number;
}

interface UserRow {
  username: string;
  password_hash: string;
  disabled: number;
  created_at_ms: number;
  updated_at_ms: number;
}

const ROLE = /^[a-z][a-z0-9-]{0,62}$/;

function toUser(row: UserRow): User {
  return { username: row.username, disabled: row.disabled === 1, createdAtMs: row.created_at_ms, updatedAtMs: row.updated_at_ms };
}

export class UserStore {
  readonly #db: AuthDatabase;
  readonly #now: () => number;
  // Prepared once: every login and every token exchange looks a user up.
  readonly #selectUser: Statement;
  readonly #selectRoles: Statement;

  constructor(db: AuthDatabase, now: () => number = Date.now) {
    this.#db = db;
    this.#now = now;
    this.#selectUser = db.prepare('SELECT * FROM users WHERE username = ?');
    this.#selectRoles = db.prepare('SELECT role FROM user_roles WHERE username = ? ORDER BY role');
  }

  async add(username: string, password: string): Promise<User> {
    const name = parseUsername(username);
    const weakness = checkPasswordStrength(password);
    if (weakness !== undefined) throw new TwokeyError('ERR_REQUEST_INVALID', `password for ${name} ${weakness}`);
    if (this.find(name) !== undefined) throw new TwokeyError('ERR_REQUEST_INVALID', `user ${name} already exists`);
    const hash = await hashPassword(password);
    const now = this.#now();
    this.#db
      .prepare('INSERT INTO users (username, password_hash, disabled, created_at_ms, updated_at_ms) VALUES (?, ?, 0, ?, ?)')
      .run(name, hash, now, now);
    return this.find(name)!;
  }

  setDisabled(username: string, disabled: boolean): User {
    const name = parseUsername(username);
    const result = this.#db
      .prepare('UPDATE users SET disabled = ?, updated_at_ms = ? WHERE username = ?')
      .run(disabled ? 1 : 0, this.#now(), name);
    if (result.changes !== 1) throw new TwokeyError('ERR_REQUEST_INVALID', `no user ${name}`);
    return this.find(name)!;
  }

  /** Gives a user a role; what the role grants is the registry's `auth.roles`. */
  addRole(username: string, role: string): void {
    const name = parseUsername(username);
    if (!ROLE.test(role)) throw new TwokeyError('ERR_REQUEST_INVALID', `invalid role ${JSON.stringify(role)} (a lowercase name such as admin)`);
    if (this.find(name) === undefined) throw new TwokeyError('ERR_REQUEST_INVALID', `no user ${name}`);
    this.#db.prepare('INSERT OR IGNORE INTO user_roles (username, role) VALUES (?, ?)').run(name, role);
  }

  roles(username: string): string[] {
    return (this.#selectRoles.all(username) as unknown as Array<{ role: string }>).map((r) => r.role);
  }

  find(username: string): User | undefined {
    const row = this.#selectUser.get(username) as unknown as UserRow | undefined;
    return row === undefined ? undefined : toUser(row);
  }

  /** An enabled user, or undefined: the one question token issuance asks. */
  active(username: string): User | undefined {
    const user = this.find(username);
    return user !== undefined && !user.disabled ? user : undefined;
  }

  list(): User[] {
    return (this.#db.prepare('SELECT * FROM users ORDER BY username').all() as unknown as UserRow[]).map(toUser);
  }

  /**
   * The user when the password matches and the account is enabled, else undefined. Unknown users
   * cost one full hash too, so response time does not reveal which usernames exist.
   */
  async authenticate(username: string, password: string): Promise<User | undefined> {
    const row = this.#selectUser.get(username) as unknown as UserRow | undefined;
    const ok = await verifyPassword(password, row?.password_hash ?? UNUSABLE_HASH);
    if (!ok || row === undefined || row.disabled === 1) return undefined;
    return toUser(row);
  }
}
