// auth's revocation methods as `twokey revoke` calls them: the admin identity's certificate and its service token, over mTLS.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status as Status, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadRegistry, type Registry } from '../../certs-ca/registry.ts';
import { createMeshClient } from '../authz/client.ts';
import { TwokeyError } from '../authz/errors.ts';
import { SvidSource } from '../authz/svid-source.ts';
import { AuthClient, bearer, unary } from '../mesh-runtime/protos.ts';
import type { IssuedToken } from '../mesh-runtime/cached-token.ts';
import type { RevocationEntry, RevocationKind } from './revocation-store.ts';

/** The registry workload whose certificate `twokey revoke` presents unless told otherwise. */
export const ADMIN_WORKLOAD = 'admin';

export interface AdminConnection {
  /** auth's mesh address, host:port. */
  address: string;
  /** Folder with the admin certificate (svid.pem, svid-key.pem, bundle.pem). */
  svidDir: string;
  registry: Registry;
}

export interface AdminConnectionOptions {
  stateDir: string;
  registryFile: string;
  address?: string | undefined;
  svidDir?: string | undefined;
}

/**
 * Where to reach auth and which certificate to present: given options first, then the local
 * mesh's state directory (its endpoints.json and svid/admin), so `npm start`'s mesh needs none.
 */
export function resolveAdminConnection(opts: AdminConnectionOptions): AdminConnection {
  const registry = loadRegistry(opts.registryFile);
  const endpointsFile = join(opts.stateDir, 'endpoints.json');
  let address = opts.address;
  if (address === undefined && existsSync(endpointsFile)) {
    try {
      address = (JSON.parse(readFileSync(endpointsFile, 'utf8')) as { services?: Record<string, { address?: string }> }).services?.['auth']?.address;
    } catch {
      throw new TwokeyError('ERR_CONFIG_INVALID', `${endpointsFile} is not the local mesh's endpoints file`);
    }
  }
  if (address === undefined) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `no auth address: give --auth HOST:PORT (no local mesh state in ${opts.stateDir})`);
  }
  return { address, svidDir: opts.svidDir ?? join(opts.stateDir, 'svid', ADMIN_WORKLOAD), registry };
}

/** One connection to auth's admin methods; every call carries the admin identity's own service token. */
export class AdminClient {
  readonly #client: Client;
  readonly #svid: SvidSource;
  #token: string | undefined;

  private constructor(client: Client, svid: SvidSource) {
    this.#client = client;
    this.#svid = svid;
  }

  static async connect(conn: AdminConnection): Promise<AdminClient> {
    const auth = conn.registry.workloads.find((w) => w.name === 'auth');
    if (auth === undefined) throw new TwokeyError('ERR_REGISTRY_INVALID', 'the registry has no auth workload');
    const svid = await SvidSource.open(conn.svidDir, { trustDomain: conn.registry.trustDomain, grantsOid: conn.registry.grantsOid, pollIntervalMs: 0 });
    const client = createMeshClient(AuthClient, conn.address, { svid, serverId: auth.spiffeId, propagate: false });
    return new AdminClient(client, svid);
  }

  /** The SPIFFE ID this client presents. */
  get identity(): string {
    return this.#svid.svid.spiffeId.toString();
  }

  close(): void {
    this.#client.close();
    this.#svid.close();
  }

  async revokeToken(jti: string, expSeconds: number): Promise<number> {
    return this.#seq('RevokeToken', { jti, exp: expSeconds });
  }

  async revokeCertificate(serialHex: string, notAfterSeconds: number): Promise<number> {
    return this.#seq('RevokeCertificate', { serial_hex: serialHex, not_after: notAfterSeconds });
  }

  async withdrawKey(kid: string): Promise<number> {
    return this.#seq('WithdrawKey', { kid });
  }

  async disableUser(username: string): Promise<number> {
    return this.#seq('DisableUser', { username });
  }

  async list(): Promise<{ seq: number; entries: RevocationEntry[] }> {
    const res = await this.#call<{ seq: string; entries: { kind: RevocationKind; value: string; at: string; keep_until: string }[] }>('ListRevocations', {});
    return {
      seq: Number(res.seq),
      entries: res.entries.map((e) => ({ kind: e.kind, value: e.value, atSeconds: Number(e.at), keepUntilSeconds: Number(e.keep_until) })),
    };
  }

  async #seq(method: string, request: object): Promise<number> {
    return Number((await this.#call<{ seq: string }>(method, request)).seq);
  }

  async #call<Res>(method: string, request: object): Promise<Res> {
    try {
      this.#token ??= (await unary<IssuedToken>(this.#client, 'GetServiceToken', { audience: '' })).access_token;
      return await unary<Res>(this.#client, method, request, bearer(this.#token));
    } catch (err) {
      throw refused(err as ServiceError, this.identity);
    }
  }
}

/** auth did not carry out an admin call: it refused it, or could not be reached. Nothing was revoked. */
export class AdminCallFailed extends Error {
  /** The gRPC status name, e.g. PERMISSION_DENIED or UNAVAILABLE. */
  readonly status: string;

  constructor(status: string, message: string) {
    super(message);
    this.name = 'AdminCallFailed';
    this.status = status;
  }
}

// auth's own words (its denials say which check failed) with the status, so the operator can act on it.
function refused(err: ServiceError, identity: string): AdminCallFailed {
  const status = typeof err?.code === 'number' ? (Status[err.code] ?? `status ${err.code}`) : 'UNKNOWN';
  const details = err?.details ?? (err as Error)?.message ?? String(err);
  if (err?.code === Status.UNAVAILABLE || err?.code === Status.DEADLINE_EXCEEDED) return new AdminCallFailed(status, `auth could not be reached (${status}): ${details}`);
  const hint = err?.code === Status.PERMISSION_DENIED || err?.code === Status.UNAUTHENTICATED ? ` (as ${identity}; only the registry's admin identity holds the revocation methods)` : '';
  return new AdminCallFailed(status, `auth refused: ${status}: ${details}${hint}`);
}
