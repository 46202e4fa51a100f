// A real Probe mesh server for attacks: a counting JWKS source, a counting outbound-fetch trap, call plumbing.
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { JWK } from 'jose';
import { createMeshClient } from '../../services/authz/client.ts';
import { JwksKeySet } from '../../services/authz/jwks.ts';
import { SvidSource } from '../../services/authz/svid-source.ts';
import type { Svid } from '../../services/authz/svid.ts';
import { CALLER_ID, P, SERVER_ID, TD, TestPki, probeClientCtor, startProbe, type ProbeClient, type ProbeServer } from '../authz/mesh-fixtures.ts';

export { CALLER_ID, P, SERVER_ID, TD };
export const OTHER_ID = `spiffe://${TD}/ns/test/sa/other`;

export interface Outcome {
  code: grpc.status;
  details: string;
  res?: any;
}

export function unary(client: grpc.Client, method: string, req: object, md = new grpc.Metadata(), timeoutMs = 5000): Promise<Outcome> {
  return new Promise((resolve) => {
    (client as ProbeClient)[method]!(req, md, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: any) =>
      resolve(err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '', res }));
  });
}

export function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

/** An HTTP server on loopback that counts every request: any hit means a token made us fetch. */
export class FetchTrap {
  hits = 0;
  readonly #server: HttpServer;
  url = '';

  private constructor() {
    this.#server = createServer((_req, res) => {
      this.hits += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[]}');
    });
  }

  static async start(): Promise<FetchTrap> {
    const trap = new FetchTrap();
    await new Promise<void>((resolve) => trap.#server.listen(0, '127.0.0.1', resolve));
    trap.url = `http://127.0.0.1:${(trap.#server.address() as AddressInfo).port}`;
    return trap;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

export interface AttackMesh {
  pki: TestPki;
  probe: ProbeServer;
  /** The JWKS key set the server verifies with; `jwksFetches` counts how often it fetched. */
  keys: JwksKeySet;
  jwksFetches: () => number;
  caller: SvidSource;
  callerSvid: Svid;
  /** Another workload's certificate (for binding attacks). */
  otherSvid: Svid;
  client: ProbeClient;
  /** A client with other credentials (e.g. a hostile certificate directory). */
  clientFor(dir: string, trustDomain?: string): Promise<ProbeClient>;
  close(): Promise<void>;
}

/**
 * Starts a Probe server whose keys come from a JwksKeySet (so unknown kids exercise the real
 * refetch path, with a counting fetcher), and a caller granted every Probe method.
 */
export async function startAttackMesh(jwks: () => { keys: JWK[] }, opts: { cooldownMs?: number } = {}): Promise<AttackMesh> {
  const pki = TestPki.create();
  const serverDir = pki.workload('probe', SERVER_ID, [`${P}/Unary`]);
  const callerDir = pki.workload('caller', CALLER_ID, [`${P}/*`]);
  const otherDir = pki.workload('other', OTHER_ID, [`${P}/*`]);
  let fetches = 0;
  const keys = new JwksKeySet({
    fetch: async () => {
      fetches += 1;
      return jwks();
    },
    cooldownMs: opts.cooldownMs ?? 30_000,
    refreshIntervalMs: 0,
  });
  await keys.start();
  const probe = await startProbe({ svidDir: serverDir, keys });
  const sources: SvidSource[] = [];
  const clients: grpc.Client[] = [];
  const open = async (dir: string, trustDomain = TD) => {
    const s = await SvidSource.open(dir, { trustDomain, pollIntervalMs: 0 });
    sources.push(s);
    return s;
  };
  const caller = await open(callerDir);
  const other = await open(otherDir);
  const clientFor = async (dir: string, trustDomain = TD) => {
    const c = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid: await open(dir, trustDomain), serverId: SERVER_ID, propagate: false }) as ProbeClient;
    clients.push(c);
    return c;
  };
  const client = createMeshClient(probeClientCtor(), `127.0.0.1:${probe.port}`, { svid: caller, serverId: SERVER_ID, propagate: false }) as ProbeClient;
  clients.push(client);
  return {
    pki,
    probe,
    keys,
    jwksFetches: () => fetches,
    caller,
    callerSvid: caller.svid,
    otherSvid: other.svid,
    client,
    clientFor,
    close: async () => {
      for (const c of clients) c.close();
      for (const s of sources) s.close();
      keys.close();
      await probe.close();
      pki.cleanup();
    },
  };
}

/** Handler runs so far, summed over every Probe method. */
export function handlerRuns(probe: ProbeServer): number {
  return Object.values(probe.ran).reduce((a, b) => a + b, 0);
}
