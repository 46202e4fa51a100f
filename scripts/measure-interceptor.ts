// Measures what twokey's authorization adds per call: the same unary call against plain grpc-js mTLS and a mesh server.
// Usage: npx tsx scripts/measure-interceptor.ts [--calls N] [--concurrency C]
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { pino } from 'pino';
import { CertificateAuthority } from '../certs-ca/index.ts';
import { StaticKeys } from '../services/authz/jwks.ts';
import { MethodCatalog } from '../services/authz/method-catalog.ts';
import { SvidSource } from '../services/authz/rotation.ts';
import { createMeshServer } from '../services/authz/server.ts';

const { values } = parseArgs({ options: { calls: { type: 'string' }, concurrency: { type: 'string' }, rounds: { type: 'string' } } });
const CALLS = Math.min(Number(values.calls ?? 3000), 50_000);
const CONCURRENCY = Math.min(Number(values.concurrency ?? 16), 256);
const ROUNDS = Math.min(Number(values.rounds ?? 3), 10);
const TD = 'twokey.local';
const ISSUER = 'https://auth.twokey.local';
const GET = '/twokey.images.v1.ImageStore/GetImage';

const root = mkdtempSync(join(tmpdir(), 'twokey-measure-'));
try {
  const ca = CertificateAuthority.init({ dir: join(root, 'ca'), trustDomain: TD });
  const serverDir = join(root, 'server');
  const clientDir = join(root, 'client');
  ca.writeWorkload(serverDir, ca.issue({ spiffeId: `spiffe://${TD}/ns/bench/sa/image-store`, grants: [], ttl: '1h', dns: ['localhost'], ip: ['127.0.0.1'] }));
  const clientIssued = ca.issue({ spiffeId: `spiffe://${TD}/ns/bench/sa/gateway`, grants: [GET], ttl: '1h' });
  ca.writeWorkload(clientDir, clientIssued);

  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const keys = await StaticKeys.fromJwks({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] });
  const iat = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ iss: ISSUER, sub: 'alice', aud: `spiffe://${TD}`, iat, exp: iat + 900, jti: randomBytes(16).toString('base64url'), scope: 'images:read', token_kind: 'user' })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
    .sign(privateKey);

  const catalog = MethodCatalog.default();
  const ImageStore = (grpc.loadPackageDefinition(catalog.definition) as any).twokey.images.v1.ImageStore as grpc.ServiceClientConstructor;
  const image = { id: 'img-1', owner: 'alice', name: 'x.jpg', content_type: 'image/jpeg', tags: [], created_at_ms: '0', updated_at_ms: '0', size_bytes: '0' };
  const impl = { GetImage: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, image) };

  const serverSvid = await SvidSource.open(serverDir, { trustDomain: TD, pollIntervalMs: 0 });
  const material = serverSvid.material;

  // Plain grpc-js mTLS: client certificates required and verified, no authorization.
  const plain = new grpc.Server();
  plain.addService(ImageStore.service, impl);
  const plainPort = await new Promise<number>((res, rej) =>
    plain.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createSsl(material.bundlePem, [{ private_key: material.keyPem, cert_chain: material.chainPem }], true), (e, p) => (e ? rej(e) : res(p))));

  const variants: Array<{ name: string; port: number; close: () => Promise<void> }> = [{ name: 'plain grpc-js mTLS', port: plainPort, close: async () => void plain.forceShutdown() }];
  for (const logged of [false, true]) {
    const mesh = createMeshServer({
      svid: serverSvid,
      keys,
      issuer: ISSUER,
      // Decision lines go to /dev/null synchronously, so their formatting cost is counted.
      ...(logged ? { logger: pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true })) } : {}),
    });
    mesh.server.addService(ImageStore.service, impl);
    variants.push({ name: logged ? 'twokey (decision log on)' : 'twokey (decision log off)', port: await mesh.listen('127.0.0.1:0'), close: () => mesh.close(200) });
  }

  // The same client for every variant: plain grpc-js mTLS with the bearer token in metadata.
  const clientCreds = grpc.credentials.createSsl(Buffer.from(clientIssued.bundlePem), Buffer.from(clientIssued.keyPem), Buffer.from(clientIssued.chainPem), { checkServerIdentity: () => undefined });
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);

  const clients = variants.map((v) => new ImageStore(`127.0.0.1:${v.port}`, clientCreds, { 'grpc.ssl_target_name_override': 'localhost' }) as any);
  const once = (c: any) =>
    new Promise<void>((res, rej) => c.GetImage({ id: 'img-1' }, md, (err: Error | null) => (err ? rej(err) : res())));

  async function sequential(c: any, n: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = process.hrtime.bigint();
      await once(c);
      out.push(Number(process.hrtime.bigint() - t) / 1000);
    }
    return out;
  }
  // Calls per second, and this process's CPU time per call (client and server both live here and
  // the client side is identical across variants, so the difference is the server's extra work;
  // CPU time is far less disturbed than wall time by other load on the machine).
  async function concurrent(c: any, n: number): Promise<{ rps: number; cpuUs: number }> {
    const t = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next++ < n) await once(c);
    }));
    const used = process.cpuUsage(cpu);
    return { rps: n / (Number(process.hrtime.bigint() - t) / 1e9), cpuUs: (used.user + used.system) / n };
  }

  for (const c of clients) await sequential(c, 300); // warm-up: connections, JIT, token cache
  const lat: number[][] = variants.map(() => []);
  const rps: number[][] = variants.map(() => []);
  const cpu: number[][] = variants.map(() => []);
  // Variants interleave round by round so machine noise spreads evenly across them.
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, c] of clients.entries()) lat[i]!.push(...(await sequential(c, Math.floor(CALLS / ROUNDS))));
    for (const [i, c] of clients.entries()) {
      const m = await concurrent(c, Math.floor(CALLS / ROUNDS));
      rps[i]!.push(m.rps);
      cpu[i]!.push(m.cpuUs);
    }
  }
  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const median = (xs: number[]) => pct(xs, 0.5);
  const base = { p50: median(lat[0]!), rps: median(rps[0]!), cpu: median(cpu[0]!) };
  console.log(`node ${process.version}, ${CALLS} sequential calls and ${CALLS} calls at concurrency ${CONCURRENCY} per variant, ${ROUNDS} interleaved rounds`);
  console.log('variant                      p50 us   mean us   p99 us   +p50 us  calls/s (conc)  vs plain  CPU us/call  +CPU us');
  for (const [i, v] of variants.entries()) {
    const l = lat[i]!;
    const row = [
      v.name.padEnd(27),
      median(l).toFixed(1).padStart(7),
      mean(l).toFixed(1).padStart(9),
      pct(l, 0.99).toFixed(1).padStart(8),
      (median(l) - base.p50).toFixed(1).padStart(9),
      median(rps[i]!).toFixed(0).padStart(15),
      `${((median(rps[i]!) / base.rps - 1) * 100).toFixed(1)}%`.padStart(9),
      median(cpu[i]!).toFixed(1).padStart(12),
      (median(cpu[i]!) - base.cpu).toFixed(1).padStart(8),
    ];
    console.log(row.join(' '));
  }
  for (const c of clients) c.close();
  for (const v of variants) await v.close();
  serverSvid.close();
} finally {
  rmSync(root, { recursive: true, force: true });
}
