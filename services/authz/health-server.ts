// grpc.health.v1 for Kubernetes probes and GET /metrics for Prometheus, on one plaintext listener that serves nothing else.
import * as http from 'node:http';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Registry } from 'prom-client';
import { packagePath } from './package-root.ts';
import { LIVENESS_SERVICE } from './liveness.ts';

export { LIVENESS_SERVICE };

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

type ConnectionInjector = ReturnType<grpc.Server['createConnectionInjector']>;

// The health port is unauthenticated: open Watch streams are capped so they cannot pile up.
export const MAX_HEALTH_WATCHERS = 32;

/**
 * Every HTTP/2 connection opens with this preface (RFC 9113 section 3.4); no HTTP/1 request line
 * starts with it, since PRI is no HTTP/1 method. gRPC clients and the kubelet's gRPC probe speak
 * HTTP/2 with prior knowledge; Prometheus scrapes plaintext targets over HTTP/1.1.
 */
const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** A connection that has not said which protocol it speaks by then is closed. */
const FIRST_BYTES_TIMEOUT_MS = 10_000;
const METRICS_PATH = '/metrics';

export interface HealthServerOptions {
  /** Served at GET /metrics in Prometheus text format; without it, /metrics is 404 like any other path. */
  metrics?: Registry;
}

/**
 * Health state for one process: '' is the whole process, LIVENESS_SERVICE the process alone
 * (without its dependencies), other keys are gRPC service names.
 * Starts NOT_SERVING so a probe never passes before the mesh listener is up.
 */
export class HealthServer {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Set<{ service: string; call: grpc.ServerWritableStream<{ service: string }, unknown> }>();
  #server: grpc.Server | undefined;
  #injector: ConnectionInjector | undefined;
  #listener: net.Server | undefined;
  #http: http.Server | undefined;
  readonly #sockets = new Set<net.Socket>();
  readonly #metrics: Registry | undefined;
  // One entry per watched dependency (the shared database, auth's keys and revocation set): while
  // any fails its probe every status but liveness reads NOT_SERVING, so a load balancer stops
  // sending calls this process could only fail.
  readonly #dependencies: { down: boolean; timer: NodeJS.Timeout }[] = [];

  constructor(services: readonly string[], options: HealthServerOptions = {}) {
    for (const name of ['', LIVENESS_SERVICE, ...services]) this.#statuses.set(name, 'NOT_SERVING');
    this.#metrics = options.metrics;
  }

  setAll(status: ServingStatus): void {
    for (const name of this.#statuses.keys()) this.#statuses.set(name, status);
    this.#notifyWatchers();
  }

  #notifyWatchers(): void {
    for (const watcher of this.#watchers) watcher.call.write({ status: this.status(watcher.service) });
  }

  get #dependencyDown(): boolean {
    return this.#dependencies.some((d) => d.down);
  }

  status(service: string): ServingStatus | 'SERVICE_UNKNOWN' {
    const status = this.#statuses.get(service);
    if (status === undefined) return 'SERVICE_UNKNOWN';
    return this.#dependencyDown && service !== LIVENESS_SERVICE ? 'NOT_SERVING' : status;
  }

  /**
   * Probes a dependency every `intervalMs`; while a probe fails or takes longer than `timeoutMs`
   * the process reports NOT_SERVING, and SERVING again (if it was) after the next probe passes.
   * `onChange` hears each change, with the probe's error when it went down. Several may be watched.
   */
  watchDependency(probe: () => Promise<void>, opts: { intervalMs?: number; timeoutMs?: number; onChange?: (err: Error | null) => void } = {}): void {
    const intervalMs = opts.intervalMs ?? 1000;
    const timeoutMs = opts.timeoutMs ?? 2000;
    let running = false;
    const tick = async (): Promise<void> => {
      if (running) return;
      running = true;
      let timer: NodeJS.Timeout | undefined;
      let error: Error | null;
      try {
        await Promise.race([probe(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('probe timed out')), timeoutMs)))]);
        error = null;
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      } finally {
        clearTimeout(timer);
        running = false;
      }
      if ((error !== null) !== entry.down) {
        entry.down = error !== null;
        this.#notifyWatchers();
        opts.onChange?.(error);
      }
    };
    const entry = { down: false, timer: setInterval(() => void tick(), intervalMs) };
    entry.timer.unref();
    this.#dependencies.push(entry);
    void tick();
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
    // One port for both protocols: the listener reads a connection's first bytes and hands it to
    // grpc-js (HTTP/2) or to an HTTP/1 server that answers /metrics and nothing else.
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const web = http.createServer((req, res) => void this.#serveHttp(req, res));
    web.headersTimeout = FIRST_BYTES_TIMEOUT_MS;
    web.requestTimeout = FIRST_BYTES_TIMEOUT_MS;
    web.maxHeadersCount = 32;
    const listener = net.createServer((socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
      routeConnection(socket, injector, web);
    });
    const { host, port } = splitAddress(address);
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(port, host, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
    this.#injector = injector;
    this.#listener = listener;
    this.#http = web;
    return (listener.address() as net.AddressInfo).port;
  }

  async #serveHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?', 1)[0];
    if (this.#metrics === undefined || path !== METRICS_PATH) return plain(res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return plain(res, 405, 'method not allowed\n');
    }
    let body: string;
    try {
      body = await this.#metrics.metrics();
    } catch (err) {
      return plain(res, 500, `metrics could not be collected: ${(err as Error).message}\n`);
    }
    res.writeHead(200, { 'content-type': this.#metrics.contentType, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  async close(): Promise<void> {
    for (const d of this.#dependencies) clearInterval(d.timer);
    this.setAll('NOT_SERVING');
    for (const watcher of this.#watchers) watcher.call.end();
    this.#watchers.clear();
    const server = this.#server;
    if (server === undefined) return;
    const listener = this.#listener!;
    const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
    this.#injector!.drain(0);
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    // Scrapers keep HTTP/1 connections alive, and the listener waits for every connection it accepted.
    this.#http!.closeAllConnections();
    for (const socket of this.#sockets) socket.destroy();
    this.#injector!.destroy();
    await closed;
  }
}

function plain(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(text);
}

/** Reads a connection's first bytes, puts them back, and hands it to the server for its protocol. */
function routeConnection(socket: net.Socket, injector: ConnectionInjector, web: http.Server): void {
  let seen: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), FIRST_BYTES_TIMEOUT_MS);
  const onError = (): void => {
    clearTimeout(timer);
    socket.destroy();
  };
  const onData = (chunk: Buffer): void => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, HTTP2_PREFACE.length);
    const http2 = seen.subarray(0, n).equals(HTTP2_PREFACE.subarray(0, n));
    if (http2 && seen.length < HTTP2_PREFACE.length) return;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', onError);
    socket.pause();
    socket.unshift(seen);
    if (http2) injector.injectConnection(socket);
    else {
      web.emit('connection', socket);
      // The HTTP/1 parser reads through the socket's stream, where the first bytes were put back.
      socket.resume();
    }
  };
  socket.on('error', onError);
  socket.on('data', onData);
}

/** host:port, [v6]:port; the host may be empty or 0.0.0.0 for every address. */
function splitAddress(address: string): { host: string | undefined; port: number } {
  const i = address.lastIndexOf(':');
  const port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`not a host:port listen address: ${JSON.stringify(address)}`);
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  return { host: host === '' ? undefined : host, port };
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
