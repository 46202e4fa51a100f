// The streams a server allowed and that are still open: re-decided when what they were allowed on changes.

/** An open stream that can decide again now, ending itself when that denies. */
export interface Recheckable {
  recheck(): void;
}

export interface OpenStreamsOptions {
  /**
   * Whether the revocation set is too old to trust now. A set that goes stale sends no update, so
   * open streams would outlive the bound new calls are refused after: while any stream is open this
   * is looked at every `staleCheckMs`, and the streams are re-decided while it says stale.
   */
  isStale?: () => boolean;
  staleCheckMs?: number;
}

/**
 * The open streams of one server. The staleness timer runs only while a stream is open, and
 * close() stops it for good, so a closed server leaves no timer behind.
 */
export class OpenStreams<T extends Recheckable> {
  readonly #streams = new Set<T>();
  readonly #isStale: (() => boolean) | undefined;
  readonly #staleCheckMs: number;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: OpenStreamsOptions = {}) {
    this.#isStale = options.isStale;
    this.#staleCheckMs = options.staleCheckMs ?? 1000;
  }

  get size(): number {
    return this.#streams.size;
  }

  add(stream: T): void {
    this.#streams.add(stream);
    if (this.#isStale !== undefined && this.#timer === undefined && !this.#closed) {
      this.#timer = setInterval(() => {
        if (this.#isStale!()) this.recheckAll();
      }, this.#staleCheckMs);
      this.#timer.unref();
    }
  }

  delete(stream: T): void {
    if (!this.#streams.delete(stream) || this.#streams.size > 0) return;
    this.#stopTimer();
  }

  /** Re-decides every open stream; those now denied end at once. */
  recheckAll(): void {
    for (const stream of [...this.#streams]) stream.recheck();
  }

  /** Stops watching; streams still open end with their server. */
  close(): void {
    this.#closed = true;
    this.#stopTimer();
  }

  #stopTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
