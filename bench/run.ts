// `npm run bench`: what twokey's authorization costs, side by side with plain grpc-js over mTLS.
// Starts its own servers (child processes, 127.0.0.1, ephemeral ports) and one load generator
// process, runs every scenario interleaved in rounds, and reports medians and ratios to A.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Child } from './child.ts';
import { ECHO_METHOD, encodeEchoRequest } from './echo-service.ts';
import type { LoadResult } from './load-process.ts';
import { median } from './latency.ts';
import { GET_IMAGE_METHOD, startMeshPath, type MeshPath } from './mesh-path.ts';
import { allStats, probeScenario, runRound, warmUp, type RoundResult, type Scenario, type Timing } from './measure.ts';
import { measureDecisionCost } from './decision-cost.ts';
import { buildPki, TRUST_DOMAIN, type BenchPki } from './pki.ts';
import { summarizeProfile } from './profile-summary.ts';
import { renderSvg, renderTable, renderTargets, type ScenarioSummary } from './report.ts';
import type { ReadyMessage, ServerConfig } from './server-process.ts';
import { evaluateTargets, type MemoryResult } from './targets.ts';
import { generateSigningKey, type TokenSpec } from './token-minter.ts';
import { nginxUnavailableReason, startNginxFront, type NginxFront } from './nginx-front.ts';
import { freePortSource } from '../scripts/local-mesh/ports.ts';
import type { WireTarget } from './wire-client.ts';
import { PostgresServer, postgresUnavailableReason } from '../test/postgres/postgres-server.ts';

const ISSUER = 'https://auth.twokey.local';
const ECHO_SERVER_ID = `spiffe://${TRUST_DOMAIN}/ns/bench/sa/echo-server`;
const PAYLOAD_BYTES = 512;
const C_TOKENS = 10_000;
const MEMORY_TOKENS = 100_000;
// The most grants a client certificate can carry here: TLS 1.3 session tickets (on by default in
// Node) embed the client certificate and a ticket is at most 64 KiB, so a certificate above about
// 64 KB fails every connection with 'tlsv1 alert internal error'. 6,000 short grants is 57 KB.
const LARGE_GRANTS = 6_000;
// Two services in series on two cores serve far fewer calls than one: E's open loop is offered
// this rate instead of --rate, so its latency is measured below saturation too.
const MESH_RATE = 250;
const WARM_UP_MS = 500;
// The mesh services start before the benchmark's other setup ends; this much of their profiles is start-up.
const MESH_PROFILE_SKIP_MS = 8000;

const { values: argv } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    'closed-ms': { type: 'string', default: '800' },
    'open-ms': { type: 'string', default: '1000' },
    'warmup-ms': { type: 'string', default: '200' },
    rate: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '32' },
    'skip-memory': { type: 'boolean', default: false },
    'skip-mesh': { type: 'boolean', default: false },
    breakdown: { type: 'boolean', default: false },
    only: { type: 'string' },
    profile: { type: 'string' },
    publish: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (argv.help) {
  process.stdout.write(`Usage: npm run bench -- [options]
  --rounds N         rounds over all scenarios; medians are reported (default 3)
  --closed-ms MS     closed-loop (saturation) phase per scenario and round (default 800)
  --open-ms MS       open-loop phase at the fixed rate (default 1000)
  --warmup-ms MS     warm-up before each scenario's phases (default 200)
  --rate N           offered rate of the open-loop phase, calls/s (default 2000)
  --concurrency N    calls in flight in the closed loop (default 32)
  --skip-memory      skip the 100,000-token memory check
  --skip-mesh        skip scenario E (the example mesh: gateway -> image-store)
                     (scenario G, nginx + twokey's authorizer, runs when nginx is installed)
  --breakdown        add the scenarios that show where B's cost goes: A with a pass-through
                     interceptor (A+i), A+i entering an AsyncLocalStorage context as twokey does
                     (A+i+als), A with each handler wrapped at addService time instead (A+w),
                     B without the decision log (B-nolog), B without metrics (B-nometrics),
                     A over 1,000 connections
  --only IDS         run only these scenarios (comma-separated ids; A always runs)
  --profile IDS      run these scenarios' servers under node --cpu-prof; profiles and their
                     summaries go to bench/results/profiles/
  --publish          also write bench/latest.md and bench/latest.svg (the published copy, linked from docs/performance.md)
Writes bench/results/latest.json and bench/results/latest.svg.
`);
  process.exit(0);
}

function positiveInt(name: string, text: string | undefined): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
  return value;
}

const rounds = positiveInt('rounds', argv.rounds);
const timing: Timing = {
  warmupMs: positiveInt('warmup-ms', argv['warmup-ms']),
  closedMs: positiveInt('closed-ms', argv['closed-ms']),
  openMs: positiveInt('open-ms', argv['open-ms']),
  rate: positiveInt('rate', argv.rate),
};
const concurrency = positiveInt('concurrency', argv.concurrency);
const idList = (text: string | undefined): Set<string> | undefined =>
  text === undefined ? undefined : new Set(text.split(',').map((id) => id.trim()).filter((id) => id !== ''));
const only = idList(argv.only);
only?.add('A');
const profiled = idList(argv.profile) ?? new Set<string>();
const FRONT_IDS = ['G', 'G-authz', 'G-local', 'G-local-authz', 'G-hop'];
const frontSkipped = nginxUnavailableReason();
// Scenario G needs nginx (Debian's package); without it G is left out and the run says why.
const frontWanted = frontSkipped === undefined && (only === undefined || FRONT_IDS.some((id) => only.has(id)));
const here = path.dirname(fileURLToPath(import.meta.url));
const profileDir = path.join(here, 'results', 'profiles');
// A profile left by an earlier run would otherwise be summarized in place of this run's.
for (const id of profiled) fs.rmSync(path.join(profileDir, id), { recursive: true, force: true });

const log = (line: string): void => {
  process.stderr.write(`[bench ${((performance.now() - startedAt) / 1000).toFixed(1)}s] ${line}\n`);
};
const startedAt = performance.now();
// Other work on the machine shows up here, and in every figure below: it is printed with them.
const loadAtStart = os.loadavg()[0]!;

function portOf(child: Child, ports: Map<Child, number>): number {
  const port = ports.get(child);
  if (port === undefined) throw new Error(`${child.label} has no port`);
  return port;
}

function targetFor(dir: string, port: number): WireTarget {
  const read = (name: string): string => fs.readFileSync(path.join(dir, name), 'utf8');
  return { port, cert: read('svid.pem'), key: read('svid.key'), ca: read('bundle.pem') };
}

interface Servers {
  children: Map<string, Child>;
  ports: Map<Child, number>;
  startupMs: Map<Child, number>;
}

async function startServers(pki: BenchPki, jwks: unknown, withMemory: boolean): Promise<Servers> {
  const twokey = (decisionLog = true, metrics = true): ServerConfig & { kind: 'twokey' } => ({
    kind: 'twokey',
    svidDir: pki.server,
    trustDomain: TRUST_DOMAIN,
    jwks,
    issuer: ISSUER,
    protoRoots: pki.ruleRoots,
    decisionLog,
    metrics,
  });
  const wanted: Array<[string, ServerConfig]> = [
    ['A', { kind: 'plain', svidDir: pki.server }],
    ['B', twokey()],
    ['B-rev10k', { ...twokey(), revocationEntries: 10_000 }],
    ['C', twokey()],
    ['D-grant', twokey()],
    ['D-token', twokey()],
    ['F-g100', twokey()],
    ['F-glarge', twokey()],
    ['F-c100', twokey()],
    ['F-c1000', twokey()],
  ];
  if (argv.breakdown) {
    wanted.push(['B-nolog', twokey(false)]);
    wanted.push(['B-nometrics', twokey(true, false)]);
    wanted.push(['A-c1000', { kind: 'plain', svidDir: pki.server }]);
    wanted.push(['A+i', { kind: 'plain', svidDir: pki.server, interceptor: 'pass-through' }]);
    wanted.push(['A+i+als', { kind: 'plain', svidDir: pki.server, interceptor: 'pass-through-als' }]);
    wanted.push(['A+w', { kind: 'plain', svidDir: pki.server, wrapHandlers: true }]);
  }
  if (withMemory) wanted.push(['M', twokey()]);
  if (frontWanted) {
    // Scenario G: the backend nginx forwards to (plaintext on loopback, as in a pod) and the authorizer.
    wanted.push(['G-backend', { kind: 'plain', svidDir: pki.server, insecure: true }]);
    wanted.push(['G-authorizer', { kind: 'authorizer', svidDir: pki.server, trustDomain: TRUST_DOMAIN, jwks, issuer: ISSUER, service: ECHO_SERVER_ID, protoRoots: pki.ruleRoots }]);
    wanted.push(['G-authorizer-local', { kind: 'authorizer', svidDir: pki.server, trustDomain: TRUST_DOMAIN, jwks, issuer: ISSUER, service: ECHO_SERVER_ID, protoRoots: pki.ruleRoots, local: true }]);
  }
  const chosen = wanted.filter(([name]) => only === undefined || only.has(name) || (name === 'M' && withMemory) || (frontWanted && name.startsWith('G-')));
  const children = new Map<string, Child>();
  const ports = new Map<Child, number>();
  const startupMs = new Map<Child, number>();
  // Two at a time: the machine has two cores and each start compiles TypeScript.
  for (let i = 0; i < chosen.length; i += 2) {
    await Promise.all(
      chosen.slice(i, i + 2).map(async ([name, config]) => {
        const child = new Child({
          entry: path.join(here, 'server-process.ts'),
          label: `server ${name}`,
          env: { ...process.env, TWOKEY_BENCH_SERVER: JSON.stringify(config) },
          // One directory per server: tsx's loader thread writes a profile of its own beside the main thread's.
          nodeFlags: profiled.has(name) ? ['--cpu-prof', '--cpu-prof-dir', path.join(profileDir, name)] : [],
        });
        const ready = await child.waitFor((m) => (m.op === 'ready' ? (m as unknown as ReadyMessage) : undefined), 30_000);
        children.set(name, child);
        ports.set(child, ready.port);
        startupMs.set(child, ready.startupMs);
      }),
    );
  }
  return { children, ports, startupMs };
}

function buildScenarios(pki: BenchPki, servers: Servers, message: Buffer): Scenario[] {
  // A scenario whose server was not started (--only) is left out.
  const scenario = (
    id: string,
    label: string,
    serverName: string,
    clientDir: string,
    tokenSetId: string | undefined,
    expect: Scenario['expect'],
    connections = 1,
  ): Scenario | undefined => {
    const server = servers.children.get(serverName);
    if (server === undefined) return undefined;
    return {
      id,
      label,
      servers: [server],
      call: { target: targetFor(clientDir, portOf(server, servers.ports)), path: ECHO_METHOD, message, tokenSetId },
      connections,
      concurrency: Math.max(concurrency, connections),
      reconnectEachRound: connections > 1,
      expect,
    };
  };
  const allowed = { shape: 'message', code: 0 } as const;
  const all = [
    scenario('A', 'plain grpc-js, mTLS, no authorization', 'A', pki.clientOneGrant, 'one', allowed),
    scenario('A+i', 'A + pass-through interceptor', 'A+i', pki.clientOneGrant, 'one', allowed),
    scenario('A+i+als', 'A + pass-through interceptor in an AsyncLocalStorage context', 'A+i+als', pki.clientOneGrant, 'one', allowed),
    scenario('A+w', 'A + each handler wrapped at addService time, in an AsyncLocalStorage context', 'A+w', pki.clientOneGrant, 'one', allowed),
    scenario('B', 'twokey allow, same token (cache hit)', 'B', pki.clientOneGrant, 'one', allowed),
    scenario('B-rev10k', 'B with a 10,000-entry revocation set held and checked', 'B-rev10k', pki.clientOneGrant, 'one', allowed),
    scenario('B-nolog', 'B without the decision log', 'B-nolog', pki.clientOneGrant, 'one', allowed),
    scenario('B-nometrics', 'B without metrics', 'B-nometrics', pki.clientOneGrant, 'one', allowed),
    scenario('C', `twokey allow, ${C_TOKENS.toLocaleString('en')} tokens round-robin`, 'C', pki.clientOneGrant, 'many', allowed),
    scenario('D-grant', 'twokey deny: method not granted', 'D-grant', pki.clientNotGranted, 'one', {
      shape: 'trailers-only',
      code: 7,
      messageIncludes: 'grant check failed',
    }),
    scenario('D-token', 'twokey deny: bad token signature', 'D-token', pki.clientOneGrant, 'forged', {
      shape: 'trailers-only',
      code: 16,
      messageIncludes: 'signature',
    }),
    scenario('F-g100', 'B, certificate with 100 grants', 'F-g100', pki.clientGrants100, 'one', allowed),
    scenario('F-glarge', `B, certificate with ${LARGE_GRANTS.toLocaleString('en')} grants`, 'F-glarge', pki.clientGrantsLarge, 'one', allowed),
    scenario('F-c100', 'B over 100 connections', 'F-c100', pki.clientOneGrant, 'one', allowed, 100),
    scenario('F-c1000', 'B over 1,000 connections', 'F-c1000', pki.clientOneGrant, 'one', allowed, 1000),
    scenario('A-c1000', 'A over 1,000 connections (for F-c1000)', 'A-c1000', pki.clientOneGrant, 'one', allowed, 1000),
  ];
  return all.filter((s): s is Scenario => s !== undefined);
}

/**
 * Scenario G: nginx (mTLS, auth_request to twokey's authorizer, the config `twokey authz
 * nginx-config` writes) in front of a plain grpc-js backend. G counts all three processes; G-authz
 * runs the same calls counting the authorizer alone (its CPU per check); G-hop is nginx without
 * auth_request in front of the same backend (what the proxy hop itself costs).
 */
function buildFrontScenarios(pki: BenchPki, servers: Servers, withAuth: NginxFront, withLocal: NginxFront, hopOnly: NginxFront, message: Buffer): Scenario[] {
  const backend = servers.children.get('G-backend')!;
  const authorizer = servers.children.get('G-authorizer')!;
  const local = servers.children.get('G-authorizer-local')!;
  const allowed = { shape: 'message', code: 0 } as const;
  const through = (front: NginxFront): Scenario['call'] => ({ target: targetFor(pki.clientOneGrant, front.port), path: ECHO_METHOD, message, tokenSetId: 'one' });
  const common = { connections: 1, concurrency, reconnectEachRound: false, expect: allowed };
  const all: Scenario[] = [
    { id: 'G', label: 'nginx mTLS + auth_request to twokey authz + plain grpc-js backend (all three processes)', servers: [withAuth.stats, authorizer, backend], call: through(withAuth), ...common },
    { id: 'G-authz', label: "G's calls, the authorizer process alone (its CPU per check)", servers: [authorizer], call: through(withAuth), ...common },
    { id: 'G-local', label: 'G with the authorizer on plaintext loopback (same pod) instead of mTLS', servers: [withLocal.stats, local, backend], call: through(withLocal), ...common },
    { id: 'G-local-authz', label: "G-local's calls, the authorizer process alone", servers: [local], call: through(withLocal), ...common },
    { id: 'G-hop', label: 'nginx mTLS without auth_request + the same backend (the proxy hop alone)', servers: [hopOnly.stats, backend], call: through(hopOnly), ...common },
  ];
  return all.filter((x) => only === undefined || only.has(x.id));
}

/** Fresh tokens for every phase of the memory check: a server that had seen them would cache them. */
async function memoryCheck(loads: Child[], server: Child, port: number, pki: BenchPki, message: Buffer): Promise<MemoryResult> {
  const call = { target: targetFor(pki.clientOneGrant, port), path: ECHO_METHOD, message };
  const before = (await allStats([server], true))[0]!;
  const steps: MemoryResult['steps'] = [];
  let calls = 0;
  for (const [i, load] of loads.entries()) {
    const cpu0 = (await allStats([server], false))[0]!.cpuMicros;
    const result = await load.request<LoadResult>({
      op: 'load',
      ...call,
      tokenSetId: 'cold',
      connectionKey: 'memory',
      connections: 1,
      mode: 'closed',
      concurrency,
      rate: 0,
      durationMs: 120_000,
      maxCalls: MEMORY_TOKENS / loads.length,
    });
    const after = (await allStats([server], true))[0]!;
    calls += result.calls;
    if (result.outcomes.message !== result.calls) throw new Error(`memory check: calls failed: ${JSON.stringify(result.outcomes)}`);
    steps.push({
      distinctTokens: calls,
      heapUsedMiB: after.heapUsedBytes / 2 ** 20,
      rssMiB: after.rssBytes / 2 ** 20,
      callsPerSecond: (result.calls / result.elapsedMs) * 1000,
      cpuSecondsPer1k: ((after.cpuMicros - cpu0) / 1e6 / result.calls) * 1000,
    });
    log(`memory check: ${calls} distinct tokens, heap ${steps[i]!.heapUsedMiB.toFixed(1)} MiB`);
  }
  return { heapBeforeMiB: before.heapUsedBytes / 2 ** 20, rssBeforeMiB: before.rssBytes / 2 ** 20, steps };
}

function summarize(scenarios: Scenario[], results: Map<string, RoundResult[]>, peakRss: Map<string, number>): ScenarioSummary[] {
  const a = results.get('A')!;
  return scenarios.map((s) => {
    const rs = results.get(s.id)!;
    // Ratios per round, then the median: each round's pair ran minutes apart at most, not a whole run.
    const perRound = (f: (r: RoundResult) => number): number[] => rs.map(f);
    return {
      id: s.id,
      label: s.label,
      callsPerSecond: median(perRound((r) => r.callsPerSecond)),
      openLatencyMs: {
        p50: median(perRound((r) => r.open.latencyMs.p50)),
        p90: median(perRound((r) => r.open.latencyMs.p90)),
        p99: median(perRound((r) => r.open.latencyMs.p99)),
      },
      closedLatencyMs: {
        p50: median(perRound((r) => r.closed.latencyMs.p50)),
        p90: median(perRound((r) => r.closed.latencyMs.p90)),
        p99: median(perRound((r) => r.closed.latencyMs.p99)),
      },
      cpuSecondsPer1k: median(perRound((r) => r.cpuSecondsPer1k)),
      cpuSecondsPer1kMin: Math.min(...perRound((r) => r.cpuSecondsPer1k)),
      cpuSecondsPer1kOpen: median(perRound((r) => r.cpuSecondsPer1kOpen)),
      serverCoreUse: median(perRound((r) => r.serverCoreUse)),
      loadCoreUse: median(perRound((r) => r.closed.loadCoreUse)),
      peakRssMiB: peakRss.get(s.id) ?? Number.NaN,
      ratioToA: {
        callsPerSecond: median(rs.map((r, i) => r.callsPerSecond / a[i]!.callsPerSecond)),
        cpuSecondsPer1k: median(rs.map((r, i) => r.cpuSecondsPer1k / a[i]!.cpuSecondsPer1k)),
        openP99DeltaMs: median(rs.map((r, i) => r.open.latencyMs.p99 - a[i]!.open.latencyMs.p99)),
      },
      rounds: rs.map((r) => ({ callsPerSecond: r.callsPerSecond, cpuSecondsPer1k: r.cpuSecondsPer1k, openP99: r.open.latencyMs.p99 })),
    };
  });
}

async function main(): Promise<void> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'twokey-bench-'));
  const children: Child[] = [];
  let meshPath: MeshPath | undefined;
  let meshPgPath: MeshPath | undefined;
  let pgServer: PostgresServer | undefined;
  const fronts: NginxFront[] = [];
  try {
    log(`issuing certificates with twokey's CA in ${workDir}`);
    const pki = buildPki(workDir, LARGE_GRANTS);
    const signing = await generateSigningKey('bench-key-1');
    // Same kid, different key: a token the verifier must reject on its signature.
    const forger = await generateSigningKey('bench-key-1');
    const jwks = { keys: [signing.publicJwk] };
    const tokenSpec = (privateJwk: TokenSpec['privateJwk'], subjectPrefix: string): TokenSpec => ({
      privateJwk,
      issuer: ISSUER,
      audience: `spiffe://${TRUST_DOMAIN}`,
      scope: 'bench:echo images:read',
      clientId: `spiffe://${TRUST_DOMAIN}/ns/bench/sa/client-1`,
      subjectPrefix,
      ttlSeconds: 900,
    });
    const message = encodeEchoRequest(PAYLOAD_BYTES);
    const withMemory = !argv['skip-memory'];

    log('starting the load generator and servers');
    const loads = [new Child({ entry: path.join(here, 'load-process.ts'), label: 'load' })];
    if (withMemory) loads.push(new Child({ entry: path.join(here, 'load-process.ts'), label: 'load-2' }));
    children.push(...loads);
    const load = loads[0]!;
    const minted = Promise.all([
      load.request({ op: 'mint', setId: 'one', spec: tokenSpec(signing.privateJwk, 'alice'), count: 1 }),
      load.request({ op: 'mint', setId: 'forged', spec: tokenSpec(forger.privateJwk, 'mallory'), count: 1 }),
      load.request({ op: 'mint', setId: 'many', spec: tokenSpec(signing.privateJwk, 'user'), count: C_TOKENS }),
      ...loads.map((l, i) =>
        l.request({ op: 'mint', setId: 'cold', spec: tokenSpec(signing.privateJwk, `cold${i}x`), count: MEMORY_TOKENS / loads.length }),
      ),
    ]);
    const servers = await startServers(pki, jwks, withMemory);
    children.push(...servers.children.values());
    await minted;
    log(`servers up; tokens minted (1 + ${C_TOKENS} + ${withMemory ? MEMORY_TOKENS : 0} distinct)`);

    const scenarios = buildScenarios(pki, servers, message);
    if (frontSkipped !== undefined) log(`G skipped: ${frontSkipped}`);
    if (frontWanted) {
      log('starting nginx in front of the backend (with and without auth_request to the authorizer)');
      const nextPort = freePortSource();
      const backendPort = portOf(servers.children.get('G-backend')!, servers.ports);
      const authorizerPort = portOf(servers.children.get('G-authorizer')!, servers.ports);
      const withAuth = await startNginxFront({ label: 'nginx G', runtimeDir: path.join(workDir, 'nginx-g'), port: await nextPort(), backendPort, svidDir: pki.proxy, authorizerPort, service: ECHO_SERVER_ID });
      fronts.push(withAuth);
      const localPort = portOf(servers.children.get('G-authorizer-local')!, servers.ports);
      const withLocal = await startNginxFront({ label: 'nginx G-local', runtimeDir: path.join(workDir, 'nginx-g-local'), port: await nextPort(), backendPort, svidDir: pki.proxy, authorizerPort: localPort, authorizerLocal: true, service: ECHO_SERVER_ID });
      fronts.push(withLocal);
      const hopOnly = await startNginxFront({ label: 'nginx G-hop', runtimeDir: path.join(workDir, 'nginx-hop'), port: await nextPort(), backendPort, svidDir: pki.proxy, authorizerPort: undefined, service: ECHO_SERVER_ID });
      fronts.push(hopOnly);
      const after = scenarios.findIndex((x) => x.id.startsWith('F'));
      scenarios.splice(after === -1 ? scenarios.length : after, 0, ...buildFrontScenarios(pki, servers, withAuth, withLocal, hopOnly, message));
    }
    if (!argv['skip-mesh'] && (only === undefined || only.has('E'))) {
      log('starting the example mesh (as npm start does)');
      meshPath = await startMeshPath(path.join(workDir, 'mesh'), profiled.has('E') ? path.join(profileDir, 'E') : undefined);
      await load.request({ op: 'tokens', setId: 'mesh-user', tokens: [meshPath.token] });
      const e: Scenario = {
        id: 'E',
        label: `real mesh: gateway -> image-store GetImage (${meshPath.imageBytes}-byte image; open loop at ${MESH_RATE}/s)`,
        servers: meshPath.servers,
        call: { target: meshPath.target, path: GET_IMAGE_METHOD, message: meshPath.message, tokenSetId: 'mesh-user' },
        connections: 1,
        concurrency,
        reconnectEachRound: false,
        expect: { shape: 'message', code: 0 },
        openRate: MESH_RATE,
      };
      const after = scenarios.findIndex((s) => s.id.startsWith('F'));
      scenarios.splice(after === -1 ? scenarios.length : after, 0, e);
    }
    // E again with auth, image-store and tagging on a throwaway PostgreSQL server, in the same run.
    if (!argv['skip-mesh'] && (only === undefined || only.has('E-pg'))) {
      const reason = postgresUnavailableReason();
      if (reason !== undefined) log(`E-pg skipped: ${reason}`);
      else {
        log('starting a PostgreSQL server and the example mesh on it');
        pgServer = await PostgresServer.start();
        const database = await pgServer.createDatabase('bench');
        meshPgPath = await startMeshPath(path.join(workDir, 'mesh-pg'), undefined, {
          TWOKEY_DATABASE_URL: pgServer.urlWithoutPassword(database),
          TWOKEY_DATABASE_PASSWORD_FILE: pgServer.passwordFile,
        });
        await load.request({ op: 'tokens', setId: 'mesh-pg-user', tokens: [meshPgPath.token] });
        const ePg: Scenario = {
          id: 'E-pg',
          label: `real mesh on PostgreSQL: gateway -> image-store GetImage (${meshPgPath.imageBytes}-byte image; open loop at ${MESH_RATE}/s)`,
          servers: meshPgPath.servers,
          call: { target: meshPgPath.target, path: GET_IMAGE_METHOD, message: meshPgPath.message, tokenSetId: 'mesh-pg-user' },
          connections: 1,
          concurrency,
          reconnectEachRound: false,
          expect: { shape: 'message', code: 0 },
          openRate: MESH_RATE,
        };
        const afterE = scenarios.findIndex((s) => s.id === 'E');
        const beforeF = scenarios.findIndex((s) => s.id.startsWith('F'));
        scenarios.splice(afterE !== -1 ? afterE + 1 : beforeF === -1 ? scenarios.length : beforeF, 0, ePg);
      }
    }
    for (const s of scenarios) await probeScenario(load, s);
    log('every scenario answers with its expected status');

    // C measures steady state with 10,000 users: each token is verified once, before measuring.
    const c = scenarios.find((s) => s.id === 'C');
    if (c !== undefined) {
      await load.request({ op: 'load', ...c.call, connectionKey: 'C/prime', connections: 1, mode: 'closed', concurrency, rate: 0, durationMs: 60_000, maxCalls: C_TOKENS });
      await load.request({ op: 'close', prefix: 'C/prime' });
    }

    for (const s of scenarios) await warmUp(load, s, WARM_UP_MS);
    log('warmed up');
    const results = new Map<string, RoundResult[]>(scenarios.map((s) => [s.id, []]));
    for (let round = 0; round < rounds; round += 1) {
      // Rotated each round, so no scenario always runs first or right after a heavy one.
      const order = scenarios.map((_, i) => scenarios[(i + round * 3) % scenarios.length]!);
      for (const s of order) results.get(s.id)!.push(await runRound(load, s, timing, round));
      log(`round ${round + 1}/${rounds} done`);
    }
    await load.request({ op: 'close', prefix: '' });

    const peakRss = new Map<string, number>();
    for (const s of scenarios) {
      const stats = await allStats(s.servers, false);
      peakRss.set(s.id, stats.reduce((sum, x) => sum + x.peakRssBytes, 0) / 2 ** 20);
    }
    // In this process while no load runs: nothing else of the benchmark competes for the CPU.
    const decisionCost = measureDecisionCost(
      [
        { grants: 1, dir: pki.clientOneGrant },
        { grants: 100, dir: pki.clientGrants100 },
        { grants: LARGE_GRANTS, dir: pki.clientGrantsLarge },
        { grants: 10_000, dir: pki.clientGrants10000 },
      ],
      TRUST_DOMAIN,
    );
    let memory: MemoryResult | undefined;
    if (withMemory) {
      const m = servers.children.get('M')!;
      memory = await memoryCheck(loads, m, portOf(m, servers.ports), pki, message);
    }

    const summaries = summarize(scenarios, results, peakRss);
    const leak = (results.get('F-c1000') ?? []).map((r) => (r.heapAfterRoundBytes ?? Number.NaN) / 2 ** 20);
    const targets = evaluateTargets(summaries, leak, memory, decisionCost);
    const machine = `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`;
    const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
    const loadAverage = `load average ${loadAtStart.toFixed(1)} at start, ${os.loadavg()[0]!.toFixed(1)} at end`;
    const subtitle = `${machine} (${loadAverage}); ${rounds} rounds, medians; closed loop ${concurrency} in flight; open loop ${timing.rate} calls/s; ${PAYLOAD_BYTES}-byte messages`;
    const table = renderTable(summaries, timing.rate);
    const targetTable = renderTargets(targets);
    const elapsedS = (performance.now() - startedAt) / 1000;

    process.stdout.write(`\n${subtitle}\n\n${table}\n\n${targetTable}\n`);
    if (memory !== undefined) {
      process.stdout.write(
        `\nmemory with ${MEMORY_TOKENS.toLocaleString('en')} distinct tokens: heap ${memory.heapBeforeMiB.toFixed(1)} MiB before, ${memory.steps
          .map((s) => `${s.heapUsedMiB.toFixed(1)} MiB after ${s.distinctTokens.toLocaleString('en')}`)
          .join(', ')}; first-sight verification ${memory.steps.map((s) => s.callsPerSecond.toFixed(0)).join(' / ')} calls/s\n`,
      );
    }
    process.stdout.write(
      `decision cost by grants (in-process, best of 5): ${decisionCost
        .map((d) => `${d.grants.toLocaleString('en')}: decide() ${d.decideNanos.toFixed(0)} ns/call, certificate parse ${d.parseMicros.toFixed(0)} us/connection`)
        .join('; ')}\n`,
    );
    process.stdout.write(`F-c1000 server heap after each round's 1,000 connections closed: ${leak.map((v) => v.toFixed(1)).join(', ')} MiB\n`);
    process.stdout.write(`\n${command} took ${elapsedS.toFixed(0)} s\n`);

    const resultsDir = path.join(here, 'results');
    fs.mkdirSync(resultsDir, { recursive: true });
    const json = {
      date: new Date().toISOString(),
      command,
      machine,
      elapsedSeconds: elapsedS,
      settings: { rounds, ...timing, concurrency, payloadBytes: PAYLOAD_BYTES, cTokens: C_TOKENS, memoryTokens: MEMORY_TOKENS },
      scenarios: summaries,
      targets,
      memory,
      decisionCost,
      connectionLeakHeapMiB: leak,
    };
    fs.writeFileSync(path.join(resultsDir, 'latest.json'), `${JSON.stringify(json, null, 2)}\n`);
    const svg = renderSvg(summaries, timing.rate, subtitle);
    fs.writeFileSync(path.join(resultsDir, 'latest.svg'), svg);
    if (argv.publish) {
      fs.writeFileSync(path.join(here, 'latest.svg'), svg);
      fs.writeFileSync(path.join(here, 'latest.md'), `${subtitle}\n\n${table}\n\n${targetTable}\n\n\`${command}\`, ${elapsedS.toFixed(0)} s\n`);
    }
    log(`wrote ${path.relative(process.cwd(), path.join(resultsDir, 'latest.json'))} and latest.svg`);
    // The profiles are written as each process exits. The main thread's profile is the largest
    // one of its process (tsx's loader thread writes a small one); start-up is left out.
    const profiles: Array<{ label: string; dir: string; pid?: number; skipMs: number }> = [];
    for (const id of profiled) {
      const server = servers.children.get(id);
      if (server === undefined) continue;
      await server.stop();
      profiles.push({ label: `server ${id}`, dir: path.join(profileDir, id), skipMs: (servers.startupMs.get(server) ?? 0) + 500 });
    }
    if (profiled.has('E') && meshPath !== undefined) {
      await meshPath.stop();
      const { gateway, imageStore } = meshPath.pids;
      meshPath = undefined;
      profiles.push({ label: 'E gateway', dir: path.join(profileDir, 'E'), pid: gateway, skipMs: MESH_PROFILE_SKIP_MS });
      profiles.push({ label: 'E image-store', dir: path.join(profileDir, 'E'), pid: imageStore, skipMs: MESH_PROFILE_SKIP_MS });
    }
    for (const p of profiles) {
      const file = fs
        .readdirSync(p.dir)
        .filter((name) => name.endsWith('.cpuprofile') && (p.pid === undefined || name.includes(`.${p.pid}.`)))
        .map((name) => path.join(p.dir, name))
        .sort((x, y) => fs.statSync(y).size - fs.statSync(x).size)[0];
      if (file === undefined) throw new Error(`no profile for ${p.label} in ${p.dir}`);
      const summary = summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')), 25, p.skipMs);
      fs.writeFileSync(`${file.replace(/\.cpuprofile$/, '')}.txt`, `${summary}\n`);
      process.stdout.write(`\n${p.label} profile (${path.relative(process.cwd(), file)}):\n${summary}\n`);
    }
  } finally {
    await Promise.all([...children.map((c) => c.stop()), meshPath?.stop(), meshPgPath?.stop(), ...fronts.map((f) => f.stop())]);
    await pgServer?.stop();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
