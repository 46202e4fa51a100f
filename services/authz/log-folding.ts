// Rate limit for repeated log lines: the first lines per key and window are written, the rest folded into one counted summary line.

export interface FoldingPolicy {
  /** How long one key's window lasts. */
  readonly windowMs: number;
  /** Lines written per key and window; the ones after are folded. */
  readonly linesPerWindow: number;
  /** Keys tracked at once; beyond them new keys share one (the summary then names `(other)`). */
  readonly maxKeys: number;
}

// Ten lines per peer and reason every ten seconds: a human reading the log still sees each kind of
// denial as it starts, while a flood of them costs one summary line per ten seconds.
export const DEFAULT_FOLDING: FoldingPolicy = { windowMs: 10_000, linesPerWindow: 10, maxKeys: 1000 };

/** One key's current window. */
export interface FoldWindow {
  readonly startMs: number;
  written: number;
  folded: number;
}

/** Pure: whether a line for a key whose window is `window` is written at `nowMs`; the window to keep, and the one that ended (to summarize). */
export function foldStep(window: FoldWindow | undefined, nowMs: number, policy: FoldingPolicy): { write: boolean; window: FoldWindow; ended?: FoldWindow } {
  if (window === undefined || nowMs >= window.startMs + policy.windowMs || nowMs < window.startMs) {
    const next = { startMs: nowMs, written: 1, folded: 0 };
    return window === undefined ? { write: true, window: next } : { write: true, window: next, ended: window };
  }
  if (window.written < policy.linesPerWindow) {
    window.written++;
    return { write: true, window };
  }
  window.folded++;
  return { write: false, window };
}

/** What a summary line says: the key's fields, how many lines were folded, over which span. */
export interface FoldSummary {
  readonly fields: Readonly<Record<string, unknown>>;
  readonly folded: number;
  readonly fromMs: number;
  readonly toMs: number;
}

export const OVERFLOW_KEY = '(other)';

/**
 * Per-key windows over `foldStep`. `admit` says whether to write a line; summaries of windows that
 * folded something are handed to `summarize` when the key's next line arrives after the window,
 * when `sweep` finds the window over (a timer calls it while anything is folded), or at `close`:
 * every folded line is counted in exactly one summary.
 */
export class LineFolder {
  readonly #policy: FoldingPolicy;
  readonly #now: () => number;
  readonly #summarize: (summary: FoldSummary) => void;
  readonly #windows = new Map<string, { window: FoldWindow; fields: Readonly<Record<string, unknown>> }>();
  readonly #sweeps: boolean;
  #timer: NodeJS.Timeout | undefined;

  constructor(summarize: (summary: FoldSummary) => void, options: { policy?: FoldingPolicy; now?: () => number; sweepTimer?: boolean } = {}) {
    this.#policy = options.policy ?? DEFAULT_FOLDING;
    this.#now = options.now ?? Date.now;
    this.#summarize = summarize;
    this.#sweeps = options.sweepTimer !== false;
  }

  /** Whether the line for `key` is written now. `fields` (called once per window) name the key in its summary. */
  admit(key: string, fields: () => Readonly<Record<string, unknown>>): boolean {
    const now = this.#now();
    let k = key;
    if (!this.#windows.has(k) && this.#windows.size >= this.#policy.maxKeys) {
      this.sweep();
      if (this.#windows.size >= this.#policy.maxKeys) k = OVERFLOW_KEY;
    }
    const held = this.#windows.get(k);
    const step = foldStep(held?.window, now, this.#policy);
    if (step.ended !== undefined && held !== undefined) this.#emit(held.fields, step.ended, now);
    if (held === undefined || step.window !== held.window) {
      this.#windows.set(k, { window: step.window, fields: k === OVERFLOW_KEY ? { key: OVERFLOW_KEY } : fields() });
    }
    if (!step.write) this.#arm();
    return step.write;
  }

  /** Summarizes and forgets every window that is over; `all` ends the open ones too (closing). */
  sweep(all = false): void {
    const now = this.#now();
    for (const [key, held] of this.#windows) {
      if (all || now >= held.window.startMs + this.#policy.windowMs || now < held.window.startMs) {
        this.#windows.delete(key);
        this.#emit(held.fields, held.window, now);
      }
    }
  }

  /** Writes every pending summary and stops the timer. */
  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.sweep(true);
  }

  #emit(fields: Readonly<Record<string, unknown>>, window: FoldWindow, now: number): void {
    if (window.folded > 0) this.#summarize({ fields, folded: window.folded, fromMs: window.startMs, toMs: Math.max(now, window.startMs) });
  }

  #arm(): void {
    if (!this.#sweeps || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.sweep();
      for (const held of this.#windows.values()) if (held.window.folded > 0) return this.#arm();
    }, this.#policy.windowMs);
    this.#timer.unref();
  }
}
