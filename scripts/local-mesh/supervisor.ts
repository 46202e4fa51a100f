// Runs the mesh's services as child processes: one log file each, clean stop, kill and restart.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { PACKAGE_ROOT, packagePath } from '../../services/authz/package-root.ts';

/** The compiled `twokey` command (`npm run build`): child services run what ships, not the sources. */
export const TWOKEY_BIN = packagePath('dist', 'scripts', 'twokey.js');
/** The repository root, with a trailing slash. */
export const REPO_ROOT = `${PACKAGE_ROOT}/`;

export interface ServiceSpec {
  name: string;
  /** The service it runs (`twokey serve SERVICE`) when `name` is a replica's; default `name`. */
  service?: string;
  env: Record<string, string>;
  logFile: string;
}

interface Running {
  child: ChildProcess;
  exited: Promise<number | null>;
}

export class Supervisor {
  readonly #specs = new Map<string, ServiceSpec>();
  readonly #running = new Map<string, Running>();
  /** Called when a service exits without being asked to. */
  onUnexpectedExit: (name: string, code: number | null, signal: NodeJS.Signals | null) => void = () => undefined;
  readonly #stopping = new Set<string>();

  add(spec: ServiceSpec): void {
    this.#specs.set(spec.name, spec);
  }

  start(name: string): void {
    const spec = this.#specs.get(name);
    if (spec === undefined) throw new Error(`no service ${name}`);
    if (this.#running.has(name)) throw new Error(`${name} is already running`);
    const log = openSync(spec.logFile, 'a', 0o600);
    const child = spawn(process.execPath, [TWOKEY_BIN, 'serve', spec.service ?? name], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...spec.env, TWOKEY_STOP_WITH_PARENT: '1' },
      // The child's stdin is a pipe only this process holds: if this process dies, even by
      // SIGKILL, the pipe closes and the child stops itself instead of lingering.
      stdio: ['pipe', log, log],
    });
    closeSync(log);
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code, signal) => {
        this.#running.delete(name);
        if (!this.#stopping.has(name)) this.onUnexpectedExit(name, code, signal);
        this.#stopping.delete(name);
        resolve(code);
      });
    });
    this.#running.set(name, { child, exited });
  }

  pid(name: string): number | undefined {
    return this.#running.get(name)?.child.pid;
  }

  isRunning(name: string): boolean {
    return this.#running.has(name);
  }

  /** SIGTERM, then SIGKILL if the service has not exited after `graceMs`. */
  async stop(name: string, graceMs = 5000): Promise<void> {
    const running = this.#running.get(name);
    if (running === undefined) return;
    this.#stopping.add(name);
    running.child.kill('SIGTERM');
    const timer = setTimeout(() => running.child.kill('SIGKILL'), graceMs);
    await running.exited;
    clearTimeout(timer);
  }

  /** SIGKILL: the process gets no chance to flush or close anything. */
  async kill(name: string): Promise<void> {
    const running = this.#running.get(name);
    if (running === undefined) return;
    this.#stopping.add(name);
    running.child.kill('SIGKILL');
    await running.exited;
  }

  async stopAll(graceMs = 5000): Promise<void> {
    await Promise.all([...this.#running.keys()].map((name) => this.stop(name, graceMs)));
  }
}
