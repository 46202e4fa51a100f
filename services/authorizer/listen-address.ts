// A listen address for the authorizer: host:port, or unix:/path; and whether only this machine can reach it.
import { isIP } from 'node:net';
import { parseAddress } from '../mesh-runtime/env.ts';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
  /** A unix socket path, when the address is unix:/path. */
  readonly path: string | undefined;
  /** Loopback or a unix socket: nothing off this machine (or pod) can connect. */
  readonly local: boolean;
}

export function listenAddress(text: string): ListenAddress {
  if (text.startsWith('unix:')) return { host: '', port: 0, path: text.slice('unix:'.length), local: true };
  const checked = parseAddress(text, 'listen address');
  const colon = checked.lastIndexOf(':');
  const host = checked.slice(0, colon).replace(/^\[|\]$/g, '');
  const local = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
  return { host, port: Number(checked.slice(colon + 1)), path: undefined, local };
}
