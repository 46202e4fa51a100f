// A throwaway PostgreSQL server for tests: initdb into a temporary directory as the unprivileged
// postgres user, listening on a free 127.0.0.1 port and a socket inside that directory.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../../scripts/local-mesh/ports.ts';
import { startTestMesh, type TestMesh } from '../e2e/mesh-harness.ts';
import { requireSystem } from '../support/requires.ts';

const DEBIAN_ROOT = '/usr/lib/postgresql';

/** The newest PostgreSQL Debian installed (/usr/lib/postgresql/<major>/bin), whatever its major version. */
export function installedPostgresBin(root = DEBIAN_ROOT): string | undefined {
  let majors: number[];
  try {
    majors = readdirSync(root).filter((d) => /^\d+$/.test(d)).map(Number);
  } catch {
    return undefined;
  }
  const usable = majors.filter((m) => existsSync(join(root, String(m), 'bin', 'postgres'))).sort((a, b) => b - a);
  return usable.length === 0 ? undefined : join(root, String(usable[0]), 'bin');
}

const BIN_DIR = process.env['TWOKEY_PG_BIN'] ?? installedPostgresBin() ?? join(DEBIAN_ROOT, '<none>', 'bin');
const SUPERUSER = 'twokey_test';

/** Why PostgreSQL tests cannot run here, or undefined when they can. */
export function postgresUnavailableReason(): string | undefined {
  if (!existsSync(join(BIN_DIR, 'postgres')) || !existsSync(join(BIN_DIR, 'initdb'))) {
    const where = process.env['TWOKEY_PG_BIN'] !== undefined ? `no ${BIN_DIR}/postgres (TWOKEY_PG_BIN)` : `no ${DEBIAN_ROOT}/<version>/bin/postgres`;
    return `PostgreSQL is not installed (${where}; install Debian's postgresql package or set TWOKEY_PG_BIN)`;
  }
  if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['-u', 'postgres'], { stdio: 'ignore' });
    } catch {
      return 'running as root and there is no unprivileged postgres user to run the server as';
    }
  }
  return undefined;
}

/** Skips the suite with a printed reason when PostgreSQL cannot run (fails it under CI); call from a `before` hook. */
export function skipWithoutPostgres(ctx: Mocha.Context): void {
  requireSystem(ctx, 'postgresql', postgresUnavailableReason());
}

/** The server binaries the tests run (for the log: which version proved the PostgreSQL claims). */
export const POSTGRES_BIN_DIR = BIN_DIR;

export class PostgresServer {
  readonly dir: string;
  readonly port: number;
  readonly password: string;
  #child: ChildProcess | undefined;
  #databases = 0;

  private constructor(dir: string, port: number, password: string) {
    this.dir = dir;
    this.port = port;
    this.password = password;
  }

  static async start(): Promise<PostgresServer> {
    const dir = mkdtempSync(join(tmpdir(), 'twokey-pg-'));
    const password = `pw-${process.pid}-${Date.now().toString(36)}`;
    const server = new PostgresServer(dir, await freePort(), password);
    try {
      writeFileSync(join(dir, 'pwfile'), `${password}\n`, { mode: 0o600 });
      server.#chownToPostgres(dir);
      server.#chownToPostgres(join(dir, 'pwfile'));
      server.#run(join(BIN_DIR, 'initdb'), ['-D', join(dir, 'data'), '-U', SUPERUSER, '--auth=scram-sha-256', `--pwfile=${join(dir, 'pwfile')}`, '-E', 'UTF8', '--no-sync']);
      await server.resume();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  #asPostgres(): boolean {
    return process.getuid?.() === 0;
  }

  #chownToPostgres(path: string): void {
    if (!this.#asPostgres()) return;
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(path, uid, gid);
  }

  #command(bin: string, args: string[]): [string, string[]] {
    // setpriv execs in place (runuser would fork), so signals reach postgres itself.
    return this.#asPostgres() ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', '--', bin, ...args]] : [bin, args];
  }

  #run(bin: string, args: string[]): void {
    const [cmd, argv] = this.#command(bin, args);
    execFileSync(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /** Starts (or restarts after `pause`) the server; resolves once it accepts connections. */
  async resume(): Promise<void> {
    const [cmd, argv] = this.#command(join(BIN_DIR, 'postgres'), [
      '-D', join(this.dir, 'data'),
      '-h', '127.0.0.1',
      '-p', String(this.port),
      '-k', this.dir,
      // A test server: durability of the server itself is not under test, speed on a shared machine is.
      '-c', 'fsync=off',
      '-c', 'max_connections=200',
      '-c', 'log_min_messages=fatal',
    ]);
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    this.#child = child;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`postgres exited during start: ${stderr}`);
      try {
        const c = new pg.Client({ connectionString: this.url('postgres') });
        await c.connect();
        await c.end();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`postgres did not start in 30 s: ${(err as Error).message} ${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Stops the server (fast shutdown: sessions are cut, as in a failover or restart). */
  async pause(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    this.#child = undefined;
  }

  /** A URL with the password in it (for tests; services get it from a file). */
  url(database: string): string {
    return `postgres://${SUPERUSER}:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/${database}`;
  }

  /** The URL without the password, which then comes from `passwordFile`. */
  urlWithoutPassword(database: string): string {
    return `postgres://${SUPERUSER}@127.0.0.1:${this.port}/${database}`;
  }

  get passwordFile(): string {
    return join(this.dir, 'pwfile');
  }

  /** A fresh, empty database; returns its name. */
  async createDatabase(prefix = 'twokey'): Promise<string> {
    const name = `${prefix.replace(/[^a-z0-9_]/g, '_')}_${++this.#databases}`;
    const c = new pg.Client({ connectionString: this.url('postgres') });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return name;
  }

  async stop(): Promise<void> {
    await this.pause();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The example mesh with every service that keeps state on a fresh database `name` of `server` (the
 * password from a file, as in production); `replicas` processes each of auth and image-store.
 */
export async function startMeshOnPostgres(
  server: PostgresServer,
  name: string,
  opts: { replicas?: number; env?: Record<string, string> } = {},
): Promise<{ database: string; mesh: TestMesh }> {
  const database = await server.createDatabase(name);
  const { env, ...rest } = opts;
  const mesh = await startTestMesh({ env: { ...env, TWOKEY_DATABASE_URL: server.urlWithoutPassword(database), TWOKEY_DATABASE_PASSWORD_FILE: server.passwordFile }, ...rest });
  return { database, mesh };
}
