// The example mesh on loopback from one state directory, until Ctrl-C (what `npm start` runs).
import { isTwokeyError } from '../services/authz/errors.ts';
import { startLocalMesh, type LocalMesh } from './local-mesh/local-mesh.ts';
import { parsePortBase } from './local-mesh/ports.ts';
import { startConsole, type RunningConsole } from './console/console-command.ts';

function table(mesh: LocalMesh, consoleUrl: string): string {
  const rows = Object.values(mesh.endpoints.services).map((s) => [
    s.name,
    s.name === 'gateway' ? `${mesh.endpoints.gateway.address} (public TLS)` : (s.address ?? '(no listener)'),
    s.health,
    s.spiffeId,
    s.grants.length === 0 ? '(none)' : s.grants.map((g) => g.replace(/^\/twokey\./, '')).join(', '),
  ]);
  rows.push(['console', consoleUrl, '-', '(none: reads logs and certificates)', '(none)']);
  const head = ['service', 'address', 'health', 'SPIFFE ID', 'grants'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.slice().map((r) => (i === 4 ? 0 : r[i]!.length))));
  const line = (r: string[]): string => r.map((c, i) => (i === 4 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

export async function startMesh(): Promise<number> {
  const stateDir = process.env['TWOKEY_STATE_DIR'] ?? '.twokey';
  process.stdout.write(`twokey: starting the example mesh from ${stateDir}\n`);
  let mesh: LocalMesh;
  try {
    mesh = await startLocalMesh({
      stateDir,
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
      `revoke       npm run twokey -- revoke list${stateDir === '.twokey' ? '' : ` --state-dir ${stateDir}`}  (as the admin identity, ${layout.svidRoot}/admin)\n\n` +
      `Try 'npm run demo' in another terminal. Ctrl-C stops everything.\n`,
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    mesh.onUnexpectedExit = (name, code, signal) => {
      if (stopping) return;
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

