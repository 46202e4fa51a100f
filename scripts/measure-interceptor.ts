// Measures what twokey's authorization adds per call: the same unary call against plain grpc-js mTLS and a mesh server.
// Usage: npx tsx scripts/measure-interceptor.ts [--calls N] [--concurrency C] [--rounds R]
//
// Each server variant runs in its own child process, so its CPU time is its own (the call context
// uses AsyncLocalStorage, whose async hooks are process-wide) and the client, in this process, is
// the same for every variant. Variants alternate round by round so machine noise spreads evenly.
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { pino } from 'pino';
import { CertificateAuthority } from '../certs-ca/index.ts';
import { X509Certificate } from 'node:crypto';
import { DecisionLog } from '../services/authz/decision-log.ts';
import { createAuthzInterceptor } from '../services/authz/interceptor.ts';
import { StaticKeys } from '../services/authz/jwks.ts';
import { PeerIdentityCache } from '../services/authz/peer-identity.ts';
import { TokenAuthenticator } from '../services/authz/token-authenticator.ts';
import { TokenVerifier } from '../services/authz/token-verifier.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { SvidSource } from '../services/authz/svid-source.ts';
import { createMeshServer } from '../services/authz/server.ts';

const VARIANTS = {
  plain: 'plain grpc-js mTLS',
  'plain-als': 'plain + AsyncLocalStorage on',
  'twokey-nolog': 'twokey (decision log off)',
  'twokey-log': 'twokey (decision log on)',
} as const;
type Variant = keyof typeof VARIANTS;

const { values } = parseArgs({
  options: {
    calls: { type: 'string' }, concurrency: { type: 'string' }, rounds: { type: 'string' },
    serve: { type: 'string' }, dir: { type: 'string' }, alone: { type: 'boolean' },
  },
});
const CALLS = Math.min(Number(values.calls ?? 2000), 50_000);
const CONCURRENCY = Math.min(Number(values.concurrency ?? 16), 256);
const ROUNDS = Math.min(Number(values.rounds ?? 3), 10);
const TD = 'twokey.local';
const ISSUER = 'https://auth.twokey.local';
const GET = '/twokey.images.v1.ImageStore/GetImage';

function imageStore(): grpc.ServiceClientConstructor {
  return (grpc.loadPackageDefinition(MethodCatalog.default().definition) as any).twokey.images.v1.ImageStore;
}

/** Child: one server variant; reports its port, then its CPU usage whenever asked. */
async function serve(variant: Variant, dir: string): Promise<void> {
  const ImageStore = imageStore();
  const image = { id: 'img-1', owner: 'alice', name: 'x.jpg', content_type: 'image/jpeg', tags: [], created_at_ms: '0', updated_at_ms: '0', size_bytes: '0' };
  const impl = { GetImage: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, image) };
  const svid = await SvidSource.open(join(dir, 'server'), { trustDomain: TD, pollIntervalMs: 0 });
  let port: number;
  if (variant === 'plain-als') {
    // What the call context alone costs: AsyncLocalStorage's hooks apply to every async resource
    // of the process once a store is entered.
    const { AsyncLocalStorage } = await import('node:async_hooks');
    new AsyncLocalStorage().enterWith({});
  }
  if (variant === 'plain' || variant === 'plain-als') {
    // Client certificates required and verified against the bundle; no authorization.
    const m = svid.material;
    const server = new grpc.Server();
    server.addService(ImageStore.service, impl);
    port = await new Promise<number>((res, rej) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(m.bundlePem, [{ private_key: m.keyPem, cert_chain: m.chainPem }], true), (e, p) => (e ? rej(e) : res(p))));
  } else {
    const mesh = createMeshServer({
      svid,
      keys: await StaticKeys.fromJwks(JSON.parse(await import('node:fs').then((fs) => fs.readFileSync(join(dir, 'jwks.json'), 'utf8')))),
      issuer: ISSUER,
      // Decision lines go to /dev/null synchronously, so their formatting and write cost counts.
      ...(variant === 'twokey-log' ? { logger: pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true })) } : {}),
    });
    mesh.server.addService(ImageStore.service, impl);
    port = await mesh.listen('127.0.0.1:0');
  }
  process.on('message', (msg) => {
    if (msg === 'cpu') process.send!({ cpu: process.cpuUsage() });
    // A normal exit (not a signal) lets --cpu-prof write its profile.
    if (msg === 'exit') process.exit(0);
  });
  process.send!({ port });
}

/**
 * Child: the interceptor alone, driven in-process through grpc-js's interceptor API with a stand-in
 * for grpc-js's own call (no sockets, so the peer comes from getAuthContext() keyed by the DER's
 * hash: slightly more work than the per-connection socket cache a real server uses). Reports us
 * per allowed call with a cached token, against a pass-through interceptor on the same harness.
 */
async function alone(dir: string): Promise<void> {
  const { readFileSync } = await import('node:fs');
  const token = readFileSync(join(dir, 'token'), 'utf8');
  const der = Buffer.from(new X509Certificate(readFileSync(join(dir, 'client.pem'))).raw);
  const keys = await StaticKeys.fromJwks(JSON.parse(readFileSync(join(dir, 'jwks.json'), 'utf8')));
  const tokens = new TokenAuthenticator({ verifier: new TokenVerifier({ keys, issuer: ISSUER, audiences: [`spiffe://${TD}`] }) });
  const methodDescriptor = { path: GET, requestStream: false, responseStream: false } as any;
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  let reached = 0;
  let denied = 0;
  const run = (interceptor: grpc.ServerInterceptor, n: number): number => {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      let listener: any;
      const base = {
        start: (l: any) => (listener = l), sendStatus: () => void denied++, sendMetadata: () => {}, sendMessage: () => {}, startRead: () => {},
        getPeer: () => 'bench', getDeadline: () => Infinity, getHost: () => 'bench', getConnectionInfo: () => ({}), getMetricsRecorder: () => undefined,
        getAuthContext: () => ({ transportSecurityType: 'ssl', sslPeerCertificate: { raw: der } }),
      } as any;
      interceptor(methodDescriptor, base).start({
        onReceiveMetadata: () => void reached++, onReceiveMessage: () => {}, onReceiveHalfClose: () => {}, onCancel: () => {},
      });
      listener.onReceiveMetadata(md);
      listener.onReceiveMessage({});
      listener.onReceiveHalfClose();
    }
    return Number(process.hrtime.bigint() - t) / 1000 / n;
  };
  const passThrough: grpc.ServerInterceptor = (_d, call) => new grpc.ServerInterceptingCall(call);
  const authz = createAuthzInterceptor({ trustDomain: TD, rules: MethodCatalog.default(), tokens, peers: new PeerIdentityCache() });
  const logged = createAuthzInterceptor({
    trustDomain: TD, rules: MethodCatalog.default(), tokens, peers: new PeerIdentityCache(),
    log: new DecisionLog(pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true }))),
  });
  // Fill the token cache, then let the JIT settle.
  tokens.fromMetadata(md);
  await new Promise((r) => setTimeout(r, 50));
  for (const i of [passThrough, authz, logged]) run(i, 5000);
  const results: Record<string, number[]> = { passThrough: [], authz: [], logged: [] };
  for (let r = 0; r < 5; r++) {
    results.passThrough!.push(run(passThrough, CALLS * 5));
    results.authz!.push(run(authz, CALLS * 5));
    results.logged!.push(run(logged, CALLS * 5));
  }
  if (denied !== 0 || reached === 0) throw new Error(`harness: ${denied} denied calls`);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  process.send!({ alone: { passThrough: median(results.passThrough!), authz: median(results.authz!), logged: median(results.logged!) } });
}

function ask<T>(child: ChildProcess, message: string | null, key: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: any) => {
      if (m && key in m) {
        child.off('message', onMessage);
        resolve(m[key] as T);
      }
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`server exited (${code})`)));
    if (message !== null) child.send(message);
  });
}

interface Sample {
  latencies: number[];
  rps: number;
  serverCpuUs: number;
}

async function measure(variant: Variant, dir: string, md: grpc.Metadata, creds: grpc.ChannelCredentials): Promise<Sample> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', variant, '--dir', dir], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    const port = await ask<number>(child, null, 'port');
    const c = new (imageStore())(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as any;
    const once = () => new Promise<void>((res, rej) => c.GetImage({ id: 'img-1' }, md, (err: Error | null) => (err ? rej(err) : res())));
    for (let i = 0; i < 500; i++) await once(); // connection, JIT, token cache
    const latencies: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const t = process.hrtime.bigint();
      await once();
      latencies.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    const before = await ask<NodeJS.CpuUsage>(child, 'cpu', 'cpu');
    const t = process.hrtime.bigint();
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < CALLS) await once();
    }));
    const rps = CALLS / (Number(process.hrtime.bigint() - t) / 1e9);
    const after = await ask<NodeJS.CpuUsage>(child, 'cpu', 'cpu');
    c.close();
    return { latencies, rps, serverCpuUs: (after.user - before.user + after.system - before.system) / CALLS };
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    if (child.connected) child.send('exit');
    const timer = setTimeout(() => child.kill(), 5000);
    await exited;
    clearTimeout(timer);
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'twokey-measure-'));
  try {
    const ca = CertificateAuthority.init({ dir: join(dir, 'ca'), trustDomain: TD });
    ca.writeWorkload(join(dir, 'server'), ca.issue({ spiffeId: `spiffe://${TD}/ns/bench/sa/image-store`, grants: [], ttl: '1h', dns: ['localhost'], ip: ['127.0.0.1'] }));
    const client = ca.issue({ spiffeId: `spiffe://${TD}/ns/bench/sa/gateway`, grants: [GET], ttl: '1h' });
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }));
    const iat = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ iss: ISSUER, sub: 'alice', aud: `spiffe://${TD}`, iat, exp: iat + 900, jti: randomBytes(16).toString('base64url'), scope: 'images:read', token_kind: 'user' })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
      .sign(privateKey);
    // The same plain grpc-js client for every variant, token in metadata.
    const creds = grpc.credentials.createSsl(Buffer.from(client.bundlePem), Buffer.from(client.keyPem), Buffer.from(client.chainPem), { checkServerIdentity: () => undefined });
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);

    writeFileSync(join(dir, 'token'), token);
    writeFileSync(join(dir, 'client.pem'), client.chainPem);
    const aloneChild = fork(fileURLToPath(import.meta.url), ['--alone', '--dir', dir, '--calls', String(CALLS)], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const single = await ask<{ passThrough: number; authz: number; logged: number }>(aloneChild, null, 'alone');
    await new Promise((resolve) => aloneChild.once('exit', resolve));

    const names = Object.keys(VARIANTS) as Variant[];
    const samples = new Map<Variant, Sample[]>(names.map((n) => [n, []]));
    for (let r = 0; r < ROUNDS; r++) for (const n of names) samples.get(n)!.push(await measure(n, dir, md, creds));

    const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
    const stats = (n: Variant) => {
      const s = samples.get(n)!;
      const lat = s.flatMap((x) => x.latencies);
      return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), rps: pct(s.map((x) => x.rps), 0.5), cpu: pct(s.map((x) => x.serverCpuUs), 0.5) };
    };
    const base = stats('plain');
    console.log(`node ${process.version}; per variant and round: ${CALLS} sequential calls (latency), then ${CALLS} at concurrency ${CONCURRENCY} (calls/s, server CPU); ${ROUNDS} rounds, medians`);
    console.log('variant                      p50 us   p99 us  +p50 us   calls/s  vs plain  server CPU us/call  +CPU us');
    for (const n of names) {
      const s = stats(n);
      console.log([
        VARIANTS[n].padEnd(27),
        s.p50.toFixed(1).padStart(7),
        s.p99.toFixed(1).padStart(8),
        (s.p50 - base.p50).toFixed(1).padStart(8),
        s.rps.toFixed(0).padStart(9),
        `${((s.rps / base.rps - 1) * 100).toFixed(1)}%`.padStart(9),
        s.cpu.toFixed(1).padStart(19),
        (s.cpu - base.cpu).toFixed(1).padStart(8),
      ].join(' '));
    }
    console.log(
      `interceptor alone, in-process (allowed call, cached token; ${CALLS * 5} calls x 5, median): ` +
        `pass-through ${single.passThrough.toFixed(2)} us, twokey ${single.authz.toFixed(2)} us (+${(single.authz - single.passThrough).toFixed(2)}), ` +
        `with decision log ${single.logged.toFixed(2)} us (+${(single.logged - single.passThrough).toFixed(2)})`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.alone === true) {
  if (values.dir === undefined) throw new Error('--alone --dir DIR');
  await alone(values.dir);
} else if (values.serve !== undefined) {
  if (!(values.serve in VARIANTS) || values.dir === undefined) throw new Error('--serve VARIANT --dir DIR');
  await serve(values.serve as Variant, values.dir);
} else {
  await main();
}
