// `twokey serve <service>`: runs auth (the control plane) or one example service in this process until SIGINT or SIGTERM.
import { isTwokeyError } from '../authz/errors.ts';
import type { RunningService, ServiceEntry } from './running-service.ts';

const SERVICES: Record<string, () => Promise<ServiceEntry>> = {
  auth: () => import('../auth/main.ts'),
  gateway: () => import('../gateway/main.ts'),
  'image-store': () => import('../image-store/main.ts'),
  tagging: () => import('../tagging/main.ts'),
  cleaner: () => import('../cleaner/main.ts'),
  authorizer: () => import('../authorizer/main.ts'),
};

interface EnvVariable {
  name: string;
  meaning: string;
  default: string;
  /** The services that read it; every service when absent. */
  services?: readonly string[];
}

/** Every variable `twokey serve` reads, with its meaning and default (the --help text and docs/auth-service.md). */
export const ENV_VARIABLES: readonly EnvVariable[] = [
  { name: 'TWOKEY_LISTEN', meaning: 'the mTLS mesh listener, host:port', default: '0.0.0.0:8443' },
  { name: 'TWOKEY_HEALTH_LISTEN', meaning: 'plaintext grpc.health.v1 and GET /metrics listener', default: "TWOKEY_LISTEN's host, port 8081" },
  { name: 'TWOKEY_SVID_DIR', meaning: "this workload's certificate folder: svid.pem, svid.key, bundle.pem (twokey ca issue); re-read every second", default: '/var/run/twokey/svid' },
  { name: 'TWOKEY_REGISTRY', meaning: 'the registry file: trust domain, grants, auth settings (auth.issuer, scopes, token lifetimes)', default: '/etc/twokey/registry.yaml' },
  { name: 'TWOKEY_DATA_DIR', meaning: 'folder of the SQLite database (auth: users, signing keys, revocations)', default: '/var/lib/twokey', services: ['auth', 'image-store', 'tagging'] },
  { name: 'TWOKEY_DATABASE_URL', meaning: 'postgres://user@host:5432/db: keep state in PostgreSQL (replicas share it) instead of SQLite', default: 'unset (SQLite)', services: ['auth', 'image-store', 'tagging'] },
  { name: 'TWOKEY_DATABASE_PASSWORD_FILE', meaning: "file holding the PostgreSQL password (a mounted Secret)", default: 'unset', services: ['auth', 'image-store', 'tagging'] },
  { name: 'TWOKEY_JWKS_HTTPS_LISTEN', meaning: 'HTTPS listener for /.well-known/jwks.json and openid-configuration (presents the workload certificate)', default: "TWOKEY_LISTEN's host, port 8444", services: ['auth'] },
  { name: 'TWOKEY_KEY_ROTATION', meaning: 'how often the token signing key rotates (also on SIGHUP)', default: '24h', services: ['auth'] },
  { name: 'TWOKEY_REVOCATION_HEARTBEAT', meaning: 'how often the revocation set is re-signed and pushed when nothing changed', default: '2s', services: ['auth'] },
  { name: 'TWOKEY_REVOCATION_MAX_STALENESS', meaning: 'oldest revocation set decisions rely on; past it calls are refused UNAVAILABLE', default: '30s' },
  { name: 'TWOKEY_AUTH_ADDR', meaning: "auth's mesh address: host:port, dns:///host:port, or ipv4:a:p,b:p (replicas)", default: 'auth:8443', services: ['gateway', 'image-store', 'tagging', 'cleaner'] },
  { name: 'TWOKEY_IMAGE_STORE_ADDR', meaning: "image-store's mesh address (same forms as TWOKEY_AUTH_ADDR)", default: 'image-store:8443', services: ['gateway', 'tagging', 'cleaner'] },
  { name: 'TWOKEY_TAGGING_ADDR', meaning: "tagging's mesh address (same forms as TWOKEY_AUTH_ADDR)", default: 'tagging:8443', services: ['gateway'] },
  { name: 'TWOKEY_PUBLIC_LISTEN', meaning: 'the public HTTPS listener', default: '0.0.0.0:9443', services: ['gateway'] },
  { name: 'TWOKEY_PUBLIC_TLS_DIR', meaning: 'public TLS certificate folder', default: '/var/run/twokey/public-tls', services: ['gateway'] },
  { name: 'TWOKEY_REQUEST_ID_TTL', meaning: 'how long a write is remembered under its request id (retries are answered, not repeated)', default: '24h', services: ['image-store'] },
  { name: 'TWOKEY_CLEANER_INTERVAL', meaning: 'time between cleaning runs', default: '24h', services: ['cleaner'] },
  { name: 'TWOKEY_LOG_LEVEL', meaning: 'fatal, error, warn, info, debug, trace or silent (JSON lines on stdout)', default: 'info' },
  { name: 'TWOKEY_LOG_SYNC', meaning: '1: write each log line before answering the call', default: '0' },
  { name: 'TWOKEY_DRY_RUN', meaning: '1: log would-be denials and let the calls through (rollouts only)', default: '0' },
  { name: 'TWOKEY_STOP_WITH_PARENT', meaning: '1: stop when stdin closes (a local supervisor exited)', default: '0' },
];

function envTable(service: string | undefined): string {
  const rows = ENV_VARIABLES.filter((v) => service === undefined || v.services === undefined || v.services.includes(service));
  return rows.map((v) => `  ${v.name}\n      ${v.meaning}\n      default: ${v.default}${service === undefined && v.services ? ` (${v.services.join(', ')})` : ''}`).join('\n');
}

export const usage = `Usage: twokey serve <${Object.keys(SERVICES).join('|')}> [--help]

Runs one service in this process until SIGINT or SIGTERM. 'auth' is twokey's control plane, which
every mesh (yours too) runs: users, token signing keys, logins, and the revocation set. The others
are the example system's services. Configuration comes from the environment:

${envTable(undefined)}

'twokey serve <service> --help' lists only the variables that service reads.
`;

const AUTH_USAGE = `Usage: twokey serve auth

Runs auth for the registry in TWOKEY_REGISTRY: logins (Auth/Login), token keys (Auth/GetJwks, and
the HTTPS JWKS), service and delegated tokens, and the signed revocation set every member watches.
The token issuer is the registry's auth.issuer, by default https://auth.<trust domain>.
Users: 'twokey users add NAME --password-stdin --data-dir <TWOKEY_DATA_DIR>'.
A development token: 'twokey token login --user NAME --password-stdin ...'.

Environment:

${envTable('auth')}
`;

function serviceUsage(name: string): string {
  return name === 'auth' ? AUTH_USAGE : `Usage: twokey serve ${name}\n\nRuns the example system's ${name}. Environment:\n\n${envTable(name)}\n`;
}

/** Runs `entry` until a termination signal, then closes it; exit code 0 on a clean stop. */
export async function runUntilSignalled(name: string, entry: ServiceEntry): Promise<number> {
  let service: RunningService;
  try {
    service = await entry.serve(process.env);
  } catch (err) {
    const message = isTwokeyError(err) ? `${err.code}: ${err.message}` : ((err as Error)?.stack ?? String(err));
    process.stderr.write(`twokey serve ${name}: failed to start: ${message}\n`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      // A stuck shutdown must not outlive the supervisor's patience.
      const force = setTimeout(() => resolve(1), 5000);
      force.unref();
      service.close().then(
        () => resolve(0),
        (err) => {
          process.stderr.write(`twokey serve ${name}: error while stopping: ${(err as Error).message}\n`);
          resolve(1);
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // Started by a local supervisor (npm start, tests): its end of our stdin closes when it exits.
    if (process.env['TWOKEY_STOP_WITH_PARENT'] === '1') {
      process.stdin.on('end', stop);
      process.stdin.on('error', stop);
      process.stdin.resume();
    }
  });
}

export async function run(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === '--help' || name === '-h') {
    process.stdout.write(usage);
    return name === undefined ? 2 : 0;
  }
  const load = SERVICES[name];
  if (load !== undefined && rest.length === 1 && (rest[0] === '--help' || rest[0] === '-h')) {
    process.stdout.write(serviceUsage(name));
    return 0;
  }
  if (load === undefined || rest.length > 0) {
    process.stderr.write(`twokey serve: ${load === undefined ? `unknown service ${JSON.stringify(name)}` : 'too many arguments'}\n\n${usage}`);
    return 2;
  }
  let entry: ServiceEntry;
  try {
    entry = await load();
  } catch (err) {
    // The installed package ships auth only; the example services run from the repository and its image.
    const missing = (err as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND' && String((err as Error).message).includes(`/${name}/main.`);
    if (!missing || name === 'auth') throw err;
    process.stderr.write(`twokey serve: ${name} is an example service of the twokey repository, not part of the installed package\n`);
    return 2;
  }
  const code = await runUntilSignalled(name, entry);
  // Open handles (timers, sockets in TIME_WAIT) must not keep a stopped service alive.
  process.exit(code);
}
