// A second language: a Python grpcio client with a twokey certificate and token calls the
// docs/adopting.md's service built from the installed package, and is denied exactly where it should be.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { requireSystem } from '../support/requires.ts';
import { installedPackage } from './installed-package.ts';

// Debian's python3 (python3-grpcio); the python3 first on PATH may be another without grpc.
const PYTHON = '/usr/bin/python3';
const HERE = fileURLToPath(new URL('./python/', import.meta.url));

function pythonGrpcMissing(): string | undefined {
  try {
    execFileSync(PYTHON, ['-c', 'import grpc'], { stdio: 'pipe', timeout: 20_000 });
    return undefined;
  } catch (err) {
    return `${PYTHON} cannot import grpc (${(err as Error).message.split('\n')[0]}); install Debian's python3-grpcio`;
  }
}

interface Outcome {
  case: string;
  code: string;
  details?: string;
  note?: { id: string; owner: string; text: string };
}

describe('a Python grpcio client of a service built from the installed package', function () {
  this.timeout(300_000);
  let server: ChildProcess | undefined;
  let work: string;
  let outcomes: Map<string, Outcome>;

  before(async function () {
    requireSystem(this, 'python3-grpcio', pythonGrpcMissing());
    const pkg = await installedPackage();
    work = mkdtempSync(join(tmpdir(), 'twokey-python-'));
    copyFileSync(join(HERE, 'notes-server.js'), join(pkg.project, 'notes-server.js'));
    const child = spawn(process.execPath, ['notes-server.js', work], { cwd: pkg.project, stdio: ['pipe', 'pipe', 'inherit'] });
    server = child;
    const first = await new Promise<string>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`notes-server exited with ${code}`)));
      createInterface({ input: child.stdout! }).once('line', resolve);
    });
    const setup = JSON.parse(first) as { address: string; web: Record<string, string>; cleaner: Record<string, string>; tokens: Record<string, string> };
    const cases = [
      { name: 'allowed', ...setup.web, token: setup.tokens['alice'], id: 'n1' },
      { name: 'no grant', ...setup.cleaner, token: setup.tokens['alice'], id: 'n1' },
      { name: 'forged token', ...setup.web, token: setup.tokens['forged'], id: 'n1' },
      { name: 'no token', ...setup.web, id: 'n1' },
      { name: 'not the owner', ...setup.web, token: setup.tokens['bob'], id: 'n1' },
      { name: 'missing note', ...setup.web, token: setup.tokens['alice'], id: 'n404' },
      { name: 'no client certificate', bundle: setup.web['bundle'], token: setup.tokens['alice'], id: 'n1' },
    ];
    const config = join(work, 'cases.json');
    writeFileSync(config, JSON.stringify({ address: setup.address, cases }));
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(PYTHON, [join(HERE, 'notes_client.py'), config], { timeout: 120_000 }, (err, out, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(out))));
    outcomes = new Map(stdout.trim().split('\n').map((line) => JSON.parse(line) as Outcome).map((o) => [o.case, o]));
  });

  after(async () => {
    server?.stdin?.end();
    if (server !== undefined && server.exitCode === null) await new Promise((resolve) => server!.once('exit', resolve));
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it('is allowed with a granted certificate and the owner token', () => {
    expect(outcomes.get('allowed')).to.deep.include({ code: 'OK', note: { id: 'n1', owner: 'alice', text: 'buy milk' } });
  });

  it('is denied PERMISSION_DENIED by the grant check when its certificate does not grant the method', () => {
    const o = outcomes.get('no grant')!;
    expect(o.code).to.equal('PERMISSION_DENIED');
    expect(o.details).to.match(/grant check failed: certificate of spiffe:\/\/test\.twokey\/ns\/test\/sa\/py-cleaner does not grant \/acme\.notes\.v1\.Notes\/GetNote/);
  });

  it('is refused UNAUTHENTICATED with a forged token or none', () => {
    expect(outcomes.get('forged token')).to.include({ code: 'UNAUTHENTICATED' });
    expect(outcomes.get('forged token')!.details).to.match(/token check failed/);
    expect(outcomes.get('no token')).to.include({ code: 'UNAUTHENTICATED' });
  });

  it("is denied PERMISSION_DENIED for another owner's note and for a missing one alike", () => {
    const other = outcomes.get('not the owner')!;
    const missing = outcomes.get('missing note')!;
    expect(other.code).to.equal('PERMISSION_DENIED');
    expect(missing.code).to.equal('PERMISSION_DENIED');
    expect(missing.details!.replace(/decision \S+/, '')).to.equal(other.details!.replace(/decision \S+/, ''));
  });

  it('cannot connect without a client certificate', () => {
    expect(outcomes.get('no client certificate')).to.include({ code: 'UNAVAILABLE' });
  });
});
