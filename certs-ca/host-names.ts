// DNS and IP subject alternative names: the names ordinary gRPC clients dial and verify.
import { isIP } from 'node:net';
import { TwokeyError, type ErrorCode } from '../services/authz/errors.ts';

// RFC 1123 labels in lowercase, at most 253 characters in all; no wildcards in workload names.
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkDnsName(name: unknown, what: string, code: ErrorCode = 'ERR_CA_POLICY'): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 253 || !name.split('.').every((l) => LABEL.test(l))) {
    throw new TwokeyError(code, `${what === '' ? '' : `${what}: `}invalid DNS name ${JSON.stringify(name)} (lowercase RFC 1123 labels, no wildcards)`);
  }
  return name;
}

export function checkIpAddress(ip: unknown, what: string, code: ErrorCode = 'ERR_CA_POLICY'): string {
  if (typeof ip !== 'string' || isIP(ip) === 0 || ip.includes('%')) {
    throw new TwokeyError(code, `${what === '' ? '' : `${what}: `}invalid IP address ${JSON.stringify(ip)}`);
  }
  return ip;
}
