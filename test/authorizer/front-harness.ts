// Real processes for the authorizer's end-to-end tests: auth, `twokey authz serve`, a Python grpcio backend and nginx in front.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { loadRegistry } from '../../certs-ca/registry.ts';
import { openAuthStorage } from '../../services/auth/auth-storage.ts';
import { UserStore } from '../../services/auth/user-store.ts';
import { createMeshClient } from '../../services/authz/client.ts';
import { PROTO_LOADER_OPTIONS } from '../../services/authz/method-catalog.ts';
import { DEFAULT_PROTO_ROOT } from '../../services/authz/method-catalog.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { renderNginxConfig } from '../../services/authorizer/nginx-config.ts';
import { AUTHORIZER_PROTO_ROOT, CHECK_METHOD } from '../../services/authorizer/proxy-admission.ts';
import { checkHealth } from '../../services/authz/health-server.ts';
import { AuthClient, unary } from '../../services/mesh-runtime/protos.ts';
import { freePortSource } from '../../scripts/local-mesh/ports.ts';
import { REPO_ROOT, TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';

export const TD = 'twokey.local';
/** The other-languages overlay's own server and proto, so these tests prove what ships. */
export const NOTES_ROOT = fileURLToPath(new URL('../../deploy/overlays/other-languages', import.meta.url));
export const NOTES_SERVER = join(NOTES_ROOT, 'notes_server.py');
export const PYTHON = '/usr/bin/python3';
/** Debian's nginx; /usr/sbin is not on every user's PATH. */
export const NGINX = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
export const NOTES_ID = `spiffe://${TD}/ns/notes/sa/notes`;
export const CALLER_ID = `spiffe://${TD}/ns/apps/sa/caller`;
export const OTHER_ID = `spiffe://${TD}/ns/apps/sa/other`;
export const AUTHORIZER_ID = `spiffe://${TD}/ns/twokey/sa/authorizer`;
export const GET = '/demo.notes.v1.Notes/Get';
export const DELETE = '/demo.notes.v1.Notes/Delete';

const AUTH_GRANTS = ['/twokey.auth.v1.Auth/GetJwks', '/twokey.auth.v1.Auth/GetRevocations', '/twokey.auth.v1.Auth/WatchRevocations'];

/** The registry of the test mesh: the proxy fronting notes holds the notes identity and may ask the authorizer. */
export const REGISTRY = `trustDomain: ${TD}
grantsOid: 1.3.6.1.4.1.32473.7.1
defaultTtl: 1h
auth:
  userScopes: [notes:read]
  userTokenTtl: 15m
  delegatedTokenTtl: 5m
  serviceTokenTtl: 10m
  maxDelegationDepth: 2
workloads:
  - name: auth
    namespace: twokey
    serviceAccount: auth
    grants: []
  - name: authorizer
    namespace: twokey
    serviceAccount: authorizer
    grants: [${AUTH_GRANTS.join(', ')}]
  - name: notes
    namespace: notes
    serviceAccount: notes
    grants: [${CHECK_METHOD}]
  - name: caller
    namespace: apps
    serviceAccount: caller
    grants: [/twokey.auth.v1.Auth/Login, /twokey.auth.v1.Auth/ExchangeToken, ${GET}]
    delegation:
      scopes: [notes:read]
      audiences: [${NOTES_ID}]
      withoutSubjectToken: true
  - name: other
    namespace: apps
    serviceAccount: other
    grants: [${GET}]
`;

export type NotesClient = grpc.Client & Record<string, (...args: any[]) => any>;
let notesCtor: grpc.ServiceClientConstructor | undefined;
export function notesClientCtor(): grpc.ServiceClientConstructor {
  notesCtor ??= (grpc.loadPackageDefinition(loadSync(join(NOTES_ROOT, 'notes.proto'), { ...PROTO_LOADER_OPTIONS, includeDirs: [NOTES_ROOT, DEFAULT_PROTO_ROOT] })) as any).demo.notes.v1.Notes;
  return notesCtor!;
}

export interface Outcome {
  code: grpc.status;
  details: string;
  res?: { id: string; owner: string; text: string; seen_headers: string };
}

export function callGet(client: grpc.Client, id: string, md = new grpc.Metadata(), timeoutMs = 5000): Promise<Outcome> {
  return new Promise((resolve) => {
    (client as NotesClient)['Get']!({ id }, md, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: any) =>
      resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '', res }),
    );
  });
}

interface Child {
  child: ChildProcess;
  exited: Promise<void>;
}

function startChild(command: string, args: string[], env: Record<string, string>, logFile: string): Child {
  const log = openSync(logFile, 'a', 0o600);
  const child = spawn(command, args, { cwd: REPO_ROOT, env: { ...process.env, ...env, TWOKEY_STOP_WITH_PARENT: '1' }, stdio: ['pipe', log, log] });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, exited };
}

async function stopChild(c: Child | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (c === undefined || c.child.exitCode !== null || c.child.signalCode !== null) return;
  c.child.kill(signal);
  const timer = setTimeout(() => c.child.kill('SIGKILL'), 5000);
  await c.exited;
  clearTimeout(timer);
}

async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Why nginx cannot run here, or undefined. */
export function nginxMissing(): string | undefined {
  const r = spawnSync(NGINX, ['-v'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : `${NGINX} -v failed (${r.error?.message ?? r.stderr.trim()}); install Debian's nginx`;
}

/** Why the Python backend cannot run here, or undefined. */
export function pythonGrpcMissing(): string | undefined {
  const r = spawnSync(PYTHON, ['-c', 'import grpc'], { encoding: 'utf8', timeout: 20_000 });
  return r.status === 0 ? undefined : `${PYTHON} cannot import grpc (${r.error?.message ?? r.stderr.trim().split('\n').pop()}); install Debian's python3-grpcio`;
}

/** nginx -t on a configuration; returns its exit status and output. */
export function nginxTest(confFile: string, runtimeDir: string): { status: number | null; output: string } {
  const r = spawnSync(NGINX, ['-t', '-c', confFile, '-p', runtimeDir, '-e', join(runtimeDir, 'error.log'), '-g', 'daemon off; master_process off;'], { encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

export interface Front {
  root: string;
  ca: CertificateAuthority;
  svidDir(name: string): string;
  ports: { auth: number; authJwks: number; authHealth: number; authzGrpc: number; authzHttp: number; authzHealth: number; backend: number; nginx: number };
  nginxConf: string;
  /** A Notes client through nginx with a workload's certificate (a registry name, or a directory). */
  client(svidDir: string): Promise<grpc.Client>;
  /** A Notes client through nginx with TLS but no client certificate. */
  anonymousClient(): grpc.Client;
  /** A Notes client through nginx presenting this certificate, trusting nginx's. */
  clientWith(certPem: string | undefined, keyPem: string | undefined): grpc.Client;
  login(user: string): Promise<string>;
  /** A delegated token the caller obtains from auth for `user`, audience notes. */
  delegatedFor(user: string): Promise<string>;
  /** How many times the Python backend's handler ran. */
  backendRuns(): number;
  disableUser(user: string): void;
  startAuthorizer(): Promise<void>;
  stopAuthorizer(): Promise<void>;
  authorizerLog(): Record<string, any>[];
  close(): Promise<void>;
}

export async function startFront(): Promise<Front> {
  const root = mkdtempSync(join(tmpdir(), 'twokey-front-'));
  const children: Child[] = [];
  const closers: (() => void)[] = [];
  let authorizer: Child | undefined;
  try {
    const registryPath = join(root, 'registry.yaml');
    writeFileSync(registryPath, REGISTRY);
    const registry = loadRegistry(registryPath);
    const ca = CertificateAuthority.init({ dir: join(root, 'ca'), trustDomain: TD });
    // The proxy's grant names Envoy's Check and the callers' the Python service's methods: the CA
    // is given both proto roots.
    ca.issueRegistry(registry, join(root, 'svid'), { extraProtoRoots: [AUTHORIZER_PROTO_ROOT, NOTES_ROOT] });
    const svidDir = (name: string): string => join(root, 'svid', name);

    const next = freePortSource();
    const ports = {
      auth: await next(), authJwks: await next(), authHealth: await next(),
      authzGrpc: await next(), authzHttp: await next(), authzHealth: await next(),
      backend: await next(), nginx: await next(),
    };
    const authData = join(root, 'data', 'auth');
    mkdirSync(authData, { recursive: true });
    const storage = await openAuthStorage({ dataDir: authData });
    const passwords: Record<string, string> = { alice: 'alice-password-0123', bob: 'bob-password-0123' };
    try {
      const users = new UserStore(storage.users);
      for (const [name, password] of Object.entries(passwords)) await users.add(name, password);
    } finally {
      await storage.close();
    }

    const common = { TWOKEY_REGISTRY: registryPath, TWOKEY_LOG_SYNC: '1', TWOKEY_AUTH_ADDR: `127.0.0.1:${ports.auth}` };
    children.push(
      startChild(process.execPath, [TWOKEY_BIN, 'serve', 'auth'], {
        ...common,
        TWOKEY_SVID_DIR: svidDir('auth'),
        TWOKEY_LISTEN: `127.0.0.1:${ports.auth}`,
        TWOKEY_HEALTH_LISTEN: `127.0.0.1:${ports.authHealth}`,
        TWOKEY_JWKS_HTTPS_LISTEN: `127.0.0.1:${ports.authJwks}`,
        TWOKEY_DATA_DIR: authData,
        // auth reads its store for changes made by another process (`twokey users disable`) at each
        // heartbeat (default 2 s): at 1 s, as in the new-team test, a 2 s bound is not a coin toss.
        TWOKEY_REVOCATION_HEARTBEAT: '1s',
      }, join(root, 'auth.log')),
    );
    await until('auth to serve', 30_000, async () => (await checkHealth(`127.0.0.1:${ports.authHealth}`)) === 'SERVING');

    const authorizerLogFile = join(root, 'authorizer.log');
    const startAuthorizer = async (): Promise<void> => {
      // `twokey authz serve`, as an operator runs it.
      authorizer = startChild(
        process.execPath,
        [TWOKEY_BIN, 'authz', 'serve', '--service', NOTES_ID, '--proto-root', NOTES_ROOT, '--grpc-listen', `127.0.0.1:${ports.authzGrpc}`, '--http-listen', `127.0.0.1:${ports.authzHttp}`],
        { ...common, TWOKEY_SVID_DIR: svidDir('authorizer'), TWOKEY_HEALTH_LISTEN: `127.0.0.1:${ports.authzHealth}` },
        authorizerLogFile,
      );
      await until('the authorizer to serve', 30_000, async () => (await checkHealth(`127.0.0.1:${ports.authzHealth}`)) === 'SERVING');
    };
    await startAuthorizer();

    const countFile = join(root, 'backend-runs');
    writeFileSync(countFile, '');
    children.push(startChild(PYTHON, [NOTES_SERVER, '--port', String(ports.backend), '--count-file', countFile], {}, join(root, 'backend.log')));
    await until('the Python backend', 15_000, async () => readFileSync(join(root, 'backend.log'), 'utf8').includes('notes serving'));

    const runtimeDir = join(root, 'nginx');
    mkdirSync(runtimeDir, { recursive: true });
    const nginxConf = join(runtimeDir, 'nginx.conf');
    writeFileSync(
      nginxConf,
      renderNginxConfig({
        service: NOTES_ID,
        listen: `127.0.0.1:${ports.nginx}`,
        backend: `grpc://127.0.0.1:${ports.backend}`,
        svidDir: svidDir('notes'),
        authorizer: `https://127.0.0.1:${ports.authzHttp}`,
        authorizerName: 'localhost',
        runtimeDir,
      }),
    );
    const tested = nginxTest(nginxConf, runtimeDir);
    if (tested.status !== 0) throw new Error(`nginx -t refused the generated configuration:\n${tested.output}`);
    // One process, no privilege drop: the test owns every file it reads.
    children.push(startChild(NGINX, ['-c', nginxConf, '-p', runtimeDir, '-e', join(runtimeDir, 'error.log'), '-g', 'daemon off; master_process off;'], {}, join(root, 'nginx.log')));
    await until('nginx to listen', 15_000, async () => existsSync(join(runtimeDir, 'nginx.pid')));

    const svids: SvidSource[] = [];
    const clients: grpc.Client[] = [];
    const openSvid = async (dir: string): Promise<SvidSource> => {
      const s = await SvidSource.open(dir, { trustDomain: TD, pollIntervalMs: 0 });
      svids.push(s);
      return s;
    };
    closers.push(() => {
      for (const c of clients) c.close();
      for (const s of svids) s.close();
    });
    const authClient = createMeshClient(AuthClient, `127.0.0.1:${ports.auth}`, { svid: await openSvid(svidDir('caller')), serverId: `spiffe://${TD}/ns/twokey/sa/auth`, propagate: false });
    clients.push(authClient);

    const front: Front = {
      root,
      ca,
      svidDir,
      ports,
      nginxConf,
      async client(dir) {
        const svid = await openSvid(existsSync(dir) ? dir : svidDir(dir));
        // A twokey workload: it checks that nginx presents the notes identity.
        const client = createMeshClient(notesClientCtor() as unknown as grpc.ServiceClientConstructor, `127.0.0.1:${ports.nginx}`, { svid, serverId: NOTES_ID, propagate: false });
        clients.push(client);
        return client;
      },
      anonymousClient() {
        return front.clientWith(undefined, undefined);
      },
      clientWith(certPem, keyPem) {
        const bundle = readFileSync(join(svidDir('caller'), 'bundle.pem'));
        const creds = certPem === undefined ? grpc.credentials.createSsl(bundle) : grpc.credentials.createSsl(bundle, Buffer.from(keyPem!), Buffer.from(certPem));
        const client = new (notesClientCtor())(`127.0.0.1:${ports.nginx}`, creds, { 'grpc.ssl_target_name_override': 'localhost' });
        clients.push(client);
        return client;
      },
      async login(user) {
        return (await unary<{ access_token: string }>(authClient, 'Login', { username: user, password: passwords[user] })).access_token;
      },
      async delegatedFor(user) {
        return (await unary<{ access_token: string }>(authClient, 'ExchangeToken', { subject_user: user, scope: 'notes:read', audience: NOTES_ID })).access_token;
      },
      backendRuns: () => readFileSync(countFile, 'utf8').split('\n').filter(Boolean).length,
      disableUser(user) {
        const r = spawnSync(process.execPath, [TWOKEY_BIN, 'users', 'disable', user, '--data-dir', authData], { cwd: REPO_ROOT, encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`twokey users disable ${user}: ${r.stderr}`);
      },
      startAuthorizer,
      stopAuthorizer: () => stopChild(authorizer),
      authorizerLog: () => readFileSync(authorizerLogFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)),
      async close() {
        for (const c of closers.splice(0)) c();
        await stopChild(authorizer);
        await Promise.all(children.splice(0).reverse().map((c) => stopChild(c)));
        rmSync(root, { recursive: true, force: true });
      },
    };
    return front;
  } catch (err) {
    for (const c of closers.splice(0)) c();
    await stopChild(authorizer);
    await Promise.all(children.map((c) => stopChild(c)));
    process.stderr.write(`front setup failed; logs kept in ${root}\n`);
    throw err;
  }
}
