// Measures what twokey's authorization adds per call: the same unary call against plain grpc-js mTLS and a mesh server.
// Usage: npx tsx scripts/measure-interceptor.ts [--calls N] [--concurrency C] [--rounds R]
//
// Each variant runs in its own child process (AsyncLocalStorage, which the mesh server's call
// context uses, installs process-wide async hooks, so a baseline sharing a process with it would be
// charged for it too); variants alternate round by round so machine noise spreads evenly.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { pino } from 'pino';
import { CertificateAuthority } from '../certs-ca/index.ts';
import { StaticKeys } from '../services/authz/jwks.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { SvidSource } from '../services/authz/rotation.ts';
import { createMeshServer } from '../services/authz/server.ts';

const VARIANTS = {
  plain: 'plain grpc-js mTLS',
  'twokey-nolog': 'twokey (decision log off)',
  'twokey-log': 'twokey (decision log on)',
} as const;
type Variant = keyof typeof VARIANTS;

const { values } = parseArgs({
  options: { calls: { type: 'string' }, concurrency: { type: 'string' }, rounds: { type: 'string' }, variant: { type: 'string' } },
});
const CALLS = Math.min(Number(values.calls ?? 2000), 50_000);
const CONCURRENCY = Math.min(Number(values.concurrency ?? 16), 256);
const ROUNDS = Math.min(Number(values.rounds ?? 3), 10);
const TD = 'twokey.local';
const ISSUER = 'https://auth.twokey.local';
const GET = '/twokey.images.v1.ImageStore/GetImage';

interface Sample {
  latencies: number[];
  rps: number;
  cpuUs: number;
}

/** One variant in this process: a server, one client, warm-up, then sequential and concurrent calls. */
async function measure(variant: Variant): Promise<Sample> {
  const root = mkdtempSync(join(tmpdir(), 'twokey-measure-'));
  try {
    const ca = CertificateAuthority.init({ dir: join(root, 'ca'), trustDomain: TD });
    const serverDir = join(root, 'server');
    ca.writeWorkload(serverDir, ca.issue({ spiffeId: `spiffe://${TD}/ns/bench/sa/image-store`, grants: [], ttl: '1h', dns: ['localhost'], ip: ['127.0.0.1'] }));
    const client = ca.issue({ spiffeId: `spiffe://${TD}/ns/bench/sa/gateway`, grants: [GET], ttl: '1h' });

    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const iat = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ iss: ISSUER, sub: 'alice', aud: `spiffe://${TD}`, iat, exp: iat + 900, jti: randomBytes(16).toString('base64url'), scope: 'images:read', token_kind: 'user' })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
      .sign(privateKey);

    const ImageStore = (grpc.loadPackageDefinition(MethodCatalog.default().definition) as any).twokey.images.v1.ImageStore as grpc.ServiceClientConstructor;
    const image = { id: 'img-1', owner: 'alice', name: 'x.jpg', content_type: 'image/jpeg', tags: [], created_at_ms: '0', updated_at_ms: '0', size_bytes: '0' };
    const impl = { GetImage: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, image) };
    const svid = await SvidSource.open(serverDir, { trustDomain: TD, pollIntervalMs: 0 });

    let port: number;
    let close: () => Promise<void>;
    if (variant === 'plain') {
      // Client certificates required and verified against the bundle; no authorization.
      const m = svid.material;
      const server = new grpc.Server();
      server.addService(ImageStore.service, impl);
      port = await new Promise<number>((res, rej) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(m.bundlePem, [{ private_key: m.keyPem, cert_chain: m.chainPem }], true), (e, p) => (e ? rej(e) : res(p))));
      close = async () => void server.forceShutdown();
    } else {
      const mesh = createMeshServer({
        svid,
        keys: await StaticKeys.fromJwks({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }),
        issuer: ISSUER,
        // Decision lines go to /dev/null synchronously, so their formatting and write cost counts.
        ...(variant === 'twokey-log' ? { logger: pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true })) } : {}),
      });
      mesh.server.addService(ImageStore.service, impl);
      port = await mesh.listen('127.0.0.1:0');
      close = () => mesh.close(200);
    }

    // The same plain grpc-js client for every variant, token in metadata.
    const creds = grpc.credentials.createSsl(Buffer.from(client.bundlePem), Buffer.from(client.keyPem), Buffer.from(client.chainPem), { checkServerIdentity: () => undefined });
    const c = new ImageStore(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': 'localhost' }) as any;
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const once = () => new Promise<void>((res, rej) => c.GetImage({ id: 'img-1' }, md, (err: Error | null) => (err ? rej(err) : res())));

    for (let i = 0; i < 500; i++) await once(); // connection, JIT, token cache
    const latencies: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const t = process.hrtime.bigint();
      await once();
      latencies.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    // CPU time of this process per call: client and server both live here and the client side is
    // the same in every variant, so the difference is the server's extra work. It is far less
    // disturbed than wall time by other load on the machine.
    const t = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < CALLS) await once();
    }));
    const used = process.cpuUsage(cpu);
    const rps = CALLS / (Number(process.hrtime.bigint() - t) / 1e9);
    c.close();
    await close();
    svid.close();
    return { latencies, rps, cpuUs: (used.user + used.system) / CALLS };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

function child(variant: Variant): Promise<Sample> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [...process.execArgv, self, '--variant', variant, '--calls', String(CALLS), '--concurrency', String(CONCURRENCY)], { timeout: 120_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${variant}: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout) as Sample)));
}

if (values.variant !== undefined) {
  if (!(values.variant in VARIANTS)) throw new Error(`unknown variant ${values.variant}`);
  process.stdout.write(JSON.stringify(await measure(values.variant as Variant)));
} else {
  const names = Object.keys(VARIANTS) as Variant[];
  const samples = new Map<Variant, Sample[]>(names.map((n) => [n, []]));
  for (let r = 0; r < ROUNDS; r++) for (const n of names) samples.get(n)!.push(await child(n));
  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const stats = (n: Variant) => {
    const s = samples.get(n)!;
    const lat = s.flatMap((x) => x.latencies);
    return { p50: pct(lat, 0.5), p99: pct(lat, 0.99), rps: pct(s.map((x) => x.rps), 0.5), cpu: pct(s.map((x) => x.cpuUs), 0.5) };
  };
  const base = stats('plain');
  console.log(`node ${process.version}; per variant and round: ${CALLS} sequential calls, then ${CALLS} at concurrency ${CONCURRENCY}; ${ROUNDS} rounds, medians`);
  console.log('variant                      p50 us   p99 us  +p50 us   calls/s  vs plain  CPU us/call  +CPU us');
  for (const n of names) {
    const s = stats(n);
    console.log([
      VARIANTS[n].padEnd(27),
      s.p50.toFixed(1).padStart(7),
      s.p99.toFixed(1).padStart(8),
      (s.p50 - base.p50).toFixed(1).padStart(8),
      s.rps.toFixed(0).padStart(9),
      `${((s.rps / base.rps - 1) * 100).toFixed(1)}%`.padStart(9),
      s.cpu.toFixed(1).padStart(12),
      (s.cpu - base.cpu).toFixed(1).padStart(8),
    ].join(' '));
  }
}
