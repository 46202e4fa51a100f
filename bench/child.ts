// Child processes of the benchmark (servers and the load generator) and request/reply over their
// IPC channel. Every child is killed when the benchmark exits, however it exits.
import { fork, type ChildProcess } from 'node:child_process';
import type { ProcessStats } from './stats-probe.ts';

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

export interface SpawnOptions {
  /** Module to run (TypeScript through tsx). */
  entry: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Extra node flags, e.g. ['--import', '<probe>']. */
  nodeFlags?: string[];
  cwd?: string;
  label: string;
}

export class Child {
  readonly label: string;
  readonly process: ChildProcess;
  #seq = 0;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #listeners: Array<(message: Record<string, unknown>) => void> = [];
  #stderrTail = '';

  constructor(options: SpawnOptions) {
    killAllOnExit();
    this.label = options.label;
    this.process = fork(options.entry, options.args ?? [], {
      execArgv: ['--import', 'tsx', '--expose-gc', ...(options.nodeFlags ?? [])],
      env: options.env ?? process.env,
      cwd: options.cwd,
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    live.add(this.process);
    this.process.stderr!.on('data', (chunk: Buffer) => {
      this.#stderrTail = (this.#stderrTail + chunk.toString()).slice(-4000);
    });
    this.process.on('message', (message: Record<string, unknown>) => {
      const seq = message.seq;
      const waiter = typeof seq === 'number' ? this.#pending.get(seq) : undefined;
      if (waiter !== undefined && message.op !== 'bench-stats' && 'ok' in message) {
        this.#pending.delete(seq as number);
        if (message.ok === true) waiter.resolve(message.result);
        else waiter.reject(new Error(`${this.label}: ${String(message.error)}`));
        return;
      }
      if (waiter !== undefined && message.op === 'bench-stats-reply') {
        this.#pending.delete(seq as number);
        waiter.resolve(message.stats);
        return;
      }
      for (const listener of this.#listeners) listener(message);
    });
    this.process.on('exit', (code, signal) => {
      live.delete(this.process);
      const error = new Error(`${this.label} exited (${signal ?? code}) ${this.#stderrTail}`);
      for (const waiter of this.#pending.values()) waiter.reject(error);
      this.#pending.clear();
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  get stderrTail(): string {
    return this.#stderrTail;
  }

  /** Sends a request carrying a fresh `seq` and waits for the reply with that seq. */
  request<T>(message: Record<string, unknown>): Promise<T> {
    const seq = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      if (this.process.exitCode !== null || this.process.signalCode !== null) {
        reject(new Error(`${this.label} is not running: ${this.#stderrTail}`));
        return;
      }
      this.#pending.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.process.send({ ...message, seq });
    });
  }

  stats(collectGarbage = false): Promise<ProcessStats> {
    return this.request<ProcessStats>({ op: 'bench-stats', collectGarbage });
  }

  /** Resolves with the first message `accept` recognises, or rejects when the child dies or time runs out. */
  waitFor<T>(accept: (message: Record<string, unknown>) => T | undefined, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.label}: not ready after ${timeoutMs} ms. ${this.#stderrTail}`));
      }, timeoutMs);
      const onExit = (): void => {
        cleanup();
        reject(new Error(`${this.label} exited before it was ready: ${this.#stderrTail}`));
      };
      const listener = (message: Record<string, unknown>): void => {
        const value = accept(message);
        if (value === undefined) return;
        cleanup();
        resolve(value);
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        this.process.off('exit', onExit);
        const i = this.#listeners.indexOf(listener);
        if (i >= 0) this.#listeners.splice(i, 1);
      };
      this.process.once('exit', onExit);
      this.#listeners.push(listener);
    });
  }

  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.process.once('exit', () => resolve()));
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}
