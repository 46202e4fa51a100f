// A log destination that hands the lines of one event-loop turn to the kernel in one write, never blocking on its reader.
import { closeSync, constants, fstatSync, openSync, write, writeSync } from 'node:fs';

// Errors after which the reader is gone for good: lines have nowhere to go and are dropped.
const READER_GONE = new Set(['EPIPE', 'EBADF', 'ECONNRESET']);
// A non-blocking descriptor whose reader is behind: try again shortly.
const RETRY_AFTER_MS = 10;
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/** Every destination still holding lines, written out synchronously when the process exits. */
const live = new Set<WeakRef<LineBatchDestination>>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const ref of live) ref.deref()?.flushSync();
  });
}

/**
 * A second, non-blocking handle on `fd` when it is a pipe (a container's stdout is one): opening
 * /proc/self/fd/N gives a pipe a description of its own, so O_NONBLOCK here leaves `fd` as it
 * was. Undefined elsewhere (a file's new description would have an offset of its own).
 */
function nonBlockingPipe(fd: number): number | undefined {
  try {
    if (!fstatSync(fd).isFIFO()) return undefined;
    return openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
}

/**
 * pino's line sink for the services' asynchronous logging. A decision line is written on every
 * call; sonic-boom's asynchronous mode appends each line to a pending string, measures it again
 * and writes it through the thread pool, which cost the benchmark's server about 0.6 x a plain
 * call's CPU. Here lines are only collected while a turn runs; at its end they are joined once
 * and written: to a pipe straight from this thread through a non-blocking handle, and whatever the
 * kernel does not take at once (a full pipe) or any other destination with one fs.write on the
 * thread pool, while the next turns' lines wait for it. The event loop never blocks on a slow
 * reader, and lines stay in order.
 */
export class LineBatchDestination {
  readonly #fd: number;
  readonly #direct: number | undefined;
  readonly #ownsFd: boolean;
  #pending: string[] = [];
  #inFlight: Buffer | undefined;
  /** The in-flight buffer is waiting for a retry, not in a write(2) of the thread pool. */
  #retrying = false;
  #scheduled = false;
  #closed = false;
  #waiters: Array<() => void> = [];
  readonly #ref = new WeakRef(this);

  /** `dest`: a file descriptor, or a path opened for appending. */
  constructor(dest: number | string) {
    this.#ownsFd = typeof dest === 'string';
    this.#fd = typeof dest === 'string' ? openSync(dest, 'a', 0o600) : dest;
    this.#direct = nonBlockingPipe(this.#fd);
    live.add(this.#ref);
    installExitHook();
  }

  write(line: string): boolean {
    if (this.#closed) return false;
    this.#pending.push(line);
    if (!this.#scheduled && this.#inFlight === undefined) {
      this.#scheduled = true;
      setImmediate(() => this.#writeOut());
    }
    return true;
  }

  /** Calls back once every line written so far has reached the kernel (or the reader is gone). */
  flush(callback: () => void): void {
    if (this.#idle()) {
      setImmediate(callback);
      return;
    }
    this.#waiters.push(callback);
  }

  /**
   * Writes what is pending before returning, blocking if it must: for process exit, when no
   * callback will run any more. A write already in flight is the thread pool's: its write(2) is
   * under way and is not repeated (as sonic-boom does), so no line is written twice.
   */
  flushSync(): void {
    if (this.#closed) return;
    const waiting = this.#retrying ? this.#inFlight : undefined;
    let buf = Buffer.from(this.#pending.join(''));
    if (waiting !== undefined) buf = Buffer.concat([waiting, buf]);
    this.#pending = [];
    this.#inFlight = undefined;
    this.#retrying = false;
    while (buf.length > 0) {
      try {
        buf = buf.subarray(writeSync(this.#fd, buf));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          Atomics.wait(PAUSE, 0, 0, RETRY_AFTER_MS); // the reader is behind: wait for it, without spinning
          continue;
        }
        return this.#readerGone();
      }
    }
    this.#settle();
  }

  /** Writes what is pending and closes the descriptor if this destination opened it. */
  end(): void {
    this.flushSync();
    this.#closed = true;
    live.delete(this.#ref);
    if (this.#direct !== undefined) closeSync(this.#direct);
    if (this.#ownsFd) closeSync(this.#fd);
  }

  #idle(): boolean {
    return this.#closed || (this.#inFlight === undefined && this.#pending.length === 0);
  }

  #writeOut(): void {
    this.#scheduled = false;
    if (this.#closed || this.#inFlight !== undefined) return;
    if (this.#pending.length === 0) return this.#settle();
    let buf = Buffer.from(this.#pending.length === 1 ? this.#pending[0]! : this.#pending.join(''));
    this.#pending = [];
    if (this.#direct !== undefined) {
      try {
        buf = buf.subarray(writeSync(this.#direct, buf));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (READER_GONE.has(code)) return this.#readerGone();
        // EAGAIN (the pipe is full) and anything else: the thread pool's write waits for the reader.
      }
      if (buf.length === 0) return this.#settle();
    }
    this.#send(buf);
  }

  #send(buf: Buffer): void {
    this.#inFlight = buf;
    this.#retrying = false;
    write(this.#fd, buf, 0, buf.length, null, (err, written) => {
      if (this.#inFlight !== buf) return; // flushSync took it over
      if (err !== null) {
        if (READER_GONE.has(err.code ?? '')) return this.#readerGone();
        // A full non-blocking pipe (EAGAIN) or any other failure: keep the lines and try again.
        // The timer holds the process open as a pending write would: lines are not given up.
        if (err.code !== 'EAGAIN' && err.code !== 'EINTR') process.stderr.write(`twokey: log write failed (${err.code ?? err.message}); retrying\n`);
        this.#retrying = true;
        setTimeout(() => this.#inFlight === buf && this.#send(buf), err.code === 'EAGAIN' ? RETRY_AFTER_MS : 1000);
        return;
      }
      if (written < buf.length) return this.#send(buf.subarray(written));
      this.#inFlight = undefined;
      this.#writeOut();
    });
  }

  #readerGone(): void {
    this.#closed = true;
    this.#pending = [];
    this.#inFlight = undefined;
    this.#retrying = false;
    live.delete(this.#ref);
    this.#settle();
  }

  #settle(): void {
    if (!this.#idle()) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}
