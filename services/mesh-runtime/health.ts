// grpc.health.v1 on a plaintext listener that serves nothing else, for Kubernetes probes.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { packagePath } from '../authz/package-root.ts';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';

const PROTO_DIR = packagePath('services', 'mesh-runtime', 'proto');

function loadHealthService(): grpc.ServiceClientConstructor {
  const definition = protoLoader.loadSync('grpc/health/v1/health.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  return pkg.grpc.health.v1.Health;
}

const Health = loadHealthService();

// The health port is unauthenticated: open Watch streams are capped so they cannot pile up.
export const MAX_HEALTH_WATCHERS = 32;

/**
 * Health state for one process: '' is the whole process, other keys are gRPC service names.
 * Starts NOT_SERVING so a probe never passes before the mesh listener is up.
 */
export class HealthServer {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Set<{ service: string; call: grpc.ServerWritableStream<{ service: string }, unknown> }>();
  #server: grpc.Server | undefined;
  // Set while a watched dependency (the shared database) fails its probe: every status then reads
  // NOT_SERVING, so a load balancer stops sending calls this process could only fail.
  #dependencyDown = false;
  #probeTimer: NodeJS.Timeout | undefined;

  constructor(services: readonly string[]) {
    for (const name of ['', ...services]) this.#statuses.set(name, 'NOT_SERVING');
  }

  setAll(status: ServingStatus): void {
    for (const name of this.#statuses.keys()) this.#statuses.set(name, status);
    this.#notifyWatchers();
  }

  #notifyWatchers(): void {
    for (const watcher of this.#watchers) watcher.call.write({ status: this.status(watcher.service) });
  }

  status(service: string): ServingStatus | 'SERVICE_UNKNOWN' {
    const status = this.#statuses.get(service);
    if (status === undefined) return 'SERVICE_UNKNOWN';
    return this.#dependencyDown ? 'NOT_SERVING' : status;
  }

  /**
   * Probes a dependency every `intervalMs`; while a probe fails or takes longer than `timeoutMs`
   * the process reports NOT_SERVING, and SERVING again (if it was) after the next probe passes.
   */
  watchDependency(probe: () => Promise<void>, opts: { intervalMs?: number; timeoutMs?: number } = {}): void {
    const intervalMs = opts.intervalMs ?? 1000;
    const timeoutMs = opts.timeoutMs ?? 2000;
    let running = false;
    const tick = async (): Promise<void> => {
      if (running) return;
      running = true;
      let timer: NodeJS.Timeout | undefined;
      let down: boolean;
      try {
        await Promise.race([probe(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('probe timed out')), timeoutMs)))]);
        down = false;
      } catch {
        down = true;
      } finally {
        clearTimeout(timer);
        running = false;
      }
      if (down !== this.#dependencyDown) {
        this.#dependencyDown = down;
        this.#notifyWatchers();
      }
    };
    clearInterval(this.#probeTimer);
    this.#probeTimer = setInterval(() => void tick(), intervalMs);
    this.#probeTimer.unref();
  }

  /** Binds the plaintext health listener; returns the bound port. */
  async listen(address: string): Promise<number> {
    const server = new grpc.Server();
    server.addService(Health.service, {
      Check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const status = this.status(call.request.service);
        if (status === 'SERVICE_UNKNOWN') {
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
          return;
        }
        callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        if (this.#watchers.size >= MAX_HEALTH_WATCHERS) {
          call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: `at most ${MAX_HEALTH_WATCHERS} health watches at once` });
          return;
        }
        const watcher = { service: call.request.service, call };
        this.#watchers.add(watcher);
        call.write({ status: this.status(call.request.service) });
        call.on('cancelled', () => this.#watchers.delete(watcher));
        call.on('close', () => this.#watchers.delete(watcher));
      },
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
    });
    this.#server = server;
    return port;
  }

  async close(): Promise<void> {
    clearInterval(this.#probeTimer);
    this.setAll('NOT_SERVING');
    for (const watcher of this.#watchers) watcher.call.end();
    this.#watchers.clear();
    const server = this.#server;
    if (server === undefined) return;
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }
}

/** One health Check against a plaintext health listener; resolves to the reported status. */
export async function checkHealth(address: string, service = '', timeoutMs = 1000): Promise<string> {
  const client = new Health(address, grpc.credentials.createInsecure());
  try {
    return await new Promise<string>((resolve, reject) => {
      client.Check({ service }, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: { status: string }) =>
        err ? reject(err) : resolve(res.status),
      );
    });
  } finally {
    client.close();
  }
}
