// Follows a growing log file line by line, surviving rotation, truncation and half-written lines.
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';

export interface LogTailOptions {
  /** How often the file is looked at. */
  pollMs?: number;
  /** How much of an existing file's end is read at start, so recent lines show at once. */
  backlogBytes?: number;
  /** A line longer than this is dropped (with the rest of it up to its newline): memory stays bounded. */
  maxLineBytes?: number;
  /** Most bytes read per poll, so one burst cannot stall the process. */
  maxReadBytes?: number;
}

/** A file that appears (or replaces a rotated one) is read whole: all of it is new. */
const FROM_START = Number.POSITIVE_INFINITY;

/**
 * Polls rather than watches: fs.watch misses renames on some file systems and fires per write on
 * others, while a stat every quarter second costs nothing and sees rotation (a new inode at the
 * path) and truncation (a size below the offset read) alike.
 */
export class LogTail {
  readonly #path: string;
  readonly #onLine: (line: string) => void;
  readonly #maxLineBytes: number;
  readonly #maxReadBytes: number;
  readonly #timer: NodeJS.Timeout;
  readonly #buffer: Buffer;
  #fd: number | undefined;
  #inode = -1;
  #offset = 0;
  #partial: Buffer[] = [];
  #partialBytes = 0;
  #skipping = false;
  // The last bytes read, checked again on each poll: a file truncated and rewritten past the old
  // offset between two polls (so never seen shorter) shows up as different bytes there.
  #fingerprint: Buffer = Buffer.alloc(0);

  constructor(path: string, onLine: (line: string) => void, opts: LogTailOptions = {}) {
    this.#path = path;
    this.#onLine = onLine;
    this.#maxLineBytes = opts.maxLineBytes ?? 256 * 1024;
    this.#maxReadBytes = opts.maxReadBytes ?? 1024 * 1024;
    this.#buffer = Buffer.allocUnsafe(64 * 1024);
    this.#open(opts.backlogBytes ?? 64 * 1024);
    this.#timer = setInterval(() => this.poll(), opts.pollMs ?? 250);
    this.#timer.unref();
  }

  #open(backlogBytes: number): void {
    try {
      this.#fd = openSync(this.#path, 'r');
    } catch {
      this.#fd = undefined; // not there yet: looked for again on the next poll
      return;
    }
    const st = fstatSync(this.#fd);
    this.#inode = st.ino;
    this.#offset = Math.max(0, st.size - backlogBytes);
    this.#fingerprint = Buffer.alloc(0);
    this.#resetLine();
    // Starting inside the file means starting inside a line: drop up to the first newline.
    this.#skipping = this.#offset > 0;
  }

  #resetLine(): void {
    this.#partial = [];
    this.#partialBytes = 0;
    this.#skipping = false;
  }

  /** Reads whatever was appended since the last poll. */
  poll(): void {
    if (this.#fd === undefined) return this.#open(FROM_START);
    let atPath: { ino: number; size: number } | undefined;
    try {
      atPath = statSync(this.#path);
    } catch {
      atPath = undefined; // renamed away and not yet recreated: finish the old file
    }
    const size = fstatSync(this.#fd).size;
    if (size < this.#offset || !this.#sameFingerprint()) {
      // Truncated in place (copytruncate): start over from its beginning.
      this.#offset = 0;
      this.#fingerprint = Buffer.alloc(0);
      this.#resetLine();
    }
    this.#drain();
    if (atPath !== undefined && atPath.ino !== this.#inode) {
      // Rotated: the old file is read to its end above; a line left unfinished there never ends.
      closeSync(this.#fd);
      this.#fd = undefined;
      this.#open(FROM_START);
      this.#drain();
    }
  }

  #sameFingerprint(): boolean {
    const length = this.#fingerprint.length;
    if (length === 0 || this.#fd === undefined) return true;
    const now = Buffer.alloc(length);
    return readSync(this.#fd, now, 0, length, this.#offset - length) === length && now.equals(this.#fingerprint);
  }

  #drain(): void {
    let budget = this.#maxReadBytes;
    while (this.#fd !== undefined && budget > 0) {
      const n = readSync(this.#fd, this.#buffer, 0, Math.min(this.#buffer.length, budget), this.#offset);
      if (n === 0) break;
      this.#offset += n;
      budget -= n;
      this.#split(this.#buffer.subarray(0, n));
    }
    if (this.#fd === undefined) return;
    const length = Math.min(64, this.#offset);
    this.#fingerprint = Buffer.alloc(length);
    readSync(this.#fd, this.#fingerprint, 0, length, this.#offset - length);
  }

  #split(chunk: Buffer): void {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      if (this.#skipping || this.#partialBytes + piece.length > this.#maxLineBytes) {
        this.#resetLine();
        continue;
      }
      const line = this.#partialBytes === 0 ? piece.toString('utf8') : Buffer.concat([...this.#partial, piece]).toString('utf8');
      this.#resetLine();
      if (line !== '') this.#onLine(line);
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0 || this.#skipping) return;
    if (this.#partialBytes + rest.length > this.#maxLineBytes) {
      this.#partial = [];
      this.#partialBytes = 0;
      this.#skipping = true;
      return;
    }
    // Copied: the read buffer is reused on the next read.
    this.#partial.push(Buffer.from(rest));
    this.#partialBytes += rest.length;
  }

  close(): void {
    clearInterval(this.#timer);
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}
