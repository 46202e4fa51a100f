// `twokey users add|disable|enable|unlock|list`: manage the auth service's users in its database.
import { join } from 'node:path';
import { isTwokeyError } from '../authz/errors.ts';
import { postgresConfig } from '../mesh-runtime/database-config.ts';
import { openAuthStorage } from './auth-storage.ts';
import { LoginThrottle } from './login-throttle.ts';
import { disabledSubjectEntry } from './revocation-entries.ts';
import { generatePassword } from './password.ts';
import { UserStore } from './user-store.ts';

export const usage = `Usage: twokey users <add|disable|enable|unlock|list> [options]

  add <username> [--password-stdin] [--role ROLE]
                                      create a user; without --password-stdin a password is
                                      generated and printed once; --role (repeatable) gives
                                      the scopes the registry's auth.roles lists for ROLE
  disable <username>                  refuse the user's logins and new delegated tokens, and
                                      (through the running auth's revocation list) every
                                      token already issued to them, within seconds
  enable <username>                   allow the user again
  unlock <username>                   end a lock from too many failed logins now, instead of
                                      at the end of its window (the source's count stays)
  list                                show users and whether each is enabled

Options:
  --data-dir DIR   the auth service's data directory (default: $TWOKEY_DATA_DIR, else
                   $TWOKEY_STATE_DIR/data/auth, else .twokey/data/auth)

Passwords are never taken from the command line, where other users could read them.
`;

/** Where `npm start` keeps the auth database, unless told otherwise. */
export function defaultAuthDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['TWOKEY_DATA_DIR'] ?? join(env['TWOKEY_STATE_DIR'] ?? '.twokey', 'data', 'auth');
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export async function run(args: string[]): Promise<number> {
  if (args.length === 0 || args.includes('--help') || args.includes('-h')) {
    process.stdout.write(usage);
    return args.length === 0 ? 2 : 0;
  }
  let dataDir = defaultAuthDataDir();
  let passwordStdin = false;
  const roles: string[] = [];
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--data-dir') {
      const value = args[++i];
      if (value === undefined) return fail('--data-dir needs a directory');
      dataDir = value;
    } else if (arg === '--role') {
      const value = args[++i];
      if (value === undefined) return fail('--role needs a role name');
      roles.push(value);
    } else if (arg === '--password-stdin') passwordStdin = true;
    else if (arg.startsWith('-')) return fail(`unknown option ${arg}`);
    else positional.push(arg);
  }
  const [action, username, ...extra] = positional;
  if (extra.length > 0) return fail(`unexpected argument ${JSON.stringify(extra[0])}`);
  // With TWOKEY_DATABASE_URL set, the users are the replicas' shared ones in PostgreSQL.
  const pg = postgresConfig(process.env);
  const storage = await openAuthStorage(pg === undefined ? { dataDir } : { postgres: pg });
  try {
    const users = new UserStore(storage.users);
    if (roles.length > 0 && action !== 'add') return fail('--role goes with add');
    switch (action) {
      case 'add': {
        if (username === undefined) return fail('add needs a username');
        const generated = !passwordStdin;
        const password = generated ? generatePassword() : await readStdin();
        await users.add(username, password);
        for (const role of roles) await users.addRole(username, role);
        process.stdout.write(generated ? `added ${username}; password: ${password}\n` : `added ${username}\n`);
        return 0;
      }
      case 'disable':
      case 'enable': {
        if (username === undefined) return fail(`${action} needs a username`);
        await users.setDisabled(username, action === 'disable');
        // The running auth reads the store on its next heartbeat and pushes the set to the mesh.
        // Enabling does not remove the entry: tokens from before the disabling stay refused, and
        // tokens issued after re-enabling pass (their iat is later).
        if (action === 'disable') {
          await storage.revocations.add(disabledSubjectEntry(username, Math.floor(Date.now() / 1000)));
        }
        process.stdout.write(`${action}d ${username}\n`);
        return 0;
      }
      case 'unlock': {
        if (username === undefined) return fail('unlock needs a username');
        // A typo must not report success: only existing users are unlocked.
        if ((await users.find(username)) === undefined) return fail(`no user ${username}`);
        const cleared = await new LoginThrottle(storage.failures).unlock(username);
        process.stdout.write(cleared > 0 ? `unlocked ${username} (cleared ${cleared} failed logins)\n` : `${username} was not locked (no failed logins recorded)\n`);
        return 0;
      }
      case 'list': {
        if (username !== undefined) return fail('list takes no username');
        for (const user of await users.list()) {
          process.stdout.write(`${user.username.padEnd(24)} ${user.disabled ? 'disabled' : 'enabled '} created ${new Date(user.createdAtMs).toISOString()}\n`);
        }
        return 0;
      }
      default:
        return fail(`unknown action ${JSON.stringify(action)}`);
    }
  } catch (err) {
    if (isTwokeyError(err)) return fail(err.message);
    throw err;
  } finally {
    await storage.close();
  }
}

function fail(message: string): number {
  process.stderr.write(`twokey users: ${message}\n\n${usage}`);
  return 2;
}
