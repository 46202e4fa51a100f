// twokey installed as another team installs it: the packed tarball in an empty project outside
// this repository: what it ships, how it installs, its types and its command (docs/adopting.md runs in new-team.test.ts).
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { expect } from 'chai';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';
import { installedPackage, type InstalledPackage } from './installed-package.ts';

const MAX_TARBALL_BYTES = 1_000_000;
// Installed only as the example's own tree: these are the paths the package may ship (the library,
// the CA, the command and auth; never the example services).
const EXAMPLE_SERVICES = ['gateway', 'image-store', 'tagging', 'cleaner'];
const EXAMPLE_ONLY_DEPENDENCIES = ['exifr'];
const SHIPPED = [/^package\.json$/, /^README\.md$/, /^docs\/[A-Za-z-]+\.md$/, /^proto\/.+\.proto$/, /^services\/(mesh-runtime|authorizer)\/proto\/.+\.proto$/, /^dist\/(services\/(authz|auth|mesh-runtime|authorizer)|certs-ca|scripts|deploy\/tools)\/.+\.(js|d\.ts)$/, /^scripts\/console\/static\/[a-z]+\.(html|js|css)$/];

function node(args: string[], cwd: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, args, { cwd, timeout: 60_000, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr })));
}

/** Every file under dir, relative to it. */
function walk(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name), base) : [relative(base, join(dir, e.name))]));
}

describe('the installed package (packed, installed offline outside the repository)', function () {
  this.timeout(300_000);
  let pkg: InstalledPackage;

  before(async () => {
    pkg = await installedPackage();
  });

  it('is a tarball under 1 MB of compiled JavaScript, types, protos and docs only', () => {
    expect(pkg.tarballBytes).to.be.below(MAX_TARBALL_BYTES);
    const strays = pkg.files.map((f) => f.path).filter((p) => !SHIPPED.some((re) => re.test(p)));
    expect(strays, 'files outside the shipped set').to.deep.equal([]);
    expect(pkg.files.some((f) => /\.test\.|^dist\/(bench|test)\//.test(f.path)), 'tests or benchmarks packed').to.equal(false);
    // dist/ is built incrementally and never cleaned: a compiled file whose source is gone must not ship.
    const orphans = pkg.files
      .map((f) => f.path)
      .filter((p) => p.startsWith('dist/'))
      .filter((p) => !existsSync(join(PACKAGE_ROOT, p.replace(/^dist\//, '').replace(/\.(js|d\.ts)$/, '.ts'))));
    expect(orphans, 'compiled files without a source').to.deep.equal([]);
    // Every relative import of a shipped module is shipped too (static and dynamic imports alike).
    const shipped = new Set(pkg.files.map((f) => f.path));
    const unresolved: string[] = [];
    let checked = 0;
    for (const path of shipped) {
      if (!path.endsWith('.js')) continue;
      const text = readFileSync(join(pkg.project, 'node_modules', 'twokey', path), 'utf8');
      for (const m of text.matchAll(/(?:from |import\()(['"])(\.\.?\/[^'"]+)\1/g)) {
        const target = join(dirname(path), m[2]!);
        checked++;
        // `twokey serve` names the example services too; from the package it says they are not in it (tested below).
        const example = path === 'dist/services/mesh-runtime/serve-command.js' && EXAMPLE_SERVICES.some((name) => m[2] === `../${name}/main.js`);
        if (!shipped.has(target) && !example) unresolved.push(`${path} -> ${m[2]}`);
      }
    }
    expect(unresolved, 'imports of files not in the package').to.deep.equal([]);
    expect(checked, 'relative imports checked').to.be.above(100);
    for (const entry of ['dist/services/authz/index.js', 'dist/certs-ca/index.js', 'dist/services/authz/testing/index.js', 'dist/scripts/twokey.js', 'proto/twokey/authz/v1/authz.proto']) {
      expect(pkg.files.map((f) => f.path)).to.include(entry);
    }
  });

  it('installs without building native code', () => {
    const modules = join(pkg.project, 'node_modules');
    const files = walk(modules);
    expect(files.filter((f) => /(^|\/)binding\.gyp$|\.node$/.test(f)), 'native sources or binaries').to.deep.equal([]);
    const scripts: string[] = [];
    for (const manifest of files.filter((f) => /(^|\/)package\.json$/.test(f))) {
      const json = JSON.parse(readFileSync(join(modules, manifest), 'utf8')) as { name?: string; gypfile?: boolean; scripts?: Record<string, string> };
      if (json.name === undefined) continue;
      expect(json.gypfile, `${json.name} declares a native build`).to.not.equal(true);
      for (const hook of ['preinstall', 'install', 'postinstall']) if (json.scripts?.[hook]) scripts.push(`${json.name} ${hook}: ${json.scripts[hook]}`);
    }
    // protobufjs's postinstall only prints a warning about its optional CLI's version.
    expect(scripts).to.deep.equal(['protobufjs postinstall: node scripts/postinstall']);
    expect(pkg.installLog).to.not.match(/node-gyp|prebuild-install|node-pre-gyp/);
    expect(existsSync(join(modules, 'typescript')), 'typescript is an optional peer, not installed').to.equal(false);
    expect(existsSync(join(modules, 'kubernetes-models')), 'kubernetes-models is an optional peer, not installed').to.equal(false);
  });

  it('holds no example service and none of their dependencies; auth still starts and an example names why it cannot', async () => {
    const installed = walk(join(pkg.project, 'node_modules', 'twokey'));
    expect(installed.length, 'files of the installed package').to.be.above(100);
    expect(installed.filter((f) => f.startsWith('dist/services/auth/')).length, 'auth ships').to.be.above(5);
    const examples = installed.filter((f) => EXAMPLE_SERVICES.some((name) => f.startsWith(`dist/services/${name}/`)));
    expect(examples, 'example service files').to.deep.equal([]);
    for (const dep of EXAMPLE_ONLY_DEPENDENCIES) expect(existsSync(join(pkg.project, 'node_modules', dep)), `${dep} installed`).to.equal(false);
    const manifest = JSON.parse(readFileSync(join(pkg.project, 'node_modules', 'twokey', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    for (const dep of EXAMPLE_ONLY_DEPENDENCIES) expect(manifest.dependencies, 'runtime dependencies').to.not.have.property(dep);
    const bin = join(pkg.project, 'node_modules', '.bin', 'twokey');
    // auth loads (no missing module) and refuses to start for want of its workload certificate.
    const auth = await node([bin, 'serve', 'auth'], pkg.project, { TWOKEY_SVID_DIR: join(pkg.project, 'no-such-svid'), TWOKEY_REGISTRY: join(pkg.project, 'no-such-registry.yaml') });
    expect(auth.code).to.equal(1);
    expect(auth.stderr).to.contain('twokey serve auth: failed to start');
    expect(auth.stderr).to.not.match(/ERR_MODULE_NOT_FOUND|Cannot find (module|package)/);
    const gateway = await node([bin, 'serve', 'gateway'], pkg.project);
    expect(gateway.code).to.equal(2);
    expect(gateway.stderr).to.contain('gateway is an example service of the twokey repository, not part of the installed package');
  });

  it('type-checks a TypeScript consumer against the shipped declarations', async () => {
    writeFileSync(join(pkg.project, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['consumer.ts'] }));
    writeFileSync(
      join(pkg.project, 'consumer.ts'),
      [
        "import { MethodCatalog, RevocationHolder, SvidSource, checkOwner, createMeshServer, grpcStatusOf, joinMesh, refuse, type MeshMember, type MeshServer, type RevocationSource, type TokenAuthenticator, type PeerIdentityCache } from 'twokey';",
        "import { CertificateAuthority } from 'twokey/ca';",
        "import { startTestServer, type TestServer } from 'twokey/testing';",
        "const catalog: MethodCatalog = MethodCatalog.load({ roots: ['proto'] });",
        "const ca = CertificateAuthority.inMemory({ trustDomain: 'acme.test', catalog });",
        "const code: number = grpcStatusOf(new Error('x'));",
        'export async function start(dir: string): Promise<[MeshServer, TestServer]> {',
        "  const svid = await SvidSource.open(dir, { trustDomain: ca.trustDomain });",
        "  const test = await startTestServer({ protoRoots: ['proto'], services: {} });",
        "  return [createMeshServer({ svid, keys: test.mesh.tokens.keys, issuer: test.mesh.issuer, rules: catalog }), test];",
        '}',
        "export const join = (): Promise<MeshMember> => joinMesh({ registry: 'registry.yaml', svidDir: 'svid', authAddress: '127.0.0.1:1' });",
        "export const refused: import('@grpc/grpc-js').StatusObject | null = checkOwner('notes:read', undefined) ?? refuse(new Error('x'));",
        "export type Parts = [RevocationSource, TokenAuthenticator, PeerIdentityCache, RevocationHolder['view']];",
        '// @ts-expect-error: not part of the public API',
        "import { decide } from 'twokey';",
        'export { code, decide };',
      ].join('\n'),
    );
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const r = await node([tsc, '-p', 'tsconfig.json'], pkg.project);
    expect(r.code, r.stdout + r.stderr).to.equal(0);
  });

  it('runs the twokey command: the CA for the team\'s own protos, and k8s check names the optional packages it needs', async () => {
    const bin = join(pkg.project, 'node_modules', '.bin', 'twokey');
    const help = await node([bin, '--help'], pkg.project);
    expect(help.code).to.equal(0);
    expect(help.stdout).to.contain('Usage: twokey <command>');
    // The CA signs grants for the team's own methods (its proto root), and refuses names it lacks.
    const init = await node([bin, 'ca', 'init', '--dir', 'ca', '--trust-domain', 'acme.test'], pkg.project);
    expect(init.code, init.stderr).to.equal(0);
    const issue = (grant: string) => node([bin, 'ca', 'issue', '--dir', 'ca', '--spiffe-id', 'spiffe://acme.test/ns/notes/sa/web', '--grant', grant, '--proto-root', 'proto', '--out', 'svid/web'], pkg.project);
    const issued = await issue('/acme.notes.v1.Notes/GetNote');
    expect(issued.code, issued.stderr).to.equal(0);
    expect(existsSync(join(pkg.project, 'svid', 'web', 'svid.pem'))).to.equal(true);
    const refused = await issue('/acme.notes.v1.Notes/EditNote');
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.contain('names no existing method /acme.notes.v1.Notes/EditNote');
    const check = await node([bin, 'k8s', 'check'], pkg.project);
    expect(check.code).to.equal(1);
    expect(check.stderr).to.contain('the schema check needs the optional packages kubernetes-models@^4.5.1 and typescript@~5.9.3');
  });
});
