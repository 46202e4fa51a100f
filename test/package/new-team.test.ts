// A new team's whole path, as docs/adopting.md tells it, with the packed package installed into an
// empty ESM project outside this repository: the CA, `twokey serve auth` for the team's own
// registry, a development token from `twokey token login`, and the page's own server.js and
// client.js (extracted from the page, so the page cannot drift), each run as a real process.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Metadata, makeClientConstructor, status, type ServiceError } from '@grpc/grpc-js';
import { expect } from 'chai';
import { createMeshClient } from '../../services/authz/client.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';
import { ENV_VARIABLES } from '../../services/mesh-runtime/serve-command.ts';
import { installedPackage, type InstalledPackage } from './installed-package.ts';

const PAGE = join(PACKAGE_ROOT, 'docs', 'adopting.md');
/** The issue's bound on the code a team writes to reach its first allowed call. */
const MAX_OWN_LINES = 60;
const NOTES = 'acme.notes.v1.Notes';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function node(args: string[], cwd: string, options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, args, { cwd, timeout: options.timeoutMs ?? 60_000, env: { ...process.env, ...options.env } }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0, stdout, stderr }));
    child.stdin!.end(options.input ?? '');
  });
}

/** A long-running child whose stdout JSON lines are kept, to wait for and to search. */
class Service {
  readonly child: ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  stderr = '';
  readonly #waiters = new Set<() => void>();

  constructor(args: string[], cwd: string, env: Record<string, string>) {
    this.child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        this.lines.push({ text: line });
      }
      for (const w of this.#waiters) w();
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.child.once('exit', () => {
      for (const w of this.#waiters) w();
    });
  }

  /** The first line `match` accepts, waiting up to `ms`; rejects naming what the process printed. */
  line(match: (l: Record<string, unknown>) => boolean, ms = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const found = this.lines.find(match);
        if (found !== undefined) {
          done();
          resolve(found);
          return true;
        }
        if (this.child.exitCode !== null) {
          done();
          reject(new Error(`process exited ${this.child.exitCode}: ${this.stderr}\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no such line within ${ms} ms: ${this.stderr}\n${this.lines.map((l) => JSON.stringify(l)).join('\n')}`));
      }, ms);
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      const waiter = (): void => void check();
      if (!check()) this.#waiters.add(waiter);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const force = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(force);
  }
}

describe('a new team joins the mesh following docs/adopting.md (installed package, real processes)', function () {
  this.timeout(300_000);
  let pkg: InstalledPackage;
  let dir: string;
  let bin: string;
  let auth: Service;
  let notes: Service;
  let authPort: number;
  let jwksPort: number;
  let notesAddress: string;
  let webSvid: SvidSource;
  let Notes: ReturnType<typeof makeClientConstructor>;
  const tokens: Record<string, string> = {};
  const twokey = (args: string[], input?: string) => node([bin, ...args], dir, input === undefined ? {} : { input });

  before(async () => {
    pkg = await installedPackage();
    dir = pkg.project;
    bin = join(dir, 'node_modules', 'twokey', 'dist', 'scripts', 'twokey.js');
    // A member whose entry lacks auth's grants, for the failing start (the page's registry, plus it).
    appendFileSync(join(dir, 'registry.yaml'), '  - name: notes-blind\n    namespace: acme\n    serviceAccount: notes-blind\n    grants: []\n');
    for (const args of [
      ['ca', 'init', '--dir', '.pki/ca', '--trust-domain', 'acme.test'],
      // No --proto-root: the registry's protoRoots name the team's protos.
      ['ca', 'issue', '--dir', '.pki/ca', '--registry', 'registry.yaml', '--out', '.pki/mesh'],
    ]) {
      const r = await twokey(args);
      expect(r.code, `twokey ${args.join(' ')}: ${r.stderr}`).to.equal(0);
    }
    for (const [user, password] of [['alice', 'alice-password-1'], ['bob', 'bob-password-123']] as const) {
      const r = await twokey(['users', 'add', user, '--password-stdin', '--data-dir', '.data/auth'], `${password}\n`);
      expect(r.code, r.stderr).to.equal(0);
    }
    auth = new Service([bin, 'serve', 'auth'], dir, {
      TWOKEY_LISTEN: '127.0.0.1:0',
      TWOKEY_HEALTH_LISTEN: '127.0.0.1:0',
      TWOKEY_JWKS_HTTPS_LISTEN: '127.0.0.1:0',
      TWOKEY_SVID_DIR: '.pki/mesh/auth',
      TWOKEY_REGISTRY: 'registry.yaml',
      TWOKEY_DATA_DIR: '.data/auth',
      // `users disable` reaches the running auth on its next heartbeat (default 2 s): 1 s keeps
      // the 2 s bound below about the mesh, not about when the heartbeat happens to fall.
      TWOKEY_REVOCATION_HEARTBEAT: '1s',
      TWOKEY_STOP_WITH_PARENT: '1',
    });
    const serving = await auth.line((l) => l['event'] === 'service.serving');
    authPort = serving['mesh_port'] as number;
    jwksPort = serving['jwks_https_port'] as number;
    for (const [user, password] of [['alice', 'alice-password-1'], ['bob', 'bob-password-123']] as const) {
      const r = await twokey(['token', 'login', '--user', user, '--password-stdin', '--svid-dir', '.pki/mesh/dev-login', '--registry', 'registry.yaml', '--auth', `127.0.0.1:${authPort}`], `${password}\n`);
      expect(r.code, r.stderr).to.equal(0);
      tokens[user] = r.stdout.trim();
      writeFileSync(join(dir, `${user}.jwt`), r.stdout);
    }
    notes = new Service(['server.js'], dir, { AUTH_ADDRESS: `127.0.0.1:${authPort}`, LISTEN: '127.0.0.1:0' });
    notesAddress = `127.0.0.1:${(await notes.line((l) => l['event'] === 'service.serving'))['mesh_port']}`;
    webSvid = await SvidSource.open(join(dir, '.pki/mesh/web'), { trustDomain: 'acme.test' });
    Notes = makeClientConstructor(MethodCatalog.load({ roots: [join(dir, 'proto')] }).definition[NOTES] as never, NOTES);
  });

  after(async () => {
    webSvid?.close();
    await notes?.stop();
    await auth?.stop();
  });

  /** One call as the web workload (or `svid`), with `token`; the error or the response. */
  function call(method: 'GetNote' | 'DeleteNote', id: string, token: string, svid = webSvid): Promise<ServiceError | Record<string, string>> {
    const client = createMeshClient(Notes, notesAddress, { svid, serverId: 'spiffe://acme.test/ns/acme/sa/notes' }) as unknown as Record<string, Function> & { close(): void };
    const metadata = new Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    return new Promise((resolve) =>
      client[method]!({ id }, metadata, { deadline: Date.now() + 5000 }, (err: ServiceError | null, res: Record<string, string>) => {
        client.close();
        resolve(err ?? res);
      }));
  }

  it(`takes every file from the page, and the team's own code to a first allowed call is at most ${MAX_OWN_LINES} lines`, () => {
    expect([...pkg.example.keys()].sort()).to.deep.equal(['client.js', 'notes.js', 'notes.test.js', 'proto/acme/notes/v1/notes.proto', 'registry.yaml', 'server.js']);
    for (const [path, text] of pkg.example) {
      if (path.endsWith('.js')) expect(text, path).to.not.match(/from '\.\.?\/(services|certs-ca)\//);
    }
    const own = ['notes.js', 'server.js', 'client.js'].map((f) => pkg.example.get(f)!.trimEnd().split('\n').length);
    const total = own.reduce((a, b) => a + b, 0);
    console.log(`      own code: notes.js ${own[0]} + server.js ${own[1]} + client.js ${own[2]} = ${total} lines; proto ${pkg.example.get('proto/acme/notes/v1/notes.proto')!.trimEnd().split('\n').length}, registry ${readFileSync(PAGE, 'utf8').match(/```yaml\n# registry\.yaml\n[\s\S]*?```/)![0].split('\n').length - 2}`);
    expect(total).to.be.at.most(MAX_OWN_LINES);
    // The page's table of what a team writes counts the lines of its own files.
    for (const [path, text] of pkg.example) {
      expect(readFileSync(PAGE, 'utf8'), `the line count of ${path}`).to.contain(`| \`${path}\` | ${text.trimEnd().split('\n').length} |`);
    }
    // The commands this test runs are the page's.
    const page = readFileSync(PAGE, 'utf8');
    for (const command of [
      'npx twokey ca issue --dir .pki/ca --registry registry.yaml --out .pki/mesh',
      'npx twokey serve auth',
      'npx twokey token login --user alice --password-stdin',
      'npx twokey users disable alice --data-dir .data/auth',
    ]) expect(page).to.contain(command);
  });

  it('runs auth standalone: --help lists every variable with its default (docs/auth-service.md too), the issuer follows the trust domain', async () => {
    const help = await twokey(['serve', 'auth', '--help']);
    expect(help.code).to.equal(0);
    const authVariables = ENV_VARIABLES.filter((v) => v.services === undefined || v.services.includes('auth'));
    expect(authVariables.length).to.be.above(10);
    for (const v of authVariables) expect(help.stdout).to.contain(`  ${v.name}\n      ${v.meaning}\n      default: ${v.default}`);
    expect(help.stdout).to.contain("default: TWOKEY_LISTEN's host, port 8444");
    // docs/auth-service.md documents the same table.
    const doc = readFileSync(join(PACKAGE_ROOT, 'docs', 'auth-service.md'), 'utf8');
    for (const v of authVariables) expect(doc).to.contain(`| \`${v.name}\` | ${v.meaning} | ${v.default} |`);
    const discovery = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: jwksPort, path: '/.well-known/openid-configuration', ca: readFileSync(join(dir, '.pki/mesh/web/bundle.pem')), servername: 'localhost' }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    });
    expect(JSON.parse(discovery).issuer).to.equal('https://auth.acme.test');
  });

  it("allows alice's note to the web workload with the token from `twokey token login`, through the page's client.js", async () => {
    const r = await node(['client.js', 'n1'], dir, { env: { NOTES_ADDRESS: notesAddress }, input: tokens['alice'] });
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.equal({ id: 'n1', owner: 'alice', text: 'buy milk' });
  });

  it('refuses a method the caller is not granted: PERMISSION_DENIED at the grant check', async () => {
    const err = (await call('DeleteNote', 'n1', tokens['alice']!)) as ServiceError;
    expect(err.code).to.equal(status.PERMISSION_DENIED);
    expect(err.details).to.match(/^twokey: grant check failed: certificate of spiffe:\/\/acme\.test\/ns\/acme\/sa\/web does not grant \/acme\.notes\.v1\.Notes\/DeleteNote \(decision [0-9a-f-]{36}\)$/);
  });

  it("refuses another user's note, and a missing one, alike: PERMISSION_DENIED, with an authz.resource_denied line under the decision id", async () => {
    for (const id of ['n2', 'n404']) {
      const err = (await call('GetNote', id, tokens['alice']!)) as ServiceError;
      expect(err.code, id).to.equal(status.PERMISSION_DENIED);
      const match = /^resource check failed: "notes:read" on this resource needs its owner or the "notes:read:any" scope \(decision ([0-9a-f-]{36})\)$/.exec(err.details);
      expect(match, err.details).to.not.equal(null);
      const line = await notes.line((l) => l['event'] === 'authz.resource_denied' && l['decision_id'] === match![1], 5000);
      expect(line).to.include({ method: '/acme.notes.v1.Notes/GetNote', allow: false, error_code: 'ERR_RESOURCE_FORBIDDEN', grpc_code: status.PERMISSION_DENIED, subject: 'alice', peer_spiffe_id: 'spiffe://acme.test/ns/acme/sa/web' });
      // The same decision id on the interceptor's allow line: one call, two lines.
      await notes.line((l) => l['event'] === 'authz.decision' && l['decision_id'] === match![1] && l['allow'] === true, 5000);
    }
  });

  it('refuses a bad token: UNAUTHENTICATED at the token check', async () => {
    const err = (await call('GetNote', 'n1', 'not-a-token')) as ServiceError;
    expect(err.code).to.equal(status.UNAUTHENTICATED);
    expect(err.details).to.match(/^twokey: token check failed: malformed token: .* \(decision [0-9a-f-]{36}\)$/);
  });

  it("refuses alice's existing token within 2 s of `twokey users disable alice`, with no code of the team's", async () => {
    expect(await call('GetNote', 'n1', tokens['alice']!)).to.deep.equal({ id: 'n1', owner: 'alice', text: 'buy milk' });
    const r = await twokey(['users', 'disable', 'alice', '--data-dir', '.data/auth']);
    expect(r.code, r.stderr).to.equal(0);
    const start = Date.now();
    let last: ServiceError | Record<string, string>;
    do {
      last = await call('GetNote', 'n1', tokens['alice']!);
      if ('code' in last && typeof last.code === 'number') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    } while (Date.now() - start < 5000);
    const elapsed = Date.now() - start;
    console.log(`      refused ${elapsed} ms after users disable returned`);
    const err = last as ServiceError;
    expect(err.code).to.equal(status.UNAUTHENTICATED);
    expect(err.details).to.match(/^twokey: revocation check failed: the user token's subject alice is disabled \(decision [0-9a-f-]{36}\)$/);
    expect(elapsed).to.be.below(2000);
    // bob is untouched.
    expect(await call('GetNote', 'n2', tokens['bob']!)).to.deep.equal({ id: 'n2', owner: 'bob', text: 'call mum' });
  });

  it("refuses to start a member whose registry entry lacks auth's keys grant, and says why", async () => {
    const r = await node(['server.js'], dir, { env: { AUTH_ADDRESS: `127.0.0.1:${authPort}`, LISTEN: '127.0.0.1:0', SVID_DIR: '.pki/mesh/notes-blind' } });
    expect(r.code).to.equal(1);
    expect(r.stdout).to.not.contain('service.serving');
    expect(r.stderr).to.contain(
      `TwokeyError: cannot fetch the token keys from auth (spiffe://acme.test/ns/platform/sa/auth at 127.0.0.1:${authPort}): PERMISSION_DENIED: twokey: grant check failed: certificate of spiffe://acme.test/ns/acme/sa/notes-blind does not grant /twokey.auth.v1.Auth/GetJwks`,
    );
    expect(r.stderr).to.contain("every member's certificate must grant /twokey.auth.v1.Auth/GetJwks: add it to the grants of spiffe://acme.test/ns/acme/sa/notes-blind's registry entry and reissue its certificate");
    expect(r.stderr).to.contain("code: 'ERR_CONFIG_INVALID'");
  });

  it('refuses to start without certificate files, naming them', async () => {
    const r = await node(['server.js'], dir, { env: { AUTH_ADDRESS: `127.0.0.1:${authPort}`, SVID_DIR: 'no-such-svid' } });
    expect(r.code).to.equal(1);
    expect(r.stderr).to.contain('workload certificate files rejected: cannot read');
    expect(r.stderr).to.not.match(/ERR_MODULE_NOT_FOUND|does not provide an export/);
  });

  it("passes the page's notes.test.js (twokey/testing: real mTLS, no files, no auth)", async () => {
    const r = await node(['notes.test.js'], dir);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('allowed; no grant: PERMISSION_DENIED; bad token: UNAUTHENTICATED; not the owner: PERMISSION_DENIED');
  });

  it('mints a development token offline that only its own JWK Set verifies (authz check finds the protos through the registry)', async () => {
    const minted = await twokey(['token', 'mint', '--key', 'dev-key.json', '--sub', 'carol', '--scope', 'notes:read', '--registry', 'registry.yaml']);
    expect(minted.code, minted.stderr).to.equal(0);
    expect(minted.stderr).to.contain('DEVELOPMENT ONLY');
    writeFileSync(join(dir, 'carol.jwt'), minted.stdout);
    const jwks = await twokey(['token', 'jwks', '--key', 'dev-key.json']);
    writeFileSync(join(dir, 'dev-jwks.json'), jwks.stdout);
    const check = (owner: string) =>
      twokey(['authz', 'check', '--registry', 'registry.yaml', '--jwks', 'dev-jwks.json', '--bundle', '.pki/ca/ca.pem', '--cert', '.pki/mesh/web/svid.pem', '--token-file', 'carol.jwt', '--method', '/acme.notes.v1.Notes/GetNote', '--owner', owner]);
    const allowed = await check('carol');
    expect(allowed.code, allowed.stdout + allowed.stderr).to.equal(0);
    expect(allowed.stdout).to.contain('ALLOW');
    const denied = await check('bob');
    expect(denied.code).to.equal(1);
    expect(denied.stdout).to.match(/DENY \(PERMISSION_DENIED\)/);
    // The mesh does not trust it: members take keys from auth only.
    const err = (await call('GetNote', 'n1', minted.stdout.trim())) as ServiceError;
    expect(err.code).to.equal(status.UNAUTHENTICATED);
    expect(err.details).to.match(/^twokey: token check failed: .*unknown signing key id/);
  });
});
