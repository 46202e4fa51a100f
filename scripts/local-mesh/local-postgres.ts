// A PostgreSQL server for the replicated local mesh, from the system's binaries, kept in the state
// directory (so images and users survive a restart), listening on 127.0.0.1 only.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { TwokeyError } from '../../services/authz/errors.ts';

const SUPERUSER = 'twokey';
const DATABASE = 'twokey';

/** The directory holding initdb and postgres: TWOKEY_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin. */
export function findPostgresBin(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const has = (dir: string): boolean => existsSync(join(dir, 'postgres')) && existsSync(join(dir, 'initdb'));
  if (env['TWOKEY_PG_BIN'] !== undefined && env['TWOKEY_PG_BIN'] !== '') return has(env['TWOKEY_PG_BIN']) ? env['TWOKEY_PG_BIN'] : undefined;
  let versions: string[] = [];
  try {
    versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v));
  } catch {
    return undefined;
  }
  return versions
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => `/usr/lib/postgresql/${v}/bin`)
    .find(has);
}

export interface LocalPostgres {
  /** For TWOKEY_DATABASE_URL: no password in it. */
  url: string;
  /** For TWOKEY_DATABASE_PASSWORD_FILE. */
  passwordFile: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * PostgreSQL refuses to run as root: as root it runs as the system's postgres user, which then
 * owns `<stateDir>/postgres` and, to reach it, may traverse (not list) the state directory.
 */
function asPostgres(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    return {
      uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
      gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
    };
  } catch {
    throw new TwokeyError('ERR_CONFIG_INVALID', 'PostgreSQL refuses to run as root, and there is no postgres user to run it as; set TWOKEY_DATABASE_URL instead');
  }
}

function command(bin: string, args: string[], user: { uid: number; gid: number } | undefined): [string, string[]] {
  // setpriv execs in place, so signals reach postgres itself.
  return user === undefined ? [bin, args] : ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', bin, ...args]];
}

/** Starts (initialising on first use) the state directory's PostgreSQL on `port`, with database `twokey`. */
export async function startLocalPostgres(stateRoot: string, port: number, bin: string): Promise<LocalPostgres> {
  const user = asPostgres();
  const dir = join(stateRoot, 'postgres');
  const data = join(dir, 'data');
  const passwordFile = join(dir, 'password');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (user !== undefined) {
    chownSync(stateRoot, 0, user.gid);
    chmodSync(stateRoot, 0o710);
    chownSync(dir, user.uid, user.gid);
  }
  if (!existsSync(passwordFile)) writeFileSync(passwordFile, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  if (user !== undefined) chownSync(passwordFile, user.uid, user.gid);
  const run = (b: string, args: string[]): void => {
    const [cmd, argv] = command(join(bin, b), args, user);
    try {
      execFileSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `${b} failed: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim().slice(0, 500)}`);
    }
  };
  if (!existsSync(join(data, 'PG_VERSION'))) {
    run('initdb', ['-D', data, '-U', SUPERUSER, '--auth=scram-sha-256', `--pwfile=${passwordFile}`, '-E', 'UTF8']);
  } else if (existsSync(join(data, 'postmaster.pid'))) {
    // Left running by an earlier start that was killed: stop it, or this one cannot take the directory.
    try {
      run('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w']);
    } catch {
      // Not running after all (a stale pid file): postgres itself removes it.
    }
  }
  const [cmd, argv] = command(join(bin, 'postgres'), ['-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir, '-c', 'max_connections=200'], user);
  const child: ChildProcess = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const password = readFileSync(passwordFile, 'utf8').trim();
  const admin = `postgres://${SUPERUSER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new TwokeyError('ERR_CONFIG_INVALID', `PostgreSQL in ${data} exited during start: ${stderr.trim().slice(-500)}`);
    try {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        const exists = (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])).rowCount === 1;
        if (!exists) await c.query(`CREATE DATABASE ${DATABASE}`);
      } finally {
        await c.end();
      }
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new TwokeyError('ERR_CONFIG_INVALID', `PostgreSQL in ${data} did not accept connections within 30 s: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  return {
    url: `postgres://${SUPERUSER}@127.0.0.1:${port}/${DATABASE}`,
    passwordFile,
    port,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      // SIGINT: fast shutdown, sessions cut, data checkpointed.
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
