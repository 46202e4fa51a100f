// `twokey authz serve | nginx-config | envoy-config`: run the authorizer, or write a proxy configuration for it.
import { writeFileSync } from 'node:fs';
import { delimiter } from 'node:path';
import { parseArgs } from 'node:util';
import { runUntilSignalled } from '../mesh-runtime/serve-command.ts';
import { renderEnvoyConfig } from './envoy-config.ts';
import { renderNginxConfig } from './nginx-config.ts';

export const AUTHORIZER_SUBCOMMANDS = ['serve', 'nginx-config', 'envoy-config'] as const;

export const usage = `Usage: twokey authz serve [--service SPIFFE_ID] [--proto-root DIR ...] [--grpc-listen ADDR]
                         [--http-listen ADDR] [--local-http-listen ADDR] [--local-grpc-listen ADDR] [--istio]
       twokey authz nginx-config --service SPIFFE_ID --listen HOST:PORT --backend grpc://HOST:PORT
                         --svid-dir DIR --authorizer https://HOST:PORT [--authorizer-name NAME]
                         [--max-body BYTES] [--timeout-ms MS] [--runtime-dir DIR] [--out FILE]
       twokey authz envoy-config --service SPIFFE_ID --listen HOST:PORT --backend HOST:PORT
                         --svid-dir DIR --authorizer HOST:PORT [--authorizer-id SPIFFE_ID]
                         [--timeout-ms MS] [--admin ADDR] [--out FILE]

serve: the external authorizer for servers in any language. Answers Envoy's ext_authz v3
Check (gRPC) and nginx's auth_request (GET /check, HTTP/1.1 keep-alive) with the library's
decision, from the certificate and headers the proxy forwards. It trusts a proxy only over
mTLS (its certificate must grant /envoy.service.auth.v3.Authorization/Check) or on loopback /
a unix socket. Configuration is the environment of 'twokey serve' (TWOKEY_SVID_DIR,
TWOKEY_REGISTRY, TWOKEY_AUTH_ADDR, TWOKEY_HEALTH_LISTEN, ...) plus, set by the flags:
  --service            TWOKEY_AUTHZ_SERVICE: the SPIFFE ID the proxy presents (token audience)
  --proto-root         TWOKEY_AUTHZ_PROTO_ROOTS: the backend's protos with their rules
  --grpc-listen        TWOKEY_LISTEN (default 0.0.0.0:8443, "off"): Envoy, mTLS
  --http-listen        TWOKEY_AUTHZ_HTTP_LISTEN (default 0.0.0.0:8182, "off"): nginx, mTLS
  --local-http-listen  TWOKEY_AUTHZ_LOCAL_HTTP_LISTEN: nginx, plaintext, loopback or unix:/path
  --local-grpc-listen  TWOKEY_AUTHZ_LOCAL_GRPC_LISTEN: Envoy, plaintext, loopback or unix:/path
  --istio              TWOKEY_AUTHZ_ISTIO=1: a call forwarded with a principal and no certificate
                       takes its grants from the registry (no certificate thumbprint binding)

nginx-config / envoy-config: a fail-closed proxy configuration for one backend (mTLS with the
proxy's SVID and bundle, TLS 1.3, gRPC statuses for every denial, the authorizer unreachable
= UNAVAILABLE). --runtime-dir writes a whole nginx.conf (pid, logs, temp files there);
without it, the http-level part to include. Printed to stdout unless --out.
`;

class UsageError extends Error {}

const SERVE_OPTIONS = {
  service: { type: 'string' },
  'proto-root': { type: 'string', multiple: true },
  'grpc-listen': { type: 'string' },
  'http-listen': { type: 'string' },
  'local-http-listen': { type: 'string' },
  'local-grpc-listen': { type: 'string' },
  istio: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const CONFIG_OPTIONS = {
  service: { type: 'string' },
  listen: { type: 'string' },
  backend: { type: 'string' },
  'svid-dir': { type: 'string' },
  authorizer: { type: 'string' },
  'authorizer-name': { type: 'string' },
  'authorizer-id': { type: 'string' },
  'max-body': { type: 'string' },
  'timeout-ms': { type: 'string' },
  'runtime-dir': { type: 'string' },
  admin: { type: 'string' },
  out: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

function positiveInt(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`--${name} must be a positive integer`);
  return n;
}

export async function runAuthorizerCommand(sub: (typeof AUTHORIZER_SUBCOMMANDS)[number], args: string[]): Promise<number> {
  try {
    if (sub === 'serve') {
      const { values } = parseArgs({ args, options: SERVE_OPTIONS, strict: true, allowPositionals: false });
      if (values.help) {
        process.stdout.write(usage);
        return 0;
      }
      const set = (name: string, value: string | undefined): void => {
        if (value !== undefined) process.env[name] = value;
      };
      set('TWOKEY_AUTHZ_SERVICE', values.service);
      if (values['proto-root'] !== undefined) process.env['TWOKEY_AUTHZ_PROTO_ROOTS'] = values['proto-root'].join(delimiter);
      set('TWOKEY_LISTEN', values['grpc-listen']);
      set('TWOKEY_AUTHZ_HTTP_LISTEN', values['http-listen']);
      set('TWOKEY_AUTHZ_LOCAL_HTTP_LISTEN', values['local-http-listen']);
      set('TWOKEY_AUTHZ_LOCAL_GRPC_LISTEN', values['local-grpc-listen']);
      if (values.istio) process.env['TWOKEY_AUTHZ_ISTIO'] = '1';
      const code = await runUntilSignalled('authorizer', await import('./main.ts'));
      process.exit(code);
    }
    const { values } = parseArgs({ args, options: CONFIG_OPTIONS, strict: true, allowPositionals: false });
    if (values.help) {
      process.stdout.write(usage);
      return 0;
    }
    const common = {
      service: required(values, 'service'),
      listen: required(values, 'listen'),
      backend: required(values, 'backend'),
      svidDir: required(values, 'svid-dir'),
      authorizer: required(values, 'authorizer'),
      authzTimeoutMs: positiveInt(values['timeout-ms'], 'timeout-ms'),
    };
    const text =
      sub === 'nginx-config'
        ? renderNginxConfig({ ...common, authorizerName: values['authorizer-name'], maxBodyBytes: positiveInt(values['max-body'], 'max-body'), runtimeDir: values['runtime-dir'] })
        : renderEnvoyConfig({ ...common, authorizerId: values['authorizer-id'], adminListen: values.admin });
    if (values.out !== undefined) writeFileSync(values.out, text, { mode: 0o644 });
    else process.stdout.write(text);
    return 0;
  } catch (err) {
    const message = (err as Error).message;
    process.stderr.write(`twokey authz ${sub}: ${message}\nRun 'twokey authz --help' for usage.\n`);
    return 2;
  }
}
