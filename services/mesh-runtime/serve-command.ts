// `twokey serve <service>`: runs one example service in this process until SIGINT or SIGTERM.
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

export const usage = `Usage: twokey serve <${Object.keys(SERVICES).join('|')}>

Runs one service of the example mesh. Configuration comes from the environment:
TWOKEY_LISTEN, TWOKEY_HEALTH_LISTEN, TWOKEY_SVID_DIR, TWOKEY_REGISTRY, TWOKEY_DATA_DIR,
TWOKEY_AUTH_ADDR, TWOKEY_IMAGE_STORE_ADDR, TWOKEY_TAGGING_ADDR, TWOKEY_PUBLIC_LISTEN,
TWOKEY_PUBLIC_TLS_DIR, TWOKEY_JWKS_HTTPS_LISTEN, TWOKEY_KEY_ROTATION, TWOKEY_CLEANER_INTERVAL,
TWOKEY_LOG_LEVEL, TWOKEY_LOG_SYNC, TWOKEY_DRY_RUN.
`;

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
