// `twokey console`: the web console of a local mesh's state directory, and the starter `npm start` uses.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CA_FILES } from '../../certs-ca/certificate-authority.ts';
import { parseCaConfig } from '../../certs-ca/ca-config.ts';
import { findWorkload, loadRegistry } from '../../certs-ca/registry.ts';
import { isTwokeyError, TwokeyError } from '../../services/authz/errors.ts';
import { MethodCatalog } from '../../services/authz/method-catalog.ts';
import { packagePath } from '../../services/authz/package-root.ts';
import type { Endpoints } from '../local-mesh/local-mesh.ts';
import { ensurePublicTls } from '../local-mesh/public-tls.ts';
import { ConsoleLogin } from './console-login.ts';
import { ConsoleServer } from './console-server.ts';
import { SessionStore } from './console-sessions.ts';
import { DecisionFeed } from './decision-feed.ts';
import { buildPolicyGraph } from './policy-graph.ts';

export const usage = `Usage: twokey console [--state DIR] [--listen HOST:PORT] [--registry FILE]

Serves a read-only web console of a running local mesh over HTTPS: the policy graph (who may
call which methods, with the permission each needs), each workload's certificate, live
decisions from the services' logs and per-edge allowed/denied counts. Log in as an auth user
whose role grants console:read (the local mesh creates 'admin').

  --state DIR         the mesh's state directory (default: $TWOKEY_STATE_DIR, else .twokey)
  --listen HOST:PORT  default 127.0.0.1:0 (a free port); the console is meant for this machine
  --registry FILE     default deploy/registry.yaml

TLS: its own certificate for localhost from the local public CA (trust <state>/gateway-tls/ca.pem).
`;

export interface ConsoleOptions {
  stateDir: string;
  host?: string;
  port?: number;
  registryPath?: string;
}

export interface RunningConsole {
  url: string;
  caFile: string;
  close(): Promise<void>;
}

/** Starts the console over a state directory whose mesh is running (endpoints.json written). */
export async function startConsole(opts: ConsoleOptions): Promise<RunningConsole> {
  const root = resolve(opts.stateDir);
  const endpointsFile = join(root, 'endpoints.json');
  if (!existsSync(endpointsFile)) throw new TwokeyError('ERR_CONFIG_INVALID', `${root} has no endpoints.json: start the mesh first ('npm start')`);
  const endpoints = JSON.parse(readFileSync(endpointsFile, 'utf8')) as Endpoints;
  const caConfigFile = join(root, 'ca', CA_FILES.config);
  const { grantsOid } = parseCaConfig(readFileSync(caConfigFile, 'utf8'), caConfigFile);
  const registry = loadRegistry(opts.registryPath ?? packagePath('deploy', 'registry.yaml'));
  const servedBy = Object.fromEntries(Object.values(endpoints.services).map((s) => [s.name, s.serves ?? []]));
  const graph = buildPolicyGraph(registry, MethodCatalog.default(), servedBy);
  // Its own key and certificate from the local public CA the gateway's comes from: one CA to trust.
  const tls = ensurePublicTls(join(root, 'gateway-tls'), new Date(), 'console');
  // A replicated service's processes (image-store-2) each have a log; their calls count as the service's.
  const serviceOf = (process: string): string => Object.values(endpoints.services).find((s) => s.replicas?.some((r) => r.name === process))?.name ?? process;
  const feed = new DecisionFeed({ logs: endpoints.logs, serviceOf, nameOf: (id) => findWorkload(registry, id)?.name });
  const login = new ConsoleLogin({
    gatewayAddress: endpoints.gateway.address,
    gatewayCa: readFileSync(endpoints.gateway.caFile),
    jwksUrl: endpoints.jwks.url,
    jwksCa: readFileSync(endpoints.jwks.caFile),
    issuer: registry.auth.issuer,
    trustDomain: registry.trustDomain,
  });
  const server = new ConsoleServer({
    tls: { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) },
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 0,
    graph,
    feed,
    sessions: new SessionStore(),
    login: (u, p) => login.login(u, p),
    svidRoot: endpoints.svidRoot,
    grantsOid,
  });
  let url: string;
  try {
    url = await server.listen();
  } catch (err) {
    feed.close();
    login.close();
    throw new TwokeyError('ERR_CONFIG_INVALID', `console cannot listen on ${opts.host ?? '127.0.0.1'}:${opts.port ?? 0}: ${(err as Error).message}`, { cause: err });
  }
  return {
    url,
    caFile: tls.caFile,
    close: async () => {
      await server.close();
      feed.close();
      login.close();
    },
  };
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (m === null || port > 65535) throw new TwokeyError('ERR_CONFIG_INVALID', `--listen must be HOST:PORT, not ${JSON.stringify(text)}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export async function run(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args, options: { help: { type: 'boolean', short: 'h' }, state: { type: 'string' }, listen: { type: 'string' }, registry: { type: 'string' } }, strict: true }));
  } catch (err) {
    process.stderr.write(`twokey console: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  let running: RunningConsole;
  try {
    const listen = parseListen(values.listen ?? '127.0.0.1:0');
    running = await startConsole({
      stateDir: values.state ?? process.env['TWOKEY_STATE_DIR'] ?? '.twokey',
      ...listen,
      ...(values.registry !== undefined ? { registryPath: values.registry } : {}),
    });
  } catch (err) {
    process.stderr.write(`twokey console: ${isTwokeyError(err) ? err.message : String(err)}\n`);
    return 1;
  }
  process.stdout.write(`console      ${running.url}  (trust ${running.caFile})\n`);
  return new Promise<number>((done) => {
    const stop = (): void => void running.close().then(() => done(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
