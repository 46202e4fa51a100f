// Scenario G's proxy: nginx 1.22 with the configuration `twokey authz nginx-config` writes, in
// front of a plaintext grpc-js backend; and the same nginx without auth_request (the hop alone).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { renderNginxConfig } from '../services/authorizer/nginx-config.ts';
import { ProcStats, type StatsSource } from './proc-stats.ts';

export const NGINX_BIN = fs.existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';

export interface NginxFront {
  port: number;
  stats: StatsSource;
  stop(): Promise<void>;
}

/** Why nginx cannot run here, or undefined when it can. */
export function nginxUnavailableReason(): string | undefined {
  return fs.existsSync(NGINX_BIN) || process.env['PATH']?.split(':').some((d) => fs.existsSync(path.join(d, 'nginx'))) ? undefined : 'nginx is not installed';
}

/** The hop alone: mTLS termination with the same settings, straight to the backend. */
function hopOnlyConfig(runtimeDir: string, listen: string, backendPort: number, svidDir: string): string {
  const f = (name: string): string => path.join(svidDir, name);
  return `worker_processes 1;
pid ${path.join(runtimeDir, 'nginx.pid')};
error_log ${path.join(runtimeDir, 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${path.join(runtimeDir, 'client_body')};
  proxy_temp_path ${path.join(runtimeDir, 'proxy')};
  upstream backend { server 127.0.0.1:${backendPort}; keepalive 16; keepalive_requests 10000; }
  server {
    listen ${listen} ssl http2;
    ssl_certificate ${f('svid.pem')};
    ssl_certificate_key ${f('svid.key')};
    ssl_client_certificate ${f('bundle.pem')};
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    client_max_body_size 8m;
    keepalive_requests 100000;
    http2_max_concurrent_streams 1000;
    location / { grpc_pass grpc://backend; }
  }
}
`;
}

export async function startNginxFront(opts: {
  label: string;
  runtimeDir: string;
  port: number;
  backendPort: number;
  /** The proxy's workload directory (svid.pem, svid.key, bundle.pem). */
  svidDir: string;
  /** The authorizer's port; undefined: the hop alone, no auth_request. */
  authorizerPort: number | undefined;
  /** The authorizer listens in plaintext on loopback (same pod) rather than mTLS. */
  authorizerLocal?: boolean;
  service: string;
}): Promise<NginxFront> {
  fs.mkdirSync(opts.runtimeDir, { recursive: true });
  const conf = path.join(opts.runtimeDir, 'nginx.conf');
  const listen = `127.0.0.1:${opts.port}`;
  fs.writeFileSync(
    conf,
    opts.authorizerPort === undefined
      ? hopOnlyConfig(opts.runtimeDir, listen, opts.backendPort, opts.svidDir)
      : renderNginxConfig({
          service: opts.service,
          listen,
          backend: `grpc://127.0.0.1:${opts.backendPort}`,
          svidDir: opts.svidDir,
          authorizer: `${opts.authorizerLocal === true ? 'http' : 'https'}://127.0.0.1:${opts.authorizerPort}`,
          authorizerName: 'localhost',
          // The generated 1 s would fail calls closed (UNAVAILABLE) when the shared machine stalls the
          // authorizer; the benchmark measures cost, so it waits longer.
          authzTimeoutMs: 5000,
          runtimeDir: opts.runtimeDir,
        }),
  );
  // One process (no master and workers): its CPU is one /proc entry, and it owns every file it reads.
  const child: ChildProcess = spawn(NGINX_BIN, ['-c', conf, '-p', opts.runtimeDir, '-e', path.join(opts.runtimeDir, 'error.log'), '-g', 'daemon off; master_process off;'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(path.join(opts.runtimeDir, 'nginx.pid'))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${opts.label}: nginx did not start (see ${path.join(opts.runtimeDir, 'error.log')})`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port: opts.port,
    stats: new ProcStats(opts.label, child.pid!),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
