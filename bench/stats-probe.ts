// Loaded into every server process the benchmark starts (its own servers via import, the example
// services via `--import`): answers the parent's IPC requests for this process's own CPU time and
// memory, so the cost is measured inside the server and nothing else.

/** One reading of a server process's resource counters. */
export interface ProcessStats {
  pid: number;
  /** Cumulative user + system CPU time of this process, microseconds (process.cpuUsage). */
  cpuMicros: number;
  /** Resident set size now, and the process's peak since it started, bytes. */
  rssBytes: number;
  peakRssBytes: number;
  /** V8 heap in use, bytes; after a full collection when the parent asked for one. */
  heapUsedBytes: number;
}

export interface StatsRequest {
  op: 'bench-stats';
  seq: number;
  collectGarbage: boolean;
}

export function readStats(collectGarbage: boolean): ProcessStats {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (collectGarbage && gc !== undefined) gc();
  const cpu = process.cpuUsage();
  return {
    pid: process.pid,
    cpuMicros: cpu.user + cpu.system,
    rssBytes: process.memoryUsage.rss(),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    heapUsedBytes: process.memoryUsage().heapUsed,
  };
}

function isStatsRequest(message: unknown): message is StatsRequest {
  return typeof message === 'object' && message !== null && (message as { op?: unknown }).op === 'bench-stats';
}

if (process.send !== undefined) {
  process.on('message', (message: unknown) => {
    if (!isStatsRequest(message)) return;
    process.send!({ op: 'bench-stats-reply', seq: message.seq, stats: readStats(message.collectGarbage) });
  });
  // The parent's IPC channel must not be what keeps a finished server alive.
  process.channel?.unref();
}
