// A mesh inside one test process: an in-memory CA, throwaway token keys, and servers and clients
// with test identities, talking real mutual TLS over loopback through the same code as production.
import { makeClientConstructor, type Client, type ServerInterceptor, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CertificateAuthority, type IssuedWorkload } from '../../../certs-ca/certificate-authority.ts';
import { createMeshClient } from '../client.ts';
import { TwokeyError } from '../errors.ts';
import { MethodCatalog } from '../method-catalog.ts';
import { SvidSource } from '../svid-source.ts';
import { createMeshServer, type MeshServer } from '../server.ts';
import { SpiffeId } from '../spiffe-id.ts';
import { TestTokens } from './test-tokens.ts';

export interface TestMeshOptions {
  /** Proto roots defining the services under test; their protos may import "twokey/authz/v1/authz.proto". */
  protoRoots: readonly string[];
  /** Default "test.twokey". */
  trustDomain?: string;
  /** Default "https://auth.test.twokey". */
  issuer?: string;
  /** The namespace of every test identity (`spiffe://<trust domain>/ns/<namespace>/sa/<name>`); default "test". */
  namespace?: string;
  /** Epoch ms, for certificates, tokens and decisions alike. */
  clock?: () => number;
}

/** A client of a service under test: grpc-js's generic client, methods by their proto names. */
export type TestClient = Client & Record<string, (...args: any[]) => any>;

export interface ClientIdentity {
  /** The caller's service-account name; its SPIFFE ID is `mesh.spiffeId(as)`. */
  as: string;
  /** Methods its certificate grants (`/pkg.Service/Method` or `/pkg.Service/*`). */
  grants: readonly string[];
}

export interface ServeOptions {
  /** Methods the server's own certificate grants it to call. */
  grants?: readonly string[];
  /** Where decision lines go (none are written without it). */
  logger?: Logger;
  interceptors?: ServerInterceptor[];
}

export interface TestServer {
  readonly name: string;
  readonly spiffeId: string;
  /** `127.0.0.1:<port>`. */
  readonly address: string;
  readonly port: number;
  readonly meshServer: MeshServer;
  readonly mesh: TestMesh;
  /** A client of `service` on this server, calling with a certificate for `identity`. */
  client(service: string, identity: ClientIdentity): TestClient;
  /** A user token the server accepts (see TestTokens.userToken). */
  userToken(subject: string, scopes: readonly string[], claims?: Record<string, unknown>): Promise<string>;
  close(): Promise<void>;
}

export class TestMesh {
  readonly trustDomain: string;
  readonly namespace: string;
  /** The methods and rules of the protos under test. */
  readonly catalog: MethodCatalog;
  /** Issues every test identity; its key is never written anywhere. */
  readonly ca: CertificateAuthority;
  readonly tokens: TestTokens;
  readonly #clock: () => number;
  readonly #closers: Array<() => unknown> = [];

  private constructor(opts: TestMeshOptions, catalog: MethodCatalog, ca: CertificateAuthority, tokens: TestTokens) {
    this.trustDomain = ca.trustDomain;
    this.namespace = opts.namespace ?? 'test';
    this.catalog = catalog;
    this.ca = ca;
    this.tokens = tokens;
    this.#clock = opts.clock ?? Date.now;
  }

  static async create(opts: TestMeshOptions): Promise<TestMesh> {
    const trustDomain = opts.trustDomain ?? 'test.twokey';
    const clock = opts.clock ?? Date.now;
    const catalog = MethodCatalog.load({ roots: opts.protoRoots });
    const ca = CertificateAuthority.inMemory({ trustDomain, catalog, clock: () => new Date(clock()) });
    const tokens = await TestTokens.create({ issuer: opts.issuer ?? 'https://auth.test.twokey', audience: SpiffeId.forTrustDomain(trustDomain).toString(), clock });
    return new TestMesh(opts, catalog, ca, tokens);
  }

  get issuer(): string {
    return this.tokens.issuer;
  }

  spiffeId(name: string): string {
    return `spiffe://${this.trustDomain}/ns/${this.namespace}/sa/${name}`;
  }

  /**
   * A one-hour certificate for `name` granting `grants`, with its key and the bundle, as PEM
   * (for clients in other languages). Names localhost and 127.0.0.1, which hostname-checking
   * gRPC clients verify.
   */
  issue(name: string, grants: readonly string[] = []): IssuedWorkload {
    return this.ca.issue({ spiffeId: this.spiffeId(name), grants, ttl: '1h', dns: ['localhost'], ip: ['127.0.0.1'] });
  }

  /** The same certificate as an SvidSource, for createMeshServer and createMeshClient. */
  identity(name: string, grants: readonly string[] = []): SvidSource {
    const issued = this.issue(name, grants);
    return SvidSource.fromMaterial({ chainPem: issued.chainPem, keyPem: issued.keyPem, bundlePem: issued.bundlePem }, { trustDomain: this.trustDomain, clock: this.#clock });
  }

  /** Starts a mesh server for `name` on 127.0.0.1 serving each named service (`pkg.Service`) with its handlers. */
  async serve(name: string, services: Record<string, UntypedServiceImplementation>, options: ServeOptions = {}): Promise<TestServer> {
    const definitions = Object.entries(services).map(([service, handlers]) => [this.#service(service), handlers] as const);
    const svid = this.identity(name, options.grants);
    const meshServer = createMeshServer({
      svid,
      keys: this.tokens.keys,
      issuer: this.issuer,
      rules: this.catalog,
      clock: this.#clock,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.interceptors ? { interceptors: options.interceptors } : {}),
    });
    for (const [definition, handlers] of definitions) meshServer.server.addService(definition, handlers);
    const port = await meshServer.listen('127.0.0.1:0');
    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => (closing ??= meshServer.close(500));
    this.#closers.push(close);
    const server: TestServer = {
      name,
      spiffeId: this.spiffeId(name),
      address: `127.0.0.1:${port}`,
      port,
      meshServer,
      mesh: this,
      client: (service, identity) => this.client(service, server, identity),
      userToken: (subject, scopes, claims) => this.tokens.userToken(subject, scopes, claims),
      close,
    };
    return server;
  }

  /**
   * A client of `service` on `server`, whose certificate is `identity`; it checks the server's
   * SPIFFE ID. `server.address` may list several replicas (`ipv4:127.0.0.1:p1,127.0.0.1:p2`).
   */
  client(service: string, server: { address: string; spiffeId: string }, identity: ClientIdentity): TestClient {
    const Client = makeClientConstructor(this.#service(service), service);
    // Balanced and retried as the protos under test say (idempotency_level, request_id).
    const client = createMeshClient(Client, server.address, { svid: this.identity(identity.as, identity.grants), serverId: server.spiffeId, retry: { catalog: this.catalog } }) as TestClient;
    this.#closers.push(() => client.close());
    return client;
  }

  /** Closes every client and server this mesh made. */
  async close(): Promise<void> {
    const closers = this.#closers.splice(0).reverse();
    for (const close of closers) await close();
  }

  #service(name: string): ServiceDefinition {
    const definition = this.catalog.definition[name];
    if (definition === undefined || 'format' in definition) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `no service ${JSON.stringify(name)} in ${this.catalog.roots.join(', ')} (services: ${this.catalog.services().join(', ') || 'none'})`);
    }
    return definition as ServiceDefinition;
  }
}

/** One call: a TestMesh from `options` and a server named `options.name` (default "server") on it; closing the server closes the mesh. */
export async function startTestServer(options: TestMeshOptions & ServeOptions & { services: Record<string, UntypedServiceImplementation>; name?: string }): Promise<TestServer> {
  const mesh = await TestMesh.create(options);
  const server = await mesh.serve(options.name ?? 'server', options.services, options);
  return { ...server, close: () => mesh.close() };
}
