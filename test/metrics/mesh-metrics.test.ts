// /metrics after known traffic over real mTLS: every decision counted exactly once, by method, caller, outcome and failed check.
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { Registry } from 'prom-client';
import { createMeshClient } from '../../services/authz/client.ts';
import { DecisionMetrics, NO_CALLER, OTHER_CALLER, UNKNOWN_METHOD } from '../../services/authz/decision-metrics.ts';
import { JwksKeySet } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { registerCertificateMetrics, registerJwksMetrics } from '../../services/authz/workload-metrics.ts';
import { checkHealth, HealthServer } from '../../services/authz/health-server.ts';
import { CALLER_ID, P, SERVER_ID, TD, TestPki, capturingLogger, probeClientCtor, startProbe, type ProbeClient, type ProbeServer } from '../authz/mesh-fixtures.ts';
import { TestIssuer } from '../authz/token-fixtures.ts';
import { parseExposition, samplesOf, type MetricFamily } from './prometheus-text.ts';

const { status } = grpc;
const STRANGER_ID = `spiffe://${TD}/ns/test/sa/stranger`;

function httpGet(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string; allow: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body, allow: res.headers['allow'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

function unary(client: ProbeClient, method: string, md: grpc.Metadata): Promise<grpc.status> {
  return new Promise((resolve) => {
    client[method]!({ text: 'x' }, md, { deadline: Date.now() + 5000 }, (err: grpc.ServiceError | null) => resolve(err ? err.code : status.OK));
  });
}

function serverStream(client: ProbeClient, md: grpc.Metadata): Promise<grpc.status> {
  return new Promise((resolve) => {
    const call = client.ServerStream!({ text: 'x' }, md, { deadline: Date.now() + 5000 });
    call.on('data', () => undefined);
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => resolve(s.code));
  });
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

/** The decision counter's series as "method caller outcome failed_check" -> count. */
function decisions(families: Map<string, MetricFamily>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samplesOf(families, 'twokey_authz_decisions_total')) {
    out[`${s.labels['method']} ${s.labels['caller']} ${s.labels['outcome']} ${s.labels['failed_check']}`] = s.value;
  }
  return out;
}

function value(families: Map<string, MetricFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  return samplesOf(families, name).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

describe('metrics of a mesh server, scraped from the health listener', function () {
  this.timeout(20000);
  let pki: TestPki;
  let issuer: TestIssuer;
  let probe: ProbeServer;
  let registry: Registry;
  let health: HealthServer;
  let healthPort: number;
  let keys: JwksKeySet;
  let jwksDown = false;
  let now = Date.parse('2026-06-01T12:00:00Z');
  const clients: grpc.Client[] = [];
  const sources: SvidSource[] = [];
  const secrets: string[] = [];

  before(async () => {
    pki = TestPki.create();
    issuer = await TestIssuer.create('k1');
    const serverDir = pki.workload('probe', SERVER_ID, [`${P}/Unary`]);
    registry = new Registry();
    keys = new JwksKeySet({
      fetch: async () => {
        if (jwksDown) throw new Error('auth is unreachable');
        return TestIssuer.jwks(issuer);
      },
      refreshIntervalMs: 0,
      clock: () => now,
    });
    await keys.start();
    probe = await startProbe({
      svidDir: serverDir,
      keys,
      logger: capturingLogger().logger,
      metrics: { registry, knownCallers: [CALLER_ID, SERVER_ID] },
    });
    registerCertificateMetrics(registry, probe.svid);
    registerJwksMetrics(registry, keys, () => now);
    health = new HealthServer(['twokey.testing.v1.Probe'], { metrics: registry });
    healthPort = await health.listen('127.0.0.1:0');
    health.setAll('SERVING');
  });
  after(async () => {
    for (const c of clients) c.close();
    for (const s of sources) s.close();
    await health.close();
    await probe.close();
    keys.close();
    pki.cleanup();
  });

  async function client(dir: string): Promise<ProbeClient> {
    const svid = await SvidSource.open(dir, { trustDomain: TD, pollIntervalMs: 0 });
    sources.push(svid);
    const c = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid, serverId: SERVER_ID }) as ProbeClient;
    clients.push(c);
    return c;
  }

  /** A client with a certificate twokey must refuse (another trust domain), over plain grpc-js TLS. */
  function alienClient(dir: string): ProbeClient {
    const creds = grpc.credentials.createSsl(Buffer.from(pki.ca.bundlePem()), readFileSync(`${dir}/svid.key`), readFileSync(`${dir}/svid.pem`), {
      checkServerIdentity: () => undefined,
    });
    const Probe = probeClientCtor();
    const c = new Probe(`127.0.0.1:${probe.port}`, creds, { 'grpc.ssl_target_name_override': TD }) as ProbeClient;
    clients.push(c);
    return c;
  }

  async function scrape(): Promise<{ families: Map<string, MetricFamily>; body: string }> {
    const res = await httpGet(healthPort, '/metrics');
    expect(res.status).to.equal(200);
    expect(res.type).to.match(/^text\/plain; version=0\.0\.4/);
    return { families: parseExposition(res.body), body: res.body };
  }

  it('counts each call exactly once, by method, caller, outcome and failed check; nothing of a token or user appears', async () => {
    const caller = await client(pki.workload('caller', CALLER_ID, [`${P}/Unary`, `${P}/Bidi`, `${P}/CertOnly`, `${P}/Undeclared`]));
    const stranger = await client(pki.workload('stranger', STRANGER_ID, [`${P}/Unary`]));
    // Signed by our CA, so TLS accepts both; twokey refuses them at the peer check.
    const alien = alienClient(pki.forged('alien', { uris: ['spiffe://evil.example/ns/test/sa/caller'] }));
    const twoIds = alienClient(pki.forged('two-ids', { uris: [CALLER_ID, STRANGER_ID] }));
    const good = await issuer.sign({ scope: 'probe:call', sub: 'alice-the-user' });
    const narrow = await issuer.sign({ scope: 'images:read', sub: 'bob-the-user' });
    const forged = await (await TestIssuer.create('k1')).sign({ scope: 'probe:call', sub: 'mallory-the-user' });
    const otherBinding = await issuer.sign({ token_kind: 'service', sub: SERVER_ID, scope: 'probe:call', cnf: { 'x5t#S256': 'A'.repeat(43) } });
    secrets.push(good, narrow, forged, otherBinding);

    for (let i = 0; i < 3; i++) expect(await unary(caller, 'Unary', bearer(good))).to.equal(status.OK);
    expect(await unary(caller, 'Unary', new grpc.Metadata())).to.equal(status.UNAUTHENTICATED);
    expect(await unary(caller, 'Unary', bearer(forged))).to.equal(status.UNAUTHENTICATED);
    expect(await unary(caller, 'Unary', bearer(forged))).to.equal(status.UNAUTHENTICATED);
    expect(await unary(caller, 'Unary', bearer(narrow))).to.equal(status.PERMISSION_DENIED);
    expect(await unary(caller, 'Unary', bearer(otherBinding))).to.equal(status.UNAUTHENTICATED);
    expect(await unary(caller, 'Undeclared', bearer(good))).to.equal(status.PERMISSION_DENIED);
    expect(await serverStream(caller, bearer(good))).to.equal(status.PERMISSION_DENIED);
    expect(await unary(caller, 'CertOnly', new grpc.Metadata())).to.equal(status.OK);
    expect(await unary(stranger, 'Unary', bearer(good))).to.equal(status.OK);
    expect(await unary(alien, 'Unary', bearer(good))).to.equal(status.UNAUTHENTICATED);
    expect(await unary(twoIds, 'Unary', bearer(good))).to.equal(status.UNAUTHENTICATED);

    const { families, body } = await scrape();
    expect(decisions(families)).to.deep.equal({
      [`${P}/Unary ${CALLER_ID} allow none`]: 3,
      [`${P}/Unary ${CALLER_ID} deny token`]: 3,
      [`${P}/Unary ${CALLER_ID} deny scope`]: 1,
      [`${P}/Unary ${CALLER_ID} deny binding`]: 1,
      [`${P}/Undeclared ${CALLER_ID} deny rule`]: 1,
      [`${P}/ServerStream ${CALLER_ID} deny grant`]: 1,
      [`${P}/CertOnly ${CALLER_ID} allow none`]: 1,
      [`${P}/Unary ${OTHER_CALLER} allow none`]: 1,
      // A SPIFFE ID outside the registry (here another trust domain's) is "other"; a certificate
      // with no usable SPIFFE ID at all is "none".
      [`${P}/Unary ${OTHER_CALLER} deny peer`]: 1,
      [`${P}/Unary ${NO_CALLER} deny peer`]: 1,
    });
    expect(value(families, 'twokey_authz_decision_duration_seconds_count', { outcome: 'allow' })).to.equal(5);
    expect(value(families, 'twokey_authz_decision_duration_seconds_count', { outcome: 'deny' })).to.equal(9);
    // Verified once, then cached: `good` 1 miss + 3 hits (one from the stranger), `narrow` and
    // `otherBinding` 1 miss each, `forged` a miss on each call (its failure is remembered apart).
    expect(value(families, 'twokey_token_cache_hits_total')).to.equal(3);
    expect(value(families, 'twokey_token_cache_misses_total')).to.equal(5);
    expect(value(families, 'twokey_open_streams')).to.equal(0);
    expect(value(families, 'twokey_authz_refusals_total')).to.equal(undefined);

    for (const secret of secrets) {
      for (const part of secret.split('.')) expect(body).not.to.contain(part);
      const { jti } = JSON.parse(Buffer.from(secret.split('.')[1]!, 'base64url').toString()) as { jti: string };
      expect(body).not.to.contain(jti);
    }
    for (const user of ['alice-the-user', 'bob-the-user', 'mallory-the-user', 'jti', 'evil.example']) expect(body).not.to.contain(user);
    expect(body).not.to.contain(STRANGER_ID);
  });

  it('counts an admitted stream as open until it ends', async () => {
    const caller = await client(pki.workload('streamer', CALLER_ID, [`${P}/Bidi`]));
    // The probe server's own grant list has Unary only, but Bidi's rule is checked against the caller.
    const call = caller.Bidi!(bearer(await issuer.sign({ scope: 'probe:call' })), { deadline: Date.now() + 5000 });
    const first = new Promise((resolve, reject) => {
      call.once('data', resolve);
      call.once('error', reject);
    });
    call.write({ text: '1' });
    await first;
    expect(value((await scrape()).families, 'twokey_open_streams')).to.equal(1);
    const ended = new Promise<void>((resolve) => call.on('status', () => resolve()));
    call.on('data', () => undefined);
    call.end();
    await ended;
    // The server sends its status before the client sees it: the gauge is back to 0 by then.
    expect(value((await scrape()).families, 'twokey_open_streams')).to.equal(0);
  });

  it("reports the certificate's remaining life and the JWK Set's age and failed fetches", async () => {
    jwksDown = true;
    now += 90_000;
    await keys.refresh().catch(() => undefined);
    const { families } = await scrape();
    expect(value(families, 'twokey_jwks_age_seconds')).to.equal(90);
    expect(value(families, 'twokey_jwks_fetch_failures_total')).to.equal(1);
    const expiry = value(families, 'twokey_certificate_expiry_seconds')!;
    const expected = (probe.svid.svid.notAfter.getTime() - Date.now()) / 1000;
    expect(expiry).to.be.within(expected - 60, expected + 1);
    expect(expiry).to.be.greaterThan(0);
    jwksDown = false;
  });

  it('serves gRPC health on the same port, 404 for any other path and 405 for another method', async () => {
    expect(await checkHealth(`127.0.0.1:${healthPort}`)).to.equal('SERVING');
    expect((await httpGet(healthPort, '/')).status).to.equal(404);
    expect((await httpGet(healthPort, '/metrics/x')).status).to.equal(404);
    expect((await httpGet(healthPort, '/grpc.health.v1.Health/Check', 'POST')).status).to.equal(404);
    const post = await httpGet(healthPort, '/metrics', 'POST');
    expect(post.status).to.equal(405);
    expect(post.allow).to.equal('GET, HEAD');
    expect((await scrape()).families.size).to.be.greaterThan(0);
  });

  it('serves no /metrics on a health listener without a registry', async () => {
    const bare = new HealthServer([]);
    const port = await bare.listen('127.0.0.1:0');
    try {
      expect((await httpGet(port, '/metrics')).status).to.equal(404);
      expect(await checkHealth(`127.0.0.1:${port}`)).to.equal('NOT_SERVING');
    } finally {
      await bare.close();
    }
  });
});

describe('DecisionMetrics label bounds', () => {
  it('collapses paths outside the catalog to one method label and unknown certificates to one caller label', async () => {
    const registry = new Registry();
    const metrics = new DecisionMetrics({ registry, knownCallers: [CALLER_ID], knownMethods: [`${P}/Unary`] });
    const pkiless = (id: string) => ({ spiffeId: { toString: () => id } }) as never;
    const deny = { allow: false, failedCheck: 'grant', errorCode: 'ERR_GRANT_MISSING', code: 7, reason: 'x', checks: [], token: undefined } as never;
    for (let i = 0; i < 50; i++) {
      metrics.record({ decisionId: `d${i}`, method: `/evil.Service/M${i}`, peer: pkiless(`spiffe://${TD}/ns/x/sa/s${i}`), decision: deny, enforced: true, latencyUs: 10 });
    }
    metrics.record({ decisionId: 'dry', method: `${P}/Unary`, peer: pkiless(CALLER_ID), decision: deny, enforced: false, latencyUs: 10 });
    const families = parseExposition(await registry.metrics());
    expect(decisions(families)).to.deep.equal({
      [`${UNKNOWN_METHOD} ${OTHER_CALLER} deny grant`]: 50,
      [`${P}/Unary ${CALLER_ID} dry_run_deny grant`]: 1,
    });
  });
});
