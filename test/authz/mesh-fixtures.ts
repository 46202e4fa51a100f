// A real little mesh for tests: a CA in a temp dir, workload certificate dirs, and a Probe service on loopback.
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import * as builder from '../../certs-ca/certificate-builder.ts';
import { CertificateAuthority, type IssuedWorkload } from '../../certs-ca/index.ts';
import { caSubject } from '../../certs-ca/svid-profile.ts';
import { callContext } from '../../services/authz/call-context.ts';
import { createMeshClient } from '../../services/authz/client.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { StaticKeys } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import { createMeshServer, type MeshServer, type MeshServerOptions } from '../../services/authz/server.ts';
import type { VerificationKeys } from '../../services/authz/token-verifier.ts';
import { ISSUER, TestIssuer } from './token-fixtures.ts';

export const TD = 'twokey.local';
export const PROBE_ROOT = fileURLToPath(new URL('./fixtures/proto', import.meta.url));
export const P = '/twokey.testing.v1.Probe';
export const SERVER_ID = `spiffe://${TD}/ns/test/sa/probe`;
export const CALLER_ID = `spiffe://${TD}/ns/test/sa/caller`;

let catalog: MethodCatalog | undefined;
export function probeCatalog(): MethodCatalog {
  catalog ??= MethodCatalog.load({ extraRoots: [PROBE_ROOT] });
  return catalog;
}

export type ProbeClient = grpc.Client & Record<string, (...args: any[]) => any>;
export function probeClientCtor(): grpc.ServiceClientConstructor {
  const pkg = grpc.loadPackageDefinition(probeCatalog().definition) as any;
  return pkg.twokey.testing.v1.Probe as grpc.ServiceClientConstructor;
}

/** A CA and workload directories under one temp root, removed by cleanup(). */
export class TestPki {
  readonly root: string;
  readonly ca: CertificateAuthority;

  private constructor(root: string, ca: CertificateAuthority) {
    this.root = root;
    this.ca = ca;
  }

  static create(trustDomain = TD, root = mkdtempSync(join(tmpdir(), 'twokey-authz-'))): TestPki {
    return new TestPki(root, CertificateAuthority.init({ dir: join(root, `ca-${randomBytes(4).toString('hex')}`), trustDomain }));
  }

  /** Issues a workload certificate through the CA and writes svid.pem, svid.key, bundle.pem. */
  workload(name: string, spiffeId: string, grants: readonly string[], ttl: number | string = '1h'): string {
    const dir = join(this.root, name);
    this.ca.writeWorkload(dir, this.issue(spiffeId, grants, ttl));
    return dir;
  }

  issue(spiffeId: string, grants: readonly string[], ttl: number | string = '1h'): IssuedWorkload {
    return this.ca.issue({ spiffeId, grants, ttl, dns: ['localhost'], ip: ['127.0.0.1'], extraProtoRoots: [PROBE_ROOT] });
  }

  /**
   * A certificate the CA would refuse to issue (CA=true, two URI SANs, another trust domain,
   * expired), signed with the CA's key so that TLS accepts the chain and twokey must refuse it.
   */
  forged(name: string, opts: { uris: string[]; ca?: boolean; notAfter?: Date; notBefore?: Date; grants?: string[] }): string {
    const dir = join(this.root, name);
    const keys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const caKey = createPrivateKey(readFileSync(join(this.ca.dir, 'ca.key')));
    const now = Date.now();
    const cert = builder.buildCertificate(
      {
        serial: builder.randomSerial(randomBytes),
        issuer: caSubject(this.ca.trustDomain),
        subject: [['O', 'twokey']],
        notBefore: opts.notBefore ?? new Date(now - 60_000),
        notAfter: opts.notAfter ?? new Date(now + 3600_000),
        publicKey: keys.publicKey,
        extensions: [
          builder.basicConstraints({ ca: opts.ca ?? false }),
          builder.keyUsage(opts.ca ? ['digitalSignature', 'keyCertSign'] : ['digitalSignature']),
          builder.extKeyUsage([builder.OID.serverAuth, builder.OID.clientAuth]),
          builder.subjectAltName({ uris: opts.uris }),
          builder.authorityKeyIdentifier(builder.keyIdentifier(this.ca.certificate.publicKey)),
          builder.grantsExtension(this.ca.grantsOid, opts.grants ?? [`${P}/*`]),
        ],
      },
      caKey,
    );
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'svid.pem'), cert.pem);
    writeFileSync(join(dir, 'svid.key'), keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    writeFileSync(join(dir, 'bundle.pem'), this.ca.bundlePem());
    return dir;
  }

  cleanup(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Captures pino lines as parsed objects. */
export function capturingLogger(): { logger: Logger; lines: Array<Record<string, any>>; text: () => string } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      raw.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const logger = pino({ level: 'info' }, stream);
  return {
    logger,
    get lines() {
      return raw.map((l) => JSON.parse(l));
    },
    text: () => raw.join('\n'),
  };
}

export interface ProbeServer {
  mesh: MeshServer;
  port: number;
  svid: SvidSource;
  /** How many times a handler body ran, per method name. */
  ran: Record<string, number>;
  /** Outcomes of forwarded calls made after the response (forward_after_response). */
  late: Array<{ code: grpc.status; details: string }>;
  close(): Promise<void>;
}

/** A Probe server on 127.0.0.1 whose handlers report what the call context holds. */
export async function startProbe(opts: {
  svidDir: string;
  keys: VerificationKeys;
  logger?: Logger;
  dryRun?: boolean;
  clock?: () => number;
  /** Credentials dir for the forwarding client a handler uses. */
  clientSvid?: SvidSource;
  metrics?: MeshServerOptions['metrics'];
  revocation?: MeshServerOptions['revocation'];
  interceptors?: grpc.ServerInterceptor[];
  limits?: MeshServerOptions['limits'];
}): Promise<ProbeServer> {
  const svid = await SvidSource.open(opts.svidDir, { trustDomain: TD, pollIntervalMs: 0 });
  const mesh = createMeshServer({
    svid,
    keys: opts.keys,
    issuer: ISSUER,
    rules: probeCatalog(),
    ...(opts.logger ? { logger: opts.logger } : {}),
    dryRun: opts.dryRun === true,
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    ...(opts.revocation ? { revocation: opts.revocation } : {}),
    ...(opts.interceptors ? { interceptors: opts.interceptors } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
  const ran: Record<string, number> = {};
  const late: ProbeServer['late'] = [];
  const count = (name: string) => (ran[name] = (ran[name] ?? 0) + 1);
  const pong = (call: { metadata: grpc.Metadata }, text: string) => {
    const ctx = callContext();
    return {
      text,
      subject: ctx.token?.subject ?? '',
      peer: ctx.peer?.spiffeId.toString() ?? '',
      request_id: ctx.requestId,
      traceparent: String(call.metadata.get('traceparent')[0] ?? ''),
      metadata_keys: Object.keys(call.metadata.getMap()).sort(),
      trace_id: ctx.trace.traceId,
      peer_serial: ctx.peer?.serialHex ?? '',
    };
  };
  const Probe = probeClientCtor();
  mesh.server.addService(Probe.service, {
    Unary: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      count('Unary');
      const forwardTo = call.request.forward_to as string;
      if (!forwardTo) return cb(null, pong(call, `unary ${call.request.text}`));
      // A downstream call from inside the handler: nothing is copied by hand.
      const client = createMeshClient(Probe, forwardTo, { svid: opts.clientSvid ?? svid, serverId: SERVER_ID }) as ProbeClient;
      if (call.request.forward_after_response) {
        cb(null, pong(call, 'answered first'));
        setTimeout(() => client.Unary({ text: 'late' }, (err: grpc.ServiceError | null) => {
          client.close();
          late.push(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' });
        }), 20);
        return;
      }
      client.Unary({ text: 'hop' }, (err: grpc.ServiceError | null, res: any) => {
        client.close();
        if (err) return cb(err);
        cb(null, { ...res, text: `via ${res.text}` });
      });
    },
    ServerStream: (call: grpc.ServerWritableStream<any, any>) => {
      count('ServerStream');
      for (let i = 0; i < 3; i++) call.write(pong(call, `s${i}`));
      call.end();
    },
    ClientStream: (call: grpc.ServerReadableStream<any, any>, cb: grpc.sendUnaryData<any>) => {
      count('ClientStream');
      const texts: string[] = [];
      call.on('data', (m: any) => texts.push(m.text));
      call.on('end', () => cb(null, pong(call, texts.join(','))));
    },
    Bidi: (call: grpc.ServerDuplexStream<any, any>) => {
      count('Bidi');
      call.on('data', (m: any) => call.write(pong(call, `echo ${m.text}`)));
      call.on('end', () => call.end());
    },
    CertOnly: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      count('CertOnly');
      cb(null, pong(call, 'cert-only'));
    },
    Undeclared: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      count('Undeclared');
      cb(null, pong(call, 'undeclared'));
    },
  });
  const port = await mesh.listen('127.0.0.1:0');
  return {
    mesh,
    port,
    svid,
    ran,
    late,
    close: async () => {
      await mesh.close(500);
      svid.close();
    },
  };
}

/** A mesh test's per-test state: a fresh PKI, a token issuer and the keys that verify its tokens. */
export interface MeshBed {
  readonly pki: TestPki;
  readonly issuer: TestIssuer;
  readonly keys: StaticKeys;
  /** Undone after each test, last first (servers, clients, SVID sources, extra PKIs). */
  readonly cleanups: Array<() => unknown>;
}

/** Call inside describe(): sets a MeshBed up before each test and tears it down after. */
export function meshBed(): MeshBed {
  const bed = { cleanups: [] as Array<() => unknown> } as { pki: TestPki; issuer: TestIssuer; keys: StaticKeys; cleanups: Array<() => unknown> };
  beforeEach(async () => {
    bed.pki = TestPki.create();
    bed.issuer = await TestIssuer.create('k1');
    bed.keys = await StaticKeys.fromJwks(TestIssuer.jwks(bed.issuer));
  });
  afterEach(async () => {
    for (const c of bed.cleanups.splice(0).reverse()) await c();
    bed.pki.cleanup();
  });
  return bed;
}

/** A probe server (Unary granted) and a client of it as CALLER_ID (Unary and Bidi granted), closed after the test. */
export async function probeWithCaller(
  bed: MeshBed,
  revocation?: MeshServerOptions['revocation'],
): Promise<{ probe: ProbeServer; serverDir: string; callerDir: string; caller: SvidSource; client: ProbeClient }> {
  const serverDir = bed.pki.workload('probe', SERVER_ID, [`${P}/Unary`]);
  const callerDir = bed.pki.workload('caller', CALLER_ID, [`${P}/Unary`, `${P}/Bidi`]);
  const probe = await startProbe({ svidDir: serverDir, keys: bed.keys, ...(revocation ? { revocation } : {}) });
  bed.cleanups.push(() => probe.close());
  const caller = await SvidSource.open(callerDir, { trustDomain: TD, pollIntervalMs: 0 });
  bed.cleanups.push(() => caller.close());
  const client = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid: caller, serverId: SERVER_ID }) as ProbeClient;
  bed.cleanups.push(() => client.close());
  return { probe, serverDir, callerDir, caller, client };
}
