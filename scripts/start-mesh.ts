// The example mesh on loopback from one state directory, until Ctrl-C (what `npm start` runs).
// `npm start -- --replicas 2` (or TWOKEY_REPLICAS=2) runs two auth and two image-store processes on
// PostgreSQL: TWOKEY_DATABASE_URL's, or one from the system's binaries in the state directory.
import { isTwokeyError, TwokeyError } from '../services/authz/errors.ts';
import { MAX_REPLICAS, startLocalMesh, type LocalMesh } from './local-mesh/local-mesh.ts';
import { parsePortBase } from './local-mesh/ports.ts';
import { startConsole, type RunningConsole } from './console/console-command.ts';

/** `--replicas N` from the arguments, else TWOKEY_REPLICAS, else 1. */
export function replicasFrom(argv: readonly string[], env: NodeJS.ProcessEnv): number {
  const at = argv.findIndex((a) => a === '--replicas' || a.startsWith('--replicas='));
  const unknown = argv.find((_, i) => i !== at && !(at >= 0 && i === at + 1 && !argv[at]!.includes('=')));
  if (unknown !== undefined) throw new TwokeyError('ERR_CONFIG_INVALID', `unknown argument ${JSON.stringify(unknown)} (npm start [-- --replicas N])`);
  const text = at < 0 ? env['TWOKEY_REPLICAS'] : argv[at]!.includes('=') ? argv[at]!.slice('--replicas='.length) : argv[at + 1];
  if (text === undefined || text === '') {
    if (at >= 0) throw new TwokeyError('ERR_CONFIG_INVALID', '--replicas needs a number');
    return 1;
  }
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > MAX_REPLICAS) {
    throw new TwokeyError('ERR_CONFIG_INVALID', `replicas must be a whole number from 1 to ${MAX_REPLICAS}, not ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function table(mesh: LocalMesh, consoleUrl: string): string {
  const rows = Object.values(mesh.endpoints.services).flatMap((s) =>
    (s.replicas ?? [{ name: s.name, address: s.address, health: s.health }]).map((p) => [
      p.name,
      s.name === 'gateway' ? `${mesh.endpoints.gateway.address} (public TLS)` : (p.address ?? '(no listener)'),
      p.health,
      s.spiffeId,
      s.grants.length === 0 ? '(none)' : s.grants.map((g) => g.replace(/^\/twokey\./, '')).join(', '),
    ]),
  );
  rows.push(['console', consoleUrl, '-', '(none: reads logs and certificates)', '(none)']);
  const head = ['service', 'address', 'health', 'SPIFFE ID', 'grants'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.slice().map((r) => (i === 4 ? 0 : r[i]!.length))));
  const line = (r: string[]): string => r.map((c, i) => (i === 4 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

export async function startMesh(argv: readonly string[] = []): Promise<number> {
  const stateDir = process.env['TWOKEY_STATE_DIR'] ?? '.twokey';
  let mesh: LocalMesh;
  try {
    const replicas = replicasFrom(argv, process.env);
    process.stdout.write(`twokey: starting the example mesh from ${stateDir}${replicas > 1 ? ` with ${replicas} auth and ${replicas} image-store replicas on PostgreSQL` : ''}\n`);
    const database: Record<string, string> = {};
    for (const name of ['TWOKEY_DATABASE_URL', 'TWOKEY_DATABASE_PASSWORD_FILE']) if (process.env[name]) database[name] = process.env[name]!;
    mesh = await startLocalMesh({
      stateDir,
      replicas,
      localPostgres: replicas > 1,
      env: database,
      portBase: parsePortBase(process.env['TWOKEY_PORT_BASE']),
      ...(process.env['TWOKEY_CLEANER_INTERVAL'] ? { cleanerInterval: process.env['TWOKEY_CLEANER_INTERVAL'] } : {}),
      ...(process.env['TWOKEY_LOG_LEVEL'] ? { logLevel: process.env['TWOKEY_LOG_LEVEL'] } : {}),
    });
  } catch (err) {
    process.stderr.write(`twokey: could not start the mesh: ${isTwokeyError(err) ? err.message : ((err as Error).stack ?? String(err))}\n`);
    return 1;
  }
  const { endpoints, layout, users } = mesh;
  let web: RunningConsole;
  try {
    const portBase = parsePortBase(process.env['TWOKEY_PORT_BASE']);
    web = await startConsole({ stateDir, ...(portBase === undefined ? {} : { port: portBase + 5 }) });
  } catch (err) {
    process.stderr.write(`twokey: could not start the console: ${isTwokeyError(err) ? err.message : String(err)}\n`);
    await mesh.stop();
    return 1;
  }
  process.stdout.write(`\n${table(mesh, web.url)}\n\n`);
  process.stdout.write(`users (${layout.usersFile}, mode 0600):\n`);
  for (const [name, password] of Object.entries(users)) process.stdout.write(`  ${name.padEnd(8)} ${password}\n`);
  process.stdout.write(
    `\ngateway      ${endpoints.gateway.address}  (trust ${endpoints.gateway.caFile})\n` +
      `console      ${web.url}  (log in as admin; trust ${web.caFile})\n` +
      `JWKS         ${endpoints.jwks.url}  (trust ${endpoints.jwks.caFile})\n` +
      `endpoints    ${layout.endpointsFile}\n` +
      `logs         ${layout.root}/logs/<service>.log (one JSON decision line per call)\n` +
      `revoke       npm run twokey -- revoke list${stateDir === '.twokey' ? '' : ` --state-dir ${stateDir}`}  (as the admin identity, ${layout.svidRoot}/admin)\n` +
      (mesh.databaseUrl === undefined ? '' : `database     ${mesh.databaseUrl}\n`) +
      `\nTry 'npm run demo' in another terminal. Ctrl-C stops everything.\n` +
      (endpoints.services['image-store']!.replicas === undefined
        ? ''
        : `Kill one replica (kill -9 <pid>, pids: ${replicaPids(mesh)}) and the demo keeps working on the other.\n`),
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    mesh.onUnexpectedExit = (name, code, signal) => {
      if (stopping) return;
      // A replica going away is what the replicated mesh is for: the others carry on.
      const service = Object.values(endpoints.services).find((s) => s.replicas?.some((r) => r.name === name));
      const others = service === undefined ? [] : mesh.processesOf(service.name as 'auth').filter((n) => n !== name && mesh.pid(n) !== undefined);
      if (others.length > 0) {
        process.stderr.write(`twokey: ${name} exited (${signal ?? `code ${code}`}); ${others.join(', ')} carr${others.length === 1 ? 'ies' : 'y'} on. See ${layout.logFile(name)}.\n`);
        return;
      }
      process.stderr.write(`twokey: ${name} exited unexpectedly (${signal ?? `code ${code}`}); see ${layout.logFile(name)}. Stopping.\n`);
      void stop(1);
    };
    const stop = async (code: number): Promise<void> => {
      if (stopping) return;
      stopping = true;
      process.stdout.write('\ntwokey: stopping...\n');
      await web.close();
      await mesh.stop();
      process.stdout.write('twokey: stopped\n');
      resolve(code);
    };
    process.once('SIGINT', () => void stop(0));
    process.once('SIGTERM', () => void stop(0));
  });
}

function replicaPids(mesh: LocalMesh): string {
  return (['auth', 'image-store'] as const).flatMap((s) => mesh.processesOf(s).map((n) => `${n} ${mesh.pid(n)}`)).join(', ');
}
