// Bounded steady load for fault tests: concurrent workers repeating one operation, counting what happened.
import type { ServiceError } from '@grpc/grpc-js';
import { STATUS_NAMES } from '../e2e/mesh-harness.ts';

/** Scales durations and counts: 1 in `npm test`, larger under `npm run soak`. */
export const SOAK_SCALE = Math.max(1, Number(process.env['TWOKEY_SOAK_SCALE'] ?? 1));

export interface LoadReport {
  name: string;
  attempted: number;
  succeeded: number;
  failed: number;
  /** Failures by gRPC status name (or the error message for non-gRPC errors). */
  failures: Record<string, number>;
  /** Work acknowledged but not found afterwards; filled in by the fault that can lose work. */
  lost: number;
  durationMs: number;
}

export class Load {
  readonly report: LoadReport;
  #running = true;
  readonly #workers: Promise<void>[] = [];
  readonly #started = Date.now();

  /**
   * Starts `concurrency` workers calling `op(i)` back to back until stop(), or until `maxMs` has
   * passed, so a test that fails before calling stop() cannot leave load running forever.
   */
  constructor(name: string, concurrency: number, op: (i: number) => Promise<unknown>, opts: { pauseMs?: number; maxMs?: number } = {}) {
    const deadline = this.#started + (opts.maxMs ?? 60_000 * SOAK_SCALE);
    const report: LoadReport = { name, attempted: 0, succeeded: 0, failed: 0, failures: {}, lost: 0, durationMs: 0 };
    this.report = report;
    let next = 0;
    for (let w = 0; w < concurrency; w++) {
      this.#workers.push(
        (async () => {
          while (this.#running && Date.now() < deadline) {
            const i = next++;
            report.attempted += 1;
            try {
              await op(i);
              report.succeeded += 1;
            } catch (err) {
              report.failed += 1;
              const code = (err as ServiceError).code;
              // Decision and request ids differ per call; without them failures group by cause.
              const text = typeof code === 'number' ? `${STATUS_NAMES[code]}: ${(err as ServiceError).details}` : String((err as Error).message);
              const key = text.replace(/\s*\((decision|request)[^)]*\)/g, '').slice(0, 160);
              report.failures[key] = (report.failures[key] ?? 0) + 1;
            }
            // An op that fails at once (a closed client) settles as a microtask; yielding to the
            // event loop each time keeps timers, child-process exits and test timeouts running.
            if (opts.pauseMs) await sleep(opts.pauseMs);
            else await new Promise((resolve) => setImmediate(resolve));
          }
        })(),
      );
    }
  }

  async stop(): Promise<LoadReport> {
    this.#running = false;
    await Promise.all(this.#workers);
    this.report.durationMs = Date.now() - this.#started;
    return this.report;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One line per fault in the test output: what was tried, what failed, what was lost. */
export function printReport(r: LoadReport, extra = ''): void {
  const failures = Object.entries(r.failures)
    .map(([k, v]) => `${v}x ${k.length > 120 ? `${k.slice(0, 120)}...` : k}`)
    .join('; ');
  process.stdout.write(
    `      [fault] ${r.name}: attempted ${r.attempted}, failed ${r.failed}, lost ${r.lost} in ${r.durationMs} ms${extra ? `, ${extra}` : ''}${failures ? ` (${failures})` : ''}\n`,
  );
}
