// The commands of a federation: `twokey ca bundle --format spiffe`, `twokey bundle serve` (a real process a partner watches), and `twokey authz check` showing a partner's effective grants.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { authzCheck } from '../authz/authz-check-cli.ts';
import { Ceiling, FederationPolicy, PartnerPolicy, SpiffeIdPattern } from '../../services/authz/federation.ts';
import { GrantSet } from '../../services/authz/grant.ts';
import { PartnerBundles } from '../../services/authz/partner-bundles.ts';
import { SpiffeBundle } from '../../services/authz/spiffe-bundle.ts';
import { SpiffeId } from '../../services/authz/spiffe-id.ts';
import { PARTNER_TD, PartnerDomain } from './partner-domain.ts';

const OUR_TD = 'twokey.local';
const LIST = '/twokey.images.v1.ImageStore/ListImages';
const DELETE = '/twokey.images.v1.ImageStore/DeleteImage';
const GET = '/twokey.images.v1.ImageStore/GetImage';

function twokey(args: string[], cwd: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [TWOKEY_BIN, ...args], { cwd, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('federation commands', function () {
  this.timeout(60_000);
  let dir: string;
  let ca: CertificateAuthority;
  let partner: PartnerDomain;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-federation-cli-'));
    ca = CertificateAuthority.init({ dir: join(dir, 'ca'), trustDomain: OUR_TD });
    partner = new PartnerDomain();
  });
  after(async () => {
    await partner.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('`twokey ca bundle --format spiffe` writes our SPIFFE bundle for a partner to import', () => {
    const r = twokey(['ca', 'bundle', '--dir', 'ca', '--format', 'spiffe', '--sequence', '12', '--refresh-hint', '10m'], dir);
    expect(r.status, r.stderr).to.equal(0);
    const bundle = SpiffeBundle.parse(r.stdout, OUR_TD);
    expect(bundle.sequence).to.equal(12);
    expect(bundle.refreshHintSeconds).to.equal(600);
    expect(bundle.x509Authorities.map((c) => c.fingerprint256)).to.deep.equal([ca.certificate.fingerprint256]);
    expect(r.stdout).to.not.match(/"d"\s*:/);
    const bad = twokey(['ca', 'bundle', '--dir', 'ca', '--format', 'jwks'], dir);
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.contain('--format must be pem or spiffe');
  });

  it('`twokey bundle serve` (https_spiffe with a workload SVID) is watched by a partner; a CA added to the file is published with a higher sequence, no restart', async () => {
    const svidDir = join(dir, 'svid-bundle');
    ca.writeWorkload(svidDir, ca.issue({ spiffeId: `spiffe://${OUR_TD}/ns/twokey/sa/auth`, grants: [], dns: ['localhost'], ip: ['127.0.0.1'] }));
    const bundleFile = join(dir, 'served.pem');
    writeFileSync(bundleFile, ca.bundlePem());
    const child: ChildProcess = spawn(process.execPath, [TWOKEY_BIN, 'bundle', 'serve', '--trust-domain', OUR_TD, '--bundle', bundleFile, '--svid-dir', svidDir, '--listen', '127.0.0.1:0', '--refresh-hint', '1s'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = createInterface({ input: child.stdout! });
    const events: Record<string, unknown>[] = [];
    const waiters: (() => void)[] = [];
    lines.on('line', (l) => {
      events.push(JSON.parse(l) as Record<string, unknown>);
      for (const w of waiters.splice(0)) w();
    });
    const event = async (name: string): Promise<Record<string, unknown>> => {
      for (;;) {
        const found = events.find((e) => e['event'] === name);
        if (found !== undefined) return found;
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    };
    try {
      const serving = await event('bundle.serving');
      // The partner's side: our bundle exchanged by hand first (initial file), then watched.
      const initial = join(dir, 'ours-initial.json');
      writeFileSync(initial, twokey(['ca', 'bundle', '--dir', 'ca', '--format', 'spiffe', '--sequence', '1'], dir).stdout);
      const ceiling = new Ceiling({ workloads: SpiffeIdPattern.parse(`spiffe://${OUR_TD}/ns/twokey/sa/*`), methods: GrantSet.parse([]) });
      const watching = new PartnerBundles({
        policy: new FederationPolicy(PARTNER_TD, [
          new PartnerPolicy(OUR_TD, { kind: 'https_spiffe', url: `https://127.0.0.1:${serving['port']}/`, endpointSpiffeId: SpiffeId.parse(`spiffe://${OUR_TD}/ns/twokey/sa/auth`), initialFile: initial }, [ceiling]),
        ]),
        minRefreshMs: 3_600_000,
      });
      try {
        await watching.start();
        const first = watching.status()[0]!;
        expect(first.lastError).to.equal(undefined);
        expect(first.sequence).to.equal(serving['sequence']);
        // Our CA rotates: a second root is added to the served file.
        const next = CertificateAuthority.inMemory({ trustDomain: OUR_TD });
        appendFileSync(bundleFile, next.bundlePem());
        const updated = await event('bundle.updated');
        expect(updated['sequence']).to.be.greaterThan(first.sequence!);
        await watching.refreshNow();
        expect(watching.status()[0]!.sequence).to.equal(updated['sequence']);
        expect(watching.bundles().get(OUR_TD)!.map((c) => c.fingerprint256)).to.deep.equal([ca.certificate.fingerprint256, next.certificate.fingerprint256]);
      } finally {
        watching.close();
      }
    } finally {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  });

  it("`twokey authz check` for a partner certificate verifies it against the partner's bundle and shows grants, ceiling and their intersection", async () => {
    const partnerBundle = join(dir, 'partner.json');
    writeFileSync(partnerBundle, partner.bundleJson([0], 1, 300));
    const registry = join(dir, 'registry.yaml');
    writeFileSync(
      registry,
      `trustDomain: ${OUR_TD}
workloads:
  - name: image-store
    namespace: twokey
    serviceAccount: image-store
    grants: []
federation:
  - trustDomain: ${PARTNER_TD}
    bundle: { file: partner.json }
    ceilings:
      - workloads: spiffe://${PARTNER_TD}/ns/reports/sa/*
        methods: [${LIST}, ${GET}]
        serviceScopes: [images:read:any]
`,
    );
    const exporter = `spiffe://${PARTNER_TD}/ns/reports/sa/exporter`;
    const certFile = join(dir, 'exporter.pem');
    writeFileSync(certFile, partner.issue(exporter, ['/twokey.images.v1.ImageStore/*']).chainPem);
    const claims = join(dir, 'claims.json');
    const iat = Math.floor(Date.now() / 1000);
    const ourIssuer = 'https://auth.twokey.local';
    writeFileSync(claims, JSON.stringify({ iss: ourIssuer, sub: exporter, aud: `spiffe://${OUR_TD}`, iat, exp: iat + 300, jti: 'abcdefghijklmnopqrstuv', scope: 'images:read:any images:delete:any', token_kind: 'service', cnf: { 'x5t#S256': 'A'.repeat(43) } }));
    const base = ['--cert', certFile, '--registry', registry, '--bundle', join(dir, 'ca', 'ca.pem'), '--claims', claims];

    const del = await authzCheck([...base, '--method', DELETE]);
    expect(del.code, del.err).to.equal(1);
    expect(del.out).to.contain(`${DELETE}: DENY (PERMISSION_DENIED)`);
    expect(del.out).to.contain(`reason: grant check failed: certificate of ${exporter} grants ${DELETE}, but the ceiling spiffe://${PARTNER_TD}/ns/reports/sa/* of partner trust domain "${PARTNER_TD}" does not`);
    expect(del.out).to.contain(`note: chain: verified against partner ${PARTNER_TD}'s own bundle`);
    expect(del.out).to.contain(`partner trust domain ${PARTNER_TD}, ceiling spiffe://${PARTNER_TD}/ns/reports/sa/*`);
    expect(del.out).to.contain('  certificate grants: /twokey.images.v1.ImageStore/*');
    expect(del.out).to.contain(`  ceiling methods:    ${LIST} ${GET}`);
    expect(del.out).to.contain(`  effective grants:   ${LIST} ${GET}`);

    const list = await authzCheck([...base, '--method', LIST, '--json']);
    const json = JSON.parse(list.out);
    expect(json.federation).to.deep.equal({
      trustDomain: PARTNER_TD,
      ceiling: `spiffe://${PARTNER_TD}/ns/reports/sa/*`,
      certificateGrants: ['/twokey.images.v1.ImageStore/*'],
      ceilingMethods: [LIST, GET],
      effectiveGrants: [LIST, GET],
      ceilingScopes: ['images:read:any'],
    });
    // The grant passes; the binding then fails (the claims are bound to another certificate).
    expect(json.checks.find((c: { check: string }) => c.check === 'grant')).to.deep.include({ outcome: 'pass' });

    // A certificate the partner's CA signed for OUR trust domain is told apart from ours.
    const forged = partner.cas[0]!.forged('names-us', { uris: [`spiffe://${OUR_TD}/ns/twokey/sa/image-store`], grants: [LIST] });
    const us = await authzCheck(['--cert', join(forged, 'svid.pem'), '--registry', registry, '--bundle', join(dir, 'ca', 'ca.pem'), '--claims', claims, '--method', LIST]);
    expect(us.code).to.equal(1);
    expect(us.out).to.contain(`${LIST}: DENY (UNAUTHENTICATED)`);
    expect(us.out).to.match(/reason: peer check failed: peer certificate of spiffe:\/\/twokey\.local\/ns\/twokey\/sa\/image-store does not chain to the bundle of trust domain "twokey\.local"/);
  });
});
