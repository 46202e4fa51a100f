// Service configuration from the environment: each value validated, errors name the variable.
import { TwokeyError } from '../authz/errors.ts';

export type Env = Readonly<Record<string, string | undefined>>;

const DURATION = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** '250ms', '30s', '15m', '24h', '7d' -> milliseconds. */
export function parseDuration(text: string, what: string): number {
  const match = DURATION.exec(text);
  if (match === null) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${what}: ${JSON.stringify(text)} is not a duration like 30s, 15m or 24h`);
  }
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!;
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new TwokeyError('ERR_CONFIG_INVALID', `${what}: ${text} is out of range`);
  return ms;
}

/** host:port with a numeric port; IPv6 hosts in brackets. */
export function parseAddress(text: string, what: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (match === null || Number(match[2]) > 65535) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `${what}: ${JSON.stringify(text)} is not host:port`);
  }
  return text;
}

export function envAddress(env: Env, name: string, fallback: string): string {
  return parseAddress(env[name] ?? fallback, name);
}

export function envString(env: Env, name: string, fallback: string): string {
  const value = env[name] ?? fallback;
  if (value === '') throw new TwokeyError('ERR_CONFIG_INVALID', `${name} is set but empty`);
  return value;
}

export function envDuration(env: Env, name: string, fallback: string): number {
  return parseDuration(env[name] ?? fallback, name);
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
  dryRun: boolean;
}

export function readCommonConfig(env: Env): CommonConfig {
  return {
    listen: envAddress(env, 'TWOKEY_LISTEN', '0.0.0.0:8443'),
    healthListen: envAddress(env, 'TWOKEY_HEALTH_LISTEN', '0.0.0.0:8081'),
    svidDir: envString(env, 'TWOKEY_SVID_DIR', '/var/run/twokey/svid'),
    registryPath: envString(env, 'TWOKEY_REGISTRY', '/etc/twokey/registry.yaml'),
    logLevel: envString(env, 'TWOKEY_LOG_LEVEL', 'info'),
    dryRun: envFlag(env, 'TWOKEY_DRY_RUN'),
  };
}

export function dataDir(env: Env): string {
  return envString(env, 'TWOKEY_DATA_DIR', '/var/lib/twokey');
}
