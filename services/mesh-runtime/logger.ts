// The structured logger every service process writes with: JSON lines on stdout.
import { pino, type Logger } from 'pino';
import { LineBatchDestination } from './line-batch-destination.ts';

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export interface LoggerOptions {
  level?: string;
  /**
   * Write each line before returning (one write(2) per line). Off by default: with a decision line
   * per call, a synchronous write stalls every call whenever stdout's reader (a pipe to a container
   * runtime or a log shipper) falls behind, while asynchronous writes leave the event loop serving.
   * Asynchronous lines are flushed by flushLogger() (MeshRuntime.close) and on process exit, so a
   * clean shutdown loses none; a crash or a SIGKILL can lose the lines not yet written. Turn on
   * (TWOKEY_LOG_SYNC=1) where every decision line must be written before its call is answered.
   */
  sync?: boolean;
  /** A file descriptor or path; stdout by default. */
  dest?: number | string;
}

/**
 * pino's isoTime, formatted once per millisecond: every decision writes a line, and toISOString()
 * was about half a microsecond of each one. Same text as pino.stdTimeFunctions.isoTime.
 */
export function isoTimeEachMs(clock: () => number = Date.now): () => string {
  let ms = Number.NaN;
  let text = '';
  return () => {
    const now = clock();
    if (now !== ms) {
      ms = now;
      text = `,"time":"${new Date(now).toISOString()}"`;
    }
    return text;
  };
}

export function createLogger(service: string, options: LoggerOptions = {}): Logger {
  const level = options.level !== undefined && LEVELS.has(options.level) ? options.level : 'info';
  const dest = options.dest ?? 1;
  return pino(
    { level, base: { service, pid: process.pid }, timestamp: isoTimeEachMs() },
    options.sync === true ? pino.destination({ dest, sync: true, minLength: 0 }) : new LineBatchDestination(dest),
  );
}

/** Resolves once every line logged so far is written (at once for a synchronous logger). */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    try {
      logger.flush(() => resolve());
    } catch {
      // A destination that cannot flush (destroyed) has nothing more to write.
      resolve();
    }
  });
}

export type { Logger };
