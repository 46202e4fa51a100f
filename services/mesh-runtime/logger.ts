// The structured logger every service process writes with: JSON lines on stdout, written
// synchronously so a crash or kill loses no decision line.
import { pino, type Logger } from 'pino';

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function createLogger(service: string, level = 'info'): Logger {
  const chosen = LEVELS.has(level) ? level : 'info';
  return pino(
    { level: chosen, base: { service, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: 1, sync: true }),
  );
}

export type { Logger };
