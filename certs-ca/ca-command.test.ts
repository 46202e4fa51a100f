// `twokey ca` run as a real child process, exactly as users run it.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { TWOKEY_BIN as TWOKEY } from '../scripts/local-mesh/supervisor.ts';

const REGISTRY = fileURLToPath(new URL('../deploy/registry.yaml', import.meta.url));

function twokey(args: string[], cwd: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [TWOKEY, ...args], { cwd, encoding: 'utf8', timeout: 15000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('twokey ca (CLI)', function () {
  this.timeout(60000);
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-cli-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('documents every subcommand and option in --help', () => {
    const r = twokey(['ca', '--help'], dir);
    expect(r.status).to.equal(0);
    for (const word of ['init', 'issue', 'sign', 'inspect', 'bundle', '--trust-domain', '--grants-oid', '--max-ttl', '--ca-ttl', '--spiffe-id', '--grant', '--ttl', '--dns', '--ip', '--proto-root', '--registry', '--workload', '--csr', '--out', '--json']) {
      expect(r.stdout).to.include(word);
    }
    expect(twokey(['ca', 'issue', '--help'], dir).stdout).to.equal(r.stdout);
    expect(twokey(['--help'], dir).stdout).to.match(/\n {2}ca +the workload CA/);
  });

  it('exits 2 with a clear message on bad usage', () => {
    const unknownOption = twokey(['ca', 'init', '--dir', 'x', '--trust-domain', 'twokey.local', '--bogus'], dir);
    expect(unknownOption.status).to.equal(2);
    expect(unknownOption.stderr).to.include("Unknown option '--bogus'");
    const unknownSub = twokey(['ca', 'frobnicate'], dir);
    expect([unknownSub.status, unknownSub.stderr]).to.deep.equal([2, 'twokey ca: unknown subcommand "frobnicate"\nRun \'twokey ca --help\' for usage.\n']);
    const missing = twokey(['ca', 'init', '--dir', 'x'], dir);
    expect([missing.status, missing.stderr.split('\n')[0]]).to.deep.equal([2, 'twokey ca: init: --trust-domain is required']);
    expect(twokey(['ca', 'inspect'], dir).stderr).to.include('inspect: expects exactly one certificate FILE');
    expect(twokey(['ca'], dir).status).to.equal(2);
  });

  it('init, issue, inspect and bundle; the key is never printed', () => {
    const init = twokey(['ca', 'init', '--dir', 'ca', '--trust-domain', 'twokey.local', '--max-ttl', '2d'], dir);
    expect(init.status, init.stderr).to.equal(0);
    expect(init.stdout).to.include('created CA for trust domain twokey.local');
    expect(init.stdout + init.stderr).not.to.include('PRIVATE KEY');
    expect(statSync(join(dir, 'ca', 'ca.key')).mode & 0o777).to.equal(0o600);

    const again = twokey(['ca', 'init', '--dir', 'ca', '--trust-domain', 'twokey.local'], dir);
    expect(again.status).to.equal(1);
    expect(again.stderr).to.match(/refusing to overwrite the existing CA in ca \(ca\.key exists\) \[ERR_CA_POLICY\]/);

    const issue = twokey(
      ['ca', 'issue', '--dir', 'ca', '--spiffe-id', 'spiffe://twokey.local/ns/demo/sa/web', '--grant', '/twokey.images.v1.ImageStore/GetImage', '--grant', '/twokey.auth.v1.Auth/*', '--ttl', '12h', '--dns', 'localhost', '--ip', '127.0.0.1', '--out', 'web'],
      dir,
    );
    expect(issue.status, issue.stderr).to.equal(0);
    expect(issue.stdout).to.match(/^issued spiffe:\/\/twokey\.local\/ns\/demo\/sa\/web -> web \(serial [0-9a-f]+, until /);
    expect(statSync(join(dir, 'web', 'svid.key')).mode & 0o777).to.equal(0o600);
    expect(execFileSync('openssl', ['verify', '-CAfile', 'web/bundle.pem', 'web/svid.pem'], { cwd: dir, encoding: 'utf8' }).trim()).to.equal('web/svid.pem: OK');

    const json = twokey(['ca', 'inspect', 'web/svid.pem', '--json'], dir);
    expect(json.status, json.stderr).to.equal(0);
    const info = JSON.parse(json.stdout);
    expect(info).to.include({ spiffeId: 'spiffe://twokey.local/ns/demo/sa/web', issuer: 'O=twokey, CN=twokey CA twokey.local', expired: false });
    expect(info.grants).to.deep.equal(['/twokey.images.v1.ImageStore/GetImage', '/twokey.auth.v1.Auth/*']);
    expect([info.dns, info.ip]).to.deep.equal([['localhost'], ['127.0.0.1']]);
    expect(new Date(info.notAfter).getTime() - new Date(info.notBefore).getTime()).to.equal(12 * 3600_000 + 60_000);
    // openssl computes the same serial and fingerprint.
    const serial = execFileSync('openssl', ['x509', '-in', 'web/svid.pem', '-noout', '-serial'], { cwd: dir, encoding: 'utf8' }).trim().slice('serial='.length);
    expect(serial.toLowerCase().replace(/^0+/, '')).to.equal(info.serial.replace(/^0+/, ''));
    const fp = execFileSync('openssl', ['x509', '-in', 'web/svid.pem', '-noout', '-fingerprint', '-sha256'], { cwd: dir, encoding: 'utf8' }).trim();
    expect(fp).to.equal(`sha256 Fingerprint=${info.sha256Fingerprint}`);

    const text = twokey(['ca', 'inspect', 'web/svid.pem'], dir);
    expect(text.stdout).to.match(/^SPIFFE ID: +spiffe:\/\/twokey\.local\/ns\/demo\/sa\/web\ngrants: +\/twokey\.images\.v1\.ImageStore\/GetImage\n +\/twokey\.auth\.v1\.Auth\/\*\n/);

    const bundle = twokey(['ca', 'bundle', '--dir', 'ca'], dir);
    expect(bundle.stdout).to.equal(readFileSync(join(dir, 'ca', 'ca.pem'), 'utf8'));
  });

  it('exits 1 naming the problem when the CA refuses', () => {
    const ttl = twokey(['ca', 'issue', '--dir', 'ca', '--spiffe-id', 'spiffe://twokey.local/ns/demo/sa/web', '--ttl', '3d', '--out', 'x'], dir);
    expect([ttl.status, ttl.stderr]).to.deep.equal([1, "twokey ca issue: TTL 3d exceeds the CA's maximum TTL 2d [ERR_CA_POLICY]\n"]);
    const grant = twokey(['ca', 'issue', '--dir', 'ca', '--spiffe-id', 'spiffe://twokey.local/ns/demo/sa/web', '--grant', '/twokey.images.v1.ImageStore/Steal', '--out', 'x'], dir);
    expect(grant.status).to.equal(1);
    expect(grant.stderr).to.match(/grant "\/twokey\.images\.v1\.ImageStore\/Steal" names no existing method .* \[ERR_GRANT_INVALID\]/);
    const mixed = twokey(['ca', 'issue', '--dir', 'ca', '--registry', REGISTRY, '--grant', '/twokey.auth.v1.Auth/Login', '--out', 'x'], dir);
    expect([mixed.status, mixed.stderr.split('\n')[0]]).to.deep.equal([2, 'twokey ca: issue: --grant cannot be combined with --registry (the registry sets them)']);
  });

  it('issues a whole registry, one folder per workload', () => {
    const r = twokey(['ca', 'issue', '--dir', 'ca', '--registry', REGISTRY, '--out', 'mesh'], dir);
    // The registry's 24h default lifetime is within this CA's 2d maximum.
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim().split('\n')).to.have.length(6);
    // The admin identity too: it is not deployed, but people hold its certificate.
    for (const name of ['auth', 'gateway', 'image-store', 'tagging', 'cleaner', 'admin']) {
      expect(readFileSync(join(dir, 'mesh', name, 'svid.pem'), 'utf8')).to.match(/^-----BEGIN CERTIFICATE-----/);
    }
  });

  it('signs a CSR with the identity given on the command line', () => {
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'partner.key', '-out', 'partner.csr', '-subj', '/CN=partner', '-addext', 'subjectAltName=URI:spiffe://twokey.local/ns/twokey/sa/gateway'], { cwd: dir, stdio: 'pipe' });
    const r = twokey(['ca', 'sign', '--dir', 'ca', '--csr', 'partner.csr', '--registry', REGISTRY, '--workload', 'tagging', '--out', 'partner.pem'], dir);
    expect(r.status, r.stderr).to.equal(0);
    const info = JSON.parse(twokey(['ca', 'inspect', 'partner.pem', '--json'], dir).stdout);
    expect(info.spiffeId).to.equal('spiffe://twokey.local/ns/twokey/sa/tagging');
    expect(info.grants).to.include('/twokey.images.v1.ImageStore/SetTags');
    const bad = twokey(['ca', 'sign', '--dir', 'ca', '--csr', 'partner.key', '--spiffe-id', 'spiffe://twokey.local/ns/x/sa/y', '--out', 'y.pem'], dir);
    expect(bad.status).to.equal(1);
    expect(bad.stderr).to.include('invalid CSR: expected one PEM "CERTIFICATE REQUEST" block [ERR_CSR_INVALID]');
  });

  it("finds a team's own methods through the registry's protoRoots, then ./proto, without --proto-root", () => {
    const team = join(dir, 'team');
    mkdirSync(join(team, 'config'), { recursive: true });
    mkdirSync(join(team, 'protos', 'acme', 'notes', 'v1'), { recursive: true });
    writeFileSync(
      join(team, 'protos', 'acme', 'notes', 'v1', 'notes.proto'),
      'syntax = "proto3";\npackage acme.notes.v1;\nimport "twokey/authz/v1/authz.proto";\nservice Notes {\n  rpc GetNote(Req) returns (Req) { option (twokey.authz.v1.rule) = { permission: "notes:read" }; }\n}\nmessage Req { string id = 1; }\n',
    );
    // protoRoots are relative to the registry file, not to where the command runs.
    writeFileSync(
      join(team, 'config', 'registry.yaml'),
      'trustDomain: twokey.local\nprotoRoots: [../protos]\nworkloads:\n  - name: web\n    namespace: acme\n    serviceAccount: web\n    grants: [/acme.notes.v1.Notes/GetNote]\n',
    );
    const issued = twokey(['ca', 'issue', '--dir', '../ca', '--registry', 'config/registry.yaml', '--out', 'mesh'], team);
    expect(issued.status, issued.stderr).to.equal(0);
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'web.key', '-out', 'web.csr', '-subj', '/CN=web'], { cwd: team, stdio: 'pipe' });
    const signed = twokey(['ca', 'sign', '--dir', '../ca', '--csr', 'web.csr', '--registry', 'config/registry.yaml', '--workload', 'web', '--out', 'web.pem'], team);
    expect(signed.status, signed.stderr).to.equal(0);
    // One workload, no registry: ./proto is searched when it exists, and without it the grant names nothing.
    const one = (cwd: string) => twokey(['ca', 'issue', '--dir', join(dir, 'ca'), '--spiffe-id', 'spiffe://twokey.local/ns/acme/sa/web', '--grant', '/acme.notes.v1.Notes/GetNote', '--out', 'one'], cwd);
    const missing = one(team);
    expect(missing.status).to.equal(1);
    expect(missing.stderr).to.contain('grant "/acme.notes.v1.Notes/GetNote" names no existing method /acme.notes.v1.Notes/GetNote');
    cpSync(join(team, 'protos'), join(team, 'proto'), { recursive: true });
    const found = one(team);
    expect(found.status, found.stderr).to.equal(0);
  });
});
