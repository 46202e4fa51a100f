// Users and their roles: validation and password hashing here, rows in an AuthRecords engine.
import { TwokeyError } from '../authz/errors.ts';
import { checkPasswordStrength, hashPassword, UNUSABLE_HASH, verifyPassword } from './password.ts';
import { parseUsername } from './username.ts';

export interface User {
  username: string;
  disabled: boolean;
  createdAtMs: number;
  updatedAtMs: number;
}

export interface UserRow {
  username: string;
  passwordHash: string;
  disabled: boolean;
  createdAtMs: number;
  updatedAtMs: number;
}

/** Where user rows live: SQLite (sqlite-auth-records.ts) or PostgreSQL (postgres-auth-records.ts). */
export interface UserRecords {
  /** False when the username is taken. */
  insert(username: string, passwordHash: string, nowMs: number): Promise<boolean>;
  /** False when there is no such user. */
  setDisabled(username: string, disabled: boolean, nowMs: number): Promise<boolean>;
  /** False when there is no such user; a role held already is kept once. */
  addRole(username: string, role: string): Promise<boolean>;
  roles(username: string): Promise<string[]>;
  find(username: string): Promise<UserRow | undefined>;
  list(): Promise<UserRow[]>;
}

const ROLE = /^[a-z][a-z0-9-]{0,62}$/;

function toUser(row: UserRow): User {
  return { username: row.username, disabled: row.disabled, createdAtMs: row.createdAtMs, updatedAtMs: row.updatedAtMs };
}

export class UserStore {
  readonly #records: UserRecords;
  readonly #now: () => number;

  constructor(records: UserRecords, now: () => number = Date.now) {
    this.#records = records;
    this.#now = now;
  }

  async add(username: string, password: string): Promise<User> {
    const name = parseUsername(username);
    const weakness = checkPasswordStrength(password);
    if (weakness !== undefined) throw new TwokeyError('ERR_REQUEST_INVALID', `password for ${name} ${weakness}`);
    if ((await this.find(name)) !== undefined) throw new TwokeyError('ERR_REQUEST_INVALID', `user ${name} already exists`);
    const hash = await hashPassword(password);
    // Checked again by the insert: another replica may have added the name while we hashed.
    if (!(await this.#records.insert(name, hash, this.#now()))) throw new TwokeyError('ERR_REQUEST_INVALID', `user ${name} already exists`);
    return (await this.find(name))!;
  }

  async setDisabled(username: string, disabled: boolean): Promise<User> {
    const name = parseUsername(username);
    if (!(await this.#records.setDisabled(name, disabled, this.#now()))) throw new TwokeyError('ERR_REQUEST_INVALID', `no user ${name}`);
    return (await this.find(name))!;
  }

  /** Gives a user a role; what the role grants is the registry's `auth.roles`. */
  async addRole(username: string, role: string): Promise<void> {
    const name = parseUsername(username);
    if (!ROLE.test(role)) throw new TwokeyError('ERR_REQUEST_INVALID', `invalid role ${JSON.stringify(role)} (a lowercase name such as admin)`);
    if (!(await this.#records.addRole(name, role))) throw new TwokeyError('ERR_REQUEST_INVALID', `no user ${name}`);
  }

  roles(username: string): Promise<string[]> {
    return this.#records.roles(username);
  }

  async find(username: string): Promise<User | undefined> {
    const row = await this.#records.find(username);
    return row === undefined ? undefined : toUser(row);
  }

  /** An enabled user, or undefined: the one question token issuance asks. */
  async active(username: string): Promise<User | undefined> {
    const user = await this.find(username);
    return user !== undefined && !user.disabled ? user : undefined;
  }

  async list(): Promise<User[]> {
    return (await this.#records.list()).map(toUser);
  }

  /**
   * The user when the password matches and the account is enabled, else undefined. Unknown users
   * cost one full hash too, so response time does not reveal which usernames exist.
   */
  async authenticate(username: string, password: string): Promise<User | undefined> {
    const row = await this.#records.find(username);
    const ok = await verifyPassword(password, row?.passwordHash ?? UNUSABLE_HASH);
    if (!ok || row === undefined || row.disabled) return undefined;
    return toUser(row);
  }
}
