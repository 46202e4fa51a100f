// CPU time and memory of a process the benchmark did not fork itself (the example mesh's
// services, started the way `npm start` starts them), read from Linux's /proc.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type { ProcessStats } from './stats-probe.ts';

/** Anything whose resource counters the benchmark reads around a phase. */
export interface StatsSource {
  readonly label: string;
  stats(collectGarbage?: boolean): Promise<ProcessStats>;
}

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  ticksPerSecond ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  return ticksPerSecond;
}

export class ProcStats implements StatsSource {
  readonly label: string;
  readonly #pid: number;

  constructor(label: string, pid: number) {
    this.label = label;
    this.#pid = pid;
  }

  /** Heap is not visible from outside the process: heapUsedBytes is NaN, and no collection runs. */
  async stats(): Promise<ProcessStats> {
    const stat = fs.readFileSync(`/proc/${this.#pid}/stat`, 'utf8');
    // Fields after the parenthesised command name, which may itself contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime (fields 14 and 15)
    const status = fs.readFileSync(`/proc/${this.#pid}/status`, 'utf8');
    const kib = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
    return {
      pid: this.#pid,
      cpuMicros: (ticks / clockTicks()) * 1e6,
      rssBytes: kib('VmRSS') * 1024,
      peakRssBytes: kib('VmHWM') * 1024,
      heapUsedBytes: Number.NaN,
    };
  }
}
