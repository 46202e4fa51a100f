// Runs one scenario for one round: warm-up, a closed-loop phase (throughput) and an open-loop
// phase at the fixed offered rate (latency), reading the servers' CPU counters around each phase.
import type { Child } from './child.ts';
import type { StatsSource } from './proc-stats.ts';
import type { LoadJob, LoadResult, CallSpec } from './load-process.ts';
import type { RawOutcome } from './h2-raw-client.ts';
import type { ProcessStats } from './stats-probe.ts';
import type { CallOutcome } from './wire-client.ts';

export interface Scenario {
  id: string;
  label: string;
  /** The server processes whose CPU and memory this scenario's calls cost. */
  servers: StatsSource[];
  call: CallSpec;
  connections: number;
  /** Calls in flight in the closed-loop phase. */
  concurrency: number;
  /** Open a new pool of connections each round and close it after (the connection leak check). */
  reconnectEachRound: boolean;
  /** Offered rate of the open-loop phase when not the run's common --rate. */
  openRate?: number;
  /** What every call must end with; checked by status before measuring and by shape while measuring. */
  expect: { shape: RawOutcome; code: number; messageIncludes?: string };
}

export interface Timing {
  warmupMs: number;
  closedMs: number;
  openMs: number;
  rate: number;
}

export interface RoundResult {
  callsPerSecond: number;
  closed: LoadResult;
  open: LoadResult;
  cpuSecondsPer1k: number;
  cpuSecondsPer1kOpen: number;
  serverCoreUse: number;
  /** Servers' heap after a full collection once this round's connections were closed (bytes, summed). */
  heapAfterRoundBytes: number | undefined;
}

async function cpuMicros(servers: readonly StatsSource[]): Promise<number> {
  const stats = await Promise.all(servers.map((s) => s.stats()));
  return stats.reduce((sum, s) => sum + s.cpuMicros, 0);
}

export async function allStats(servers: readonly StatsSource[], collectGarbage: boolean): Promise<ProcessStats[]> {
  return Promise.all(servers.map((s) => s.stats(collectGarbage)));
}

function checkShapes(scenario: Scenario, phase: string, result: LoadResult): void {
  const wrong = Object.entries(result.outcomes).filter(([shape]) => shape !== scenario.expect.shape);
  if (wrong.length > 0 || result.calls === 0) {
    throw new Error(
      `scenario ${scenario.id} ${phase}: expected every call to end as '${scenario.expect.shape}', got ${JSON.stringify(result.outcomes)}`,
    );
  }
}

/** Before any measuring: a few calls whose exact gRPC status and message must be what the scenario says. */
export async function probeScenario(load: Child, scenario: Scenario): Promise<CallOutcome> {
  const outcomes = await load.request<CallOutcome[]>({ op: 'probe', ...scenario.call, calls: 3 });
  for (const outcome of outcomes) {
    const messageOk = scenario.expect.messageIncludes === undefined || outcome.message.includes(scenario.expect.messageIncludes);
    if (outcome.code !== scenario.expect.code || !messageOk) {
      throw new Error(
        `scenario ${scenario.id}: expected status ${scenario.expect.code}${
          scenario.expect.messageIncludes === undefined ? '' : ` with "${scenario.expect.messageIncludes}"`
        }, got ${outcome.code} "${outcome.message}"`,
      );
    }
  }
  return outcomes[0]!;
}

function connectionKeyOf(scenario: Scenario, round: number | 'warm-up'): string {
  return scenario.reconnectEachRound ? `${scenario.id}/round-${round}` : `${scenario.id}/persistent`;
}

/**
 * Once before the rounds: the first seconds of a process run unoptimized code, and the first
 * round would otherwise measure the JIT rather than the server.
 */
export async function warmUp(load: Child, scenario: Scenario, durationMs: number): Promise<void> {
  const connectionKey = connectionKeyOf(scenario, 'warm-up');
  await load.request<LoadResult>({
    op: 'load',
    ...scenario.call,
    connectionKey,
    connections: scenario.connections,
    mode: 'closed',
    concurrency: scenario.concurrency,
    rate: 0,
    durationMs,
    maxCalls: undefined,
  });
  if (scenario.reconnectEachRound) await load.request({ op: 'close', prefix: connectionKey });
}

export async function runRound(load: Child, scenario: Scenario, timing: Timing, round: number): Promise<RoundResult> {
  const connectionKey = connectionKeyOf(scenario, round);
  const job = (mode: 'closed' | 'open', durationMs: number): Omit<LoadJob, 'seq'> => ({
    op: 'load',
    ...scenario.call,
    connectionKey,
    connections: scenario.connections,
    mode,
    concurrency: scenario.concurrency,
    rate: scenario.openRate ?? timing.rate,
    durationMs,
    maxCalls: undefined,
  });
  await load.request<LoadResult>(job('closed', timing.warmupMs));

  const cpu0 = await cpuMicros(scenario.servers);
  const closed = await load.request<LoadResult>(job('closed', timing.closedMs));
  const cpu1 = await cpuMicros(scenario.servers);
  const open = await load.request<LoadResult>(job('open', timing.openMs));
  const cpu2 = await cpuMicros(scenario.servers);
  checkShapes(scenario, 'closed loop', closed);
  checkShapes(scenario, 'open loop', open);

  let heapAfterRoundBytes: number | undefined;
  if (scenario.reconnectEachRound) {
    await load.request({ op: 'close', prefix: connectionKey });
    // Give the server a moment to see the sockets close before it collects.
    await new Promise((resolve) => setTimeout(resolve, 200));
    heapAfterRoundBytes = (await allStats(scenario.servers, true)).reduce((sum, s) => sum + s.heapUsedBytes, 0);
  }
  return {
    callsPerSecond: (closed.calls / closed.elapsedMs) * 1000,
    closed,
    open,
    cpuSecondsPer1k: ((cpu1 - cpu0) / 1e6 / closed.calls) * 1000,
    cpuSecondsPer1kOpen: ((cpu2 - cpu1) / 1e6 / open.calls) * 1000,
    serverCoreUse: (cpu1 - cpu0) / 1e3 / closed.elapsedMs,
    heapAfterRoundBytes,
  };
}
