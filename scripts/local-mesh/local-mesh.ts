// A whole example mesh on loopback from one state directory: CA, workload certificates, gateway
// TLS, databases, dev users, five service processes. `npm start` and the end-to-end tests both
// start the mesh through this module, so the tests exercise exactly what users run.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CertificateAuthority } from '../../certs-ca/certificate-authority.ts';
import { loadRegistry, type Registry } from '../../certs-ca/registry.ts';
import { openAuthStorage } from '../../services/auth/auth-storage.ts';
import { generatePassword } from '../../services/auth/password.ts';
import { UserStore } from '../../services/auth/user-store.ts';
import { TwokeyError } from '../../services/authz/errors.ts';
import { postgresConfig } from '../../services/mesh-runtime/database-config.ts';
import { checkHealth } from '../../services/authz/health-server.ts';
import { GATEWAY_PROCESS_ENV } from '../../services/gateway/gateway-limits.ts';
import { assignPorts, freePortSource, SERVED_SERVICES, SERVICE_NAMES, type MeshPorts, type ServiceName } from './ports.ts';
import { ensurePublicTls } from './public-tls.ts';
import { findPostgresBin, startLocalPostgres, type LocalPostgres } from './local-postgres.ts';
import { lockStateDir } from './state-lock.ts';
import { REPO_ROOT, Supervisor } from './supervisor.ts';

export const DEV_USERS = ['alice', 'bob'] as const;
/** The local mesh's administrator: the one user the console (`twokey console`) admits. */
export const DEV_ADMIN = 'admin';

export interface LocalMeshOptions {
  stateDir: string;
  /** Default: deploy/registry.yaml. */
  registryPath?: string;
  portBase?: number | undefined;
  /** How often the cleaner sweeps; default 10s. */
  cleanerInterval?: string;
  logLevel?: string;
  /** Extra environment for every service. */
  env?: Record<string, string>;
  healthTimeoutMs?: number;
  /**
   * Processes of each of auth and image-store (default 1). Above 1 they must share PostgreSQL
   * (TWOKEY_DATABASE_URL in `env`, or `localPostgres`), and every caller dials all of them (see replicaTarget).
   */
  replicas?: number;
  /**
   * Without TWOKEY_DATABASE_URL in `env`, run PostgreSQL from the system's binaries in
   * `<stateDir>/postgres` for the mesh (stopped with it). Fails when none is installed.
   */
  localPostgres?: boolean;
}

/** The services `replicas` multiplies: the ones whose state is all in the shared database. */
export const REPLICATED_SERVICES = ['auth', 'image-store'] as const;
export type ReplicatedService = (typeof REPLICATED_SERVICES)[number];
export const MAX_REPLICAS = 4;

/** One process of a replicated service. */
export interface ReplicaEndpoint {
  /** The process name: the service's own for the first, `<service>-2` and on for the others. */
  name: string;
  address: string;
  health: string;
}

export interface ServiceEndpoint {
  name: string;
  spiffeId: string;
  grants: string[];
  /** The gRPC services it serves on the mesh. */
  serves: string[];
  /**
   * The mesh (mTLS) address; absent for services that only call out. With several replicas, a
   * gRPC target naming all of them (`ipv4:127.0.0.1:p1,127.0.0.1:p2`), so clients spread over them.
   */
  address?: string;
  health: string;
  /** Each process, when the service runs replicated. */
  replicas?: ReplicaEndpoint[];
}

export interface Endpoints {
  trustDomain: string;
  trustBundle: string;
  svidRoot: string;
  services: Record<string, ServiceEndpoint>;
  gateway: { address: string; caFile: string };
  jwks: { url: string; caFile: string };
  logs: Record<string, string>;
}

export interface StateLayout {
  root: string;
  caDir: string;
  svidRoot: string;
  gatewayTlsDir: string;
  dataDir: (service: string) => string;
  logFile: (service: string) => string;
  usersFile: string;
  endpointsFile: string;
}

export function stateLayout(stateDir: string): StateLayout {
  const root = resolve(stateDir);
  return {
    root,
    caDir: join(root, 'ca'),
    svidRoot: join(root, 'svid'),
    gatewayTlsDir: join(root, 'gateway-tls'),
    dataDir: (service) => join(root, 'data', service),
    logFile: (service) => join(root, 'logs', `${service}.log`),
    usersFile: join(root, 'users.json'),
    endpointsFile: join(root, 'endpoints.json'),
  };
}

export const DEFAULT_REGISTRY = join(REPO_ROOT, 'deploy', 'registry.yaml');

function writePrivateJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/**
 * Creates alice, bob and the admin with generated passwords on first start; later starts reuse
 * users.json (adding the admin to a state directory made before the console existed). A database
 * that lacks users users.json lists (the first start on PostgreSQL after ones on SQLite) gets them
 * with the passwords written there.
 */
export async function ensureDevUsers(layout: StateLayout, env: Record<string, string> = {}): Promise<Record<string, string>> {
  const known = existsSync(layout.usersFile) ? (JSON.parse(readFileSync(layout.usersFile, 'utf8')) as Record<string, string>) : undefined;
  if (known !== undefined) chmodSync(layout.usersFile, 0o600);
  const wanted = [...(known === undefined ? DEV_USERS : []), ...(known?.[DEV_ADMIN] === undefined ? [DEV_ADMIN] : [])];
  // With TWOKEY_DATABASE_URL the services share PostgreSQL: the users go there.
  const pg = postgresConfig(env);
  const storage = await openAuthStorage(pg === undefined ? { dataDir: layout.dataDir('auth') } : { postgres: pg });
  try {
    const store = new UserStore(storage.users);
    const existing: string[] = [];
    for (const u of wanted) if ((await store.find(u)) !== undefined) existing.push(u);
    if (existing.length > 0) {
      throw new TwokeyError(
        'ERR_CONFIG_INVALID',
        `${layout.usersFile} does not list ${existing.join(', ')}, who already exist; reset a password with 'twokey users' or remove ${layout.root}`,
      );
    }
    for (const [user, password] of Object.entries(known ?? {})) {
      if ((await store.find(user)) !== undefined) continue;
      await store.add(user, password);
      if (user === DEV_ADMIN) await store.addRole(user, 'admin');
    }
    if (wanted.length === 0) return known!;
    const passwords: Record<string, string> = { ...known };
    for (const user of wanted) {
      passwords[user] = generatePassword();
      await store.add(user, passwords[user]);
      if (user === DEV_ADMIN) await store.addRole(user, 'admin');
    }
    writePrivateJson(layout.usersFile, passwords);
    return passwords;
  } finally {
    await storage.close();
  }
}

/** Opens the state's CA, creating it on first start, and (re)issues every workload certificate. */
export function issueCertificates(layout: StateLayout, registry: Registry): CertificateAuthority {
  const ca = existsSync(join(layout.caDir, 'config.json'))
    ? CertificateAuthority.open(layout.caDir)
    : CertificateAuthority.init({ dir: layout.caDir, trustDomain: registry.trustDomain });
  // Short-lived certificates: fresh ones on every start, so a stopped mesh never resumes with stale ones.
  ca.issueRegistry(registry, layout.svidRoot);
  return ca;
}

/** Ports of the second and later processes of a replicated service. */
interface ReplicaPorts {
  mesh: number;
  health: number;
  jwks: number;
}

/**
 * A gRPC target naming every process of a service: one loopback address is host:port, several are
 * gRPC's static list `ipv4:a:p,b:q`. Loopback has no name resolving to several addresses (that
 * is what a Kubernetes headless Service gives), so the list stands in for it; it is fixed, where
 * DNS would be asked again as pods come and go.
 */
export function replicaTarget(ports: readonly number[]): string {
  const addresses = ports.map((p) => `127.0.0.1:${p}`);
  return addresses.length === 1 ? addresses[0]! : `ipv4:${addresses.join(',')}`;
}

function serviceEnv(
  name: ServiceName,
  layout: StateLayout,
  ports: MeshPorts,
  registryPath: string,
  opts: LocalMeshOptions,
  extra: Readonly<Record<ReplicatedService, readonly ReplicaPorts[]>> = { auth: [], 'image-store': [] },
): Record<string, string> {
  const local = (port: number): string => `127.0.0.1:${port}`;
  const env: Record<string, string> = {
    TWOKEY_SVID_DIR: join(layout.svidRoot, name),
    TWOKEY_REGISTRY: registryPath,
    TWOKEY_HEALTH_LISTEN: local(ports.health[name]!),
    TWOKEY_LOG_LEVEL: opts.logLevel ?? 'info',
    TWOKEY_AUTH_ADDR: replicaTarget([ports.authMesh, ...extra.auth.map((r) => r.mesh)]),
    TWOKEY_IMAGE_STORE_ADDR: replicaTarget([ports.imageStoreMesh, ...extra['image-store'].map((r) => r.mesh)]),
    TWOKEY_TAGGING_ADDR: local(ports.taggingMesh),
    // Locally, each decision line reaches its log file before the call is answered, so the demo
    // and the end-to-end tests can read the line of a call as soon as the call returns.
    TWOKEY_LOG_SYNC: '1',
    ...opts.env,
  };
  switch (name) {
    case 'auth':
      Object.assign(env, { TWOKEY_LISTEN: local(ports.authMesh), TWOKEY_JWKS_HTTPS_LISTEN: local(ports.authJwks), TWOKEY_DATA_DIR: layout.dataDir('auth') });
      break;
    case 'image-store':
      Object.assign(env, { TWOKEY_LISTEN: local(ports.imageStoreMesh), TWOKEY_DATA_DIR: layout.dataDir('image-store') });
      break;
    case 'tagging':
      Object.assign(env, { TWOKEY_LISTEN: local(ports.taggingMesh), TWOKEY_DATA_DIR: layout.dataDir('tagging') });
      break;
    case 'gateway':
      Object.assign(env, { TWOKEY_PUBLIC_LISTEN: local(ports.gatewayPublic), TWOKEY_PUBLIC_TLS_DIR: layout.gatewayTlsDir });
      for (const [key, value] of Object.entries(GATEWAY_PROCESS_ENV)) env[key] ??= value;
      break;
    case 'cleaner':
      env['TWOKEY_CLEANER_INTERVAL'] = opts.cleanerInterval ?? '10s';
      break;
  }
  return env;
}

export class LocalMesh {
  readonly layout: StateLayout;
  readonly endpoints: Endpoints;
  readonly users: Record<string, string>;
  readonly #supervisor: Supervisor;
  readonly #healthTimeoutMs: number;
  readonly #unlock: () => void;
  readonly #envOf: (name: ServiceName) => Record<string, string>;
  /** The health address of every process, by process name (services and replicas). */
  readonly #health = new Map<string, string>();
  #replicas = 0;

  constructor(
    layout: StateLayout,
    endpoints: Endpoints,
    users: Record<string, string>,
    supervisor: Supervisor,
    healthTimeoutMs: number,
    unlock: () => void,
    envOf: (name: ServiceName) => Record<string, string>,
  ) {
    this.#envOf = envOf;
    for (const s of Object.values(endpoints.services)) {
      this.#health.set(s.name, s.health);
      for (const r of s.replicas ?? []) this.#health.set(r.name, r.health);
    }
    this.layout = layout;
    this.endpoints = endpoints;
    this.users = users;
    this.#supervisor = supervisor;
    this.#healthTimeoutMs = healthTimeoutMs;
    this.#unlock = unlock;
  }

  set onUnexpectedExit(fn: (name: string, code: number | null, signal: NodeJS.Signals | null) => void) {
    this.#supervisor.onUnexpectedExit = fn;
  }

  /** The process id of a service or of a replica (its id from startReplica), while it runs. */
  pid(name: string): number | undefined {
    return this.#supervisor.pid(name);
  }

  /** The processes of `service`, by name: its own, and `<service>-2` and on when replicated. */
  processesOf(service: ServiceName): string[] {
    const s = this.endpoints.services[service]!;
    return s.replicas === undefined ? [s.name] : s.replicas.map((r) => r.name);
  }

  /** Waits until the process's health endpoint reports SERVING; throws after the timeout. */
  async waitHealthy(name: string): Promise<void> {
    const address = this.#health.get(name);
    if (address === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `no process ${name} in this mesh`);
    const deadline = Date.now() + this.#healthTimeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      if (!this.#supervisor.isRunning(name)) {
        throw new TwokeyError('ERR_CONFIG_INVALID', `${name} exited during startup; see ${this.layout.logFile(name)}`);
      }
      try {
        last = await checkHealth(address, '', 1000);
        if (last === 'SERVING') return;
      } catch (err) {
        last = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new TwokeyError('ERR_CONFIG_INVALID', `${name} not healthy after ${this.#healthTimeoutMs} ms (${last}); see ${this.layout.logFile(name)}`);
  }

  /** Starts a service, or one process of a replicated one, and waits until it is healthy. */
  async start(name: string): Promise<void> {
    this.#supervisor.start(name);
    await this.waitHealthy(name);
  }

  /** SIGKILL, as a crash would: nothing is flushed or closed. */
  async kill(name: string): Promise<void> {
    await this.#supervisor.kill(name);
  }

  /** SIGTERM (a clean stop) to a service or a replica (its id from startReplica). */
  async stopService(name: string): Promise<void> {
    await this.#supervisor.stop(name);
  }

  /**
   * Starts another process of `name` on fresh loopback ports with the first one's environment
   * (meaningful with TWOKEY_DATABASE_URL: the replicas share PostgreSQL); resolves once it is
   * healthy. The rest of the mesh keeps calling the first one; callers reach the replica at `address`.
   */
  async startReplica(name: 'auth' | 'image-store' | 'tagging'): Promise<{ id: string; address: string; health: string }> {
    const id = `${name}-r${++this.#replicas}`;
    const nextPort = freePortSource();
    const [meshPort, healthPort, jwksPort] = [await nextPort(), await nextPort(), await nextPort()];
    const env: Record<string, string> = { ...this.#envOf(name), TWOKEY_LISTEN: `127.0.0.1:${meshPort}`, TWOKEY_HEALTH_LISTEN: `127.0.0.1:${healthPort}` };
    if (name === 'auth') env['TWOKEY_JWKS_HTTPS_LISTEN'] = `127.0.0.1:${jwksPort}`;
    this.#supervisor.add({ name: id, service: name, env, logFile: this.layout.logFile(id) });
    this.#supervisor.start(id);
    const health = `127.0.0.1:${healthPort}`;
    const deadline = Date.now() + this.#healthTimeoutMs;
    while ((await checkHealth(health, '', 1000).catch(() => 'down')) !== 'SERVING') {
      if (!this.#supervisor.isRunning(id) || Date.now() > deadline) throw new TwokeyError('ERR_CONFIG_INVALID', `${id} did not become healthy; see ${this.layout.logFile(id)}`);
      await new Promise((r) => setTimeout(r, 150));
    }
    return { id, address: `127.0.0.1:${meshPort}`, health };
  }

  /** SIGKILL of a replica started by startReplica. */
  async killReplica(id: string): Promise<void> {
    await this.#supervisor.kill(id);
  }

  readonly #afterStop: (() => Promise<void>)[] = [];

  /** Runs `fn` once every service has stopped (the local PostgreSQL stops after its clients). */
  onStopped(fn: () => Promise<void>): void {
    this.#afterStop.push(fn);
  }

  /** The database URL the services share, when they share one (no password in it). */
  get databaseUrl(): string | undefined {
    return this.#envOf('auth')['TWOKEY_DATABASE_URL'];
  }

  /** Stops every service and releases the state directory. */
  async stop(): Promise<void> {
    await this.#supervisor.stopAll();
    for (const fn of this.#afterStop.splice(0)) await fn();
    this.#unlock();
  }
}

/** Prepares the state directory and starts all five services, returning once each is healthy. */
export async function startLocalMesh(opts: LocalMeshOptions): Promise<LocalMesh> {
  const layout = stateLayout(opts.stateDir);
  mkdirSync(layout.root, { recursive: true, mode: 0o700 });
  mkdirSync(join(layout.root, 'logs'), { recursive: true, mode: 0o700 });
  const unlock = lockStateDir(layout.root);
  try {
    return await startLocked(layout, opts, unlock);
  } catch (err) {
    unlock();
    throw err;
  }
}

/** Ports for the second and later processes of each replicated service (base+20 and up with a port base). */
async function replicaPorts(base: number | undefined, replicas: number, next: () => Promise<number>): Promise<Record<ReplicatedService, ReplicaPorts[]>> {
  const out: Record<ReplicatedService, ReplicaPorts[]> = { auth: [], 'image-store': [] };
  for (let r = 2; r <= replicas; r++) {
    for (const [i, service] of REPLICATED_SERVICES.entries()) {
      if (base !== undefined) {
        const first = base + 20 + (r - 2) * 10 + i * 5;
        if (first + 2 > 65535) throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_PORT_BASE ${base} leaves no room for ${replicas} replicas`);
        out[service].push({ mesh: first, health: first + 1, jwks: first + 2 });
      } else {
        out[service].push({ mesh: await next(), health: await next(), jwks: await next() });
      }
    }
  }
  return out;
}

export function checkReplicas(replicas: number, env: Record<string, string> = {}): number {
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `replicas must be a whole number from 1 to ${MAX_REPLICAS}, not ${replicas}`);
  }
  if (replicas > 1 && postgresConfig(env) === undefined) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${replicas} replicas of auth and image-store must share one database: set TWOKEY_DATABASE_URL (PostgreSQL)`);
  }
  return replicas;
}

async function startLocked(layout: StateLayout, given: LocalMeshOptions, unlock: () => void): Promise<LocalMesh> {
  const nextPort = freePortSource();
  let opts = given;
  let database: LocalPostgres | undefined;
  if (opts.localPostgres === true && postgresConfig(opts.env ?? {}) === undefined) {
    const bin = findPostgresBin();
    if (bin === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', 'no PostgreSQL binaries in /usr/lib/postgresql/*/bin (or TWOKEY_PG_BIN): install PostgreSQL or set TWOKEY_DATABASE_URL');
    database = await startLocalPostgres(layout.root, opts.portBase === undefined ? await nextPort() : opts.portBase + 6, bin);
    opts = { ...opts, env: { ...opts.env, TWOKEY_DATABASE_URL: database.url, TWOKEY_DATABASE_PASSWORD_FILE: database.passwordFile } };
  }
  try {
    const mesh = await startServices(layout, opts, unlock, nextPort);
    if (database !== undefined) mesh.onStopped(() => database.stop());
    return mesh;
  } catch (err) {
    await database?.stop();
    throw err;
  }
}

async function startServices(layout: StateLayout, opts: LocalMeshOptions, unlock: () => void, nextPort: () => Promise<number>): Promise<LocalMesh> {
  const registryPath = resolve(opts.registryPath ?? DEFAULT_REGISTRY);
  const replicas = checkReplicas(opts.replicas ?? 1, opts.env);
  const registry = loadRegistry(registryPath);
  const ca = issueCertificates(layout, registry);
  const gatewayTls = ensurePublicTls(layout.gatewayTlsDir);
  const users = await ensureDevUsers(layout, opts.env);
  const ports = await assignPorts(opts.portBase, nextPort);
  const extra = await replicaPorts(opts.portBase, replicas, nextPort);
  const local = (port: number): string => `127.0.0.1:${port}`;

  const meshAddress: Partial<Record<ServiceName, number>> = { auth: ports.authMesh, 'image-store': ports.imageStoreMesh, tagging: ports.taggingMesh };
  const services: Record<string, ServiceEndpoint> = {};
  for (const name of SERVICE_NAMES) {
    const workload = registry.workloads.find((w) => w.name === name);
    if (workload === undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `the registry ${registryPath} has no workload named ${name}`);
    const port = meshAddress[name];
    const more = (extra as Partial<Record<ServiceName, ReplicaPorts[]>>)[name] ?? [];
    services[name] = {
      name,
      spiffeId: workload.spiffeId.toString(),
      grants: workload.grants.toStrings(),
      serves: [...SERVED_SERVICES[name]],
      ...(port === undefined ? {} : { address: replicaTarget([port, ...more.map((r) => r.mesh)]) }),
      health: local(ports.health[name]!),
      ...(more.length === 0 || port === undefined
        ? {}
        : {
            replicas: [
              { name, address: local(port), health: local(ports.health[name]!) },
              ...more.map((r, i) => ({ name: `${name}-${i + 2}`, address: local(r.mesh), health: local(r.health) })),
            ],
          }),
    };
  }
  const endpoints: Endpoints = {
    trustDomain: registry.trustDomain,
    trustBundle: join(ca.dir, 'ca.pem'),
    svidRoot: layout.svidRoot,
    services,
    gateway: { address: `localhost:${ports.gatewayPublic}`, caFile: gatewayTls.caFile },
    jwks: { url: `https://127.0.0.1:${ports.authJwks}/.well-known/jwks.json`, caFile: join(ca.dir, 'ca.pem') },
    logs: Object.fromEntries(Object.values(services).flatMap((s) => (s.replicas ?? [s]).map((p) => [p.name, layout.logFile(p.name)]))),
  };

  const envOf = (name: ServiceName): Record<string, string> => serviceEnv(name, layout, ports, registryPath, opts, extra);
  const supervisor = new Supervisor();
  for (const name of SERVICE_NAMES) supervisor.add({ name, env: envOf(name), logFile: layout.logFile(name) });
  for (const service of REPLICATED_SERVICES) {
    extra[service].forEach((r, i) => {
      const name = `${service}-${i + 2}`;
      const env: Record<string, string> = { ...envOf(service), TWOKEY_LISTEN: local(r.mesh), TWOKEY_HEALTH_LISTEN: local(r.health) };
      if (service === 'auth') env['TWOKEY_JWKS_HTTPS_LISTEN'] = local(r.jwks);
      supervisor.add({ name, service, env, logFile: layout.logFile(name) });
    });
  }
  const mesh = new LocalMesh(layout, endpoints, users, supervisor, opts.healthTimeoutMs ?? 30_000, unlock, envOf);
  try {
    // In dependency order: everyone fetches keys from auth; tagging and cleaner work on the store.
    await Promise.all(mesh.processesOf('auth').map((n) => mesh.start(n)));
    await Promise.all(mesh.processesOf('image-store').map((n) => mesh.start(n)));
    await Promise.all((['tagging', 'gateway', 'cleaner'] as const).map((n) => mesh.start(n)));
  } catch (err) {
    await mesh.stop();
    throw err;
  }
  writeFileSync(layout.endpointsFile, `${JSON.stringify(endpoints, null, 2)}\n`, { mode: 0o644 });
  return mesh;
}
