// Service configuration from the environment: each value validated, errors name the variable.
import { parseDuration } from '../../certs-ca/duration.ts';
import { TwokeyError } from '../authz/errors.ts';

export type Env = Readonly<Record<string, string | undefined>>;

/** host:port with a numeric port; IPv6 hosts in brackets. */
export function parseAddress(text: string, what: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (match === null || Number(match[2]) > 65535) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${what}: ${JSON.stringify(text)} is not host:port`);
  }
  return text;
}

/**
 * A listener's default: the host of TWOKEY_LISTEN (so a loopback mesh listener keeps every other
 * listener on loopback too) with the listener's own port.
 */
export function besideMeshListener(env: Env, port: number): string {
  const listen = envAddress(env, 'TWOKEY_LISTEN', DEFAULT_LISTEN);
  return `${listen.slice(0, listen.lastIndexOf(':'))}:${port}`;
}

export const DEFAULT_LISTEN = '0.0.0.0:8443';

export function envAddress(env: Env, name: string, fallback: string): string {
  return parseAddress(env[name] ?? fallback, name);
}

/**
 * Where a client dials a peer service: host:port (resolved by DNS; a Kubernetes headless Service
 * name resolves to every ready pod), `dns:///host:port`, or a fixed list of replicas in gRPC's
 * name syntax, `ipv4:127.0.0.1:8443,127.0.0.1:8444` (or `ipv6:[::1]:8443,...`).
 */
export function parseTarget(text: string, what: string): string {
  const list = /^(ipv4|ipv6):(.+)$/.exec(text);
  if (list !== null) {
    const addresses = list[2]!.split(',');
    for (const a of addresses) {
      parseAddress(a, what);
      if ((list[1] === 'ipv6') !== a.startsWith('[')) throw new TwokeyError('ERR_CONFIG_INVALID', `${what}: ${JSON.stringify(a)} is not an ${list[1]} address`);
    }
    return text;
  }
  const dns = /^dns:(?:\/\/\/)?(.+)$/.exec(text);
  parseAddress(dns === null ? text : dns[1]!, what);
  return text;
}

export function envTarget(env: Env, name: string, fallback: string): string {
  return parseTarget(env[name] ?? fallback, name);
}

export function envString(env: Env, name: string, fallback: string): string {
  const value = env[name] ?? fallback;
  if (value === '') throw new TwokeyError('ERR_CONFIG_INVALID', `${name} is set but empty`);
  return value;
}

/** A duration like 30s, 15m or 24h, in milliseconds. */
export function envDurationMs(env: Env, name: string, fallback: string): number {
  return parseDuration(env[name] ?? fallback, name, 'ERR_CONFIG_INVALID') * 1000;
}

export function envFlag(env: Env, name: string): boolean {
  const value = env[name];
  if (value === undefined || value === '' || value === '0') return false;
  if (value === '1') return true;
  throw new TwokeyError('ERR_CONFIG_INVALID', `${name} must be 0 or 1, not ${JSON.stringify(value)}`);
}

/** What every mesh service reads, with the container defaults from the deployment contract. */
export interface CommonConfig {
  listen: string;
  healthListen: string;
  svidDir: string;
  registryPath: string;
  logLevel: string;
  /** Write each log line before going on (see createLogger). */
  logSync: boolean;
  dryRun: boolean;
}

export function readCommonConfig(env: Env): CommonConfig {
  return {
    listen: envAddress(env, 'TWOKEY_LISTEN', DEFAULT_LISTEN),
    healthListen: envAddress(env, 'TWOKEY_HEALTH_LISTEN', besideMeshListener(env, 8081)),
    svidDir: envString(env, 'TWOKEY_SVID_DIR', '/var/run/twokey/svid'),
    registryPath: envString(env, 'TWOKEY_REGISTRY', '/etc/twokey/registry.yaml'),
    logLevel: envString(env, 'TWOKEY_LOG_LEVEL', 'info'),
    logSync: envFlag(env, 'TWOKEY_LOG_SYNC'),
    dryRun: envFlag(env, 'TWOKEY_DRY_RUN'),
  };
}

export function dataDir(env: Env): string {
  return envString(env, 'TWOKEY_DATA_DIR', '/var/lib/twokey');
}
