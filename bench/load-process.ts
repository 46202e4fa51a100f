// Entry of the load generator child process: it never shares an event loop with a server. The
// parent sends jobs over IPC; each runs either closed-loop (a fixed number of calls always in
// flight: throughput) or open-loop (calls sent at their scheduled times whatever the server does,
// latency measured from the scheduled time, so a slow server cannot hide its queueing delay).
import { WireConnection, frameMessage, type CallOutcome, type WireTarget } from './wire-client.ts';
import { RawH2Connection, type RawOutcome } from './h2-raw-client.ts';
import { summarizeLatencies, type LatencySummary } from './latency.ts';
import { mintTokens, type TokenSpec } from './token-minter.ts';

/** Tokens obtained elsewhere (a real login), kept under a set id like minted ones. */
export interface TokensRequest {
  op: 'tokens';
  setId: string;
  tokens: string[];
}

export interface MintRequest {
  op: 'mint';
  setId: string;
  spec: TokenSpec;
  count: number;
}

/** Where and what to call: shared by load jobs and status probes. */
export interface CallSpec {
  target: WireTarget;
  path: string;
  /** The serialized request message (unframed). */
  message: Uint8Array;
  /** Token set (minted earlier) presented round-robin, one per call; undefined sends no token. */
  tokenSetId: string | undefined;
}

export interface LoadJob extends CallSpec {
  op: 'load';
  /** Names a pool of connections: jobs with the same key reuse it until a 'close' request. */
  connectionKey: string;
  connections: number;
  mode: 'closed' | 'open';
  /** Closed loop: calls in flight. */
  concurrency: number;
  /** Open loop: calls per second. */
  rate: number;
  durationMs: number;
  /** Closed loop: stop after this many calls even before durationMs. */
  maxCalls: number | undefined;
}

export interface ProbeRequest extends CallSpec {
  op: 'probe';
  calls: number;
}

export interface LoadResult {
  calls: number;
  elapsedMs: number;
  /** Calls per response shape ('message', 'trailers-only', 'reset', 'timeout'). */
  outcomes: Record<string, number>;
  latencyMs: LatencySummary;
  connectMs: number;
  /** Fraction of one core the load generator itself used: near 1 would mean it, not the server, was the limit. */
  loadCoreUse: number;
}

const tokenSets = new Map<string, string[]>();
const connectionPools = new Map<string, RawH2Connection[]>();
// An open-loop call still unanswered this long after the run counts as a timeout.
const DRAIN_LIMIT_MS = 5000;
// Connections are opened in batches: 1,000 simultaneous handshakes would measure a handshake storm.
const CONNECT_BATCH = 50;

async function openConnections(target: WireTarget, count: number): Promise<RawH2Connection[]> {
  const opened: RawH2Connection[] = [];
  for (let i = 0; i < count; i += CONNECT_BATCH) {
    const batch = Math.min(CONNECT_BATCH, count - i);
    opened.push(...(await Promise.all(Array.from({ length: batch }, () => RawH2Connection.open(target)))));
  }
  return opened;
}

class Recorder {
  readonly outcomes: Record<string, number> = {};
  latencies = new Float64Array(1 << 16);
  count = 0;

  record(outcome: RawOutcome, latencyMs: number): void {
    this.outcomes[outcome] = (this.outcomes[outcome] ?? 0) + 1;
    if (this.count === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.count] = latencyMs;
    this.count += 1;
  }
}

/** The token for each successive call, round-robin; one token is sent HPACK-indexed as real clients do. */
function tokenSource(tokenSetId: string | undefined): { next: () => string | undefined; indexable: boolean } {
  if (tokenSetId === undefined) return { next: () => undefined, indexable: true };
  const tokens = tokenSets.get(tokenSetId);
  if (tokens === undefined || tokens.length === 0) throw new Error(`unknown token set ${tokenSetId}`);
  let i = 0;
  return {
    next: () => {
      const token = tokens[i]!;
      i = i + 1 === tokens.length ? 0 : i + 1;
      return token;
    },
    indexable: tokens.length === 1,
  };
}

function runClosed(job: LoadJob, pool: RawH2Connection[], body: Buffer): Promise<Recorder> {
  const recorder = new Recorder();
  const tokens = tokenSource(job.tokenSetId);
  const deadline = performance.now() + job.durationMs;
  const maxCalls = job.maxCalls ?? Number.POSITIVE_INFINITY;
  let started = 0;
  return new Promise((resolve) => {
    let active = job.concurrency;
    const slot = (connection: RawH2Connection): void => {
      const sentAt = performance.now();
      if (sentAt >= deadline || started >= maxCalls) {
        active -= 1;
        if (active === 0) resolve(recorder);
        return;
      }
      started += 1;
      connection.call(job.path, body, tokens.next(), tokens.indexable, (outcome) => {
        recorder.record(outcome, performance.now() - sentAt);
        slot(connection);
      });
    };
    for (let i = 0; i < job.concurrency; i += 1) slot(pool[i % pool.length]!);
  });
}

function runOpen(job: LoadJob, pool: RawH2Connection[], body: Buffer): Promise<Recorder> {
  const recorder = new Recorder();
  const tokens = tokenSource(job.tokenSetId);
  const total = Math.max(1, Math.round((job.rate * job.durationMs) / 1000));
  const intervalMs = 1000 / job.rate;
  const start = performance.now() + 1;
  let sent = 0;
  let answered = 0;
  return new Promise((resolve) => {
    let drainTimer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (drainTimer !== undefined) clearTimeout(drainTimer);
      const missing = total - answered;
      if (missing > 0) recorder.outcomes.timeout = missing;
      resolve(recorder);
    };
    const send = (intended: number): void => {
      pool[sent % pool.length]!.call(job.path, body, tokens.next(), tokens.indexable, (outcome) => {
        recorder.record(outcome, performance.now() - intended);
        answered += 1;
        if (answered === total) finish();
      });
    };
    // Polls with setImmediate rather than a timer: timers fire on millisecond ticks, which would
    // add up to a millisecond of schedule error to every latency measured here.
    const tick = (): void => {
      const now = performance.now();
      let intended = start + sent * intervalMs;
      while (sent < total && intended <= now) {
        send(intended);
        sent += 1;
        intended = start + sent * intervalMs;
      }
      if (sent < total) setImmediate(tick);
      else drainTimer = setTimeout(finish, DRAIN_LIMIT_MS);
    };
    setImmediate(tick);
  });
}

async function runJob(job: LoadJob): Promise<LoadResult> {
  const connectStart = performance.now();
  let pool = connectionPools.get(job.connectionKey);
  if (pool === undefined) {
    pool = await openConnections(job.target, job.connections);
    connectionPools.set(job.connectionKey, pool);
  }
  const connectMs = performance.now() - connectStart;
  const body = frameMessage(job.message);
  const started = performance.now();
  const cpuBefore = process.cpuUsage();
  const recorder = job.mode === 'closed' ? await runClosed(job, pool, body) : await runOpen(job, pool, body);
  const cpu = process.cpuUsage(cpuBefore);
  const elapsedMs = performance.now() - started;
  return {
    calls: recorder.count,
    elapsedMs,
    outcomes: recorder.outcomes,
    latencyMs: summarizeLatencies(recorder.latencies.subarray(0, recorder.count)),
    connectMs,
    loadCoreUse: (cpu.user + cpu.system) / 1000 / elapsedMs,
  };
}

/** A few calls through node:http2 reading the exact gRPC status and message of each. */
async function probe(request: ProbeRequest): Promise<CallOutcome[]> {
  const connection = await WireConnection.open(request.target);
  const tokens = tokenSource(request.tokenSetId);
  const body = frameMessage(request.message);
  const outcomes: CallOutcome[] = [];
  try {
    for (let i = 0; i < request.calls; i += 1) {
      const token = tokens.next();
      const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
      outcomes.push(await new Promise<CallOutcome>((resolve) => connection.call(request.path, body, headers, resolve)));
    }
  } finally {
    await connection.close();
  }
  return outcomes;
}

/** Closes the pools whose key starts with the prefix ('' closes all). */
async function closePools(prefix: string): Promise<number> {
  const closing: RawH2Connection[] = [];
  for (const [key, pool] of connectionPools) {
    if (!key.startsWith(prefix)) continue;
    connectionPools.delete(key);
    closing.push(...pool);
  }
  await Promise.all(closing.map((c) => c.close()));
  return closing.length;
}

type Request = (MintRequest | TokensRequest | LoadJob | ProbeRequest | { op: 'close'; prefix: string }) & { seq: number };

async function handle(message: Request): Promise<unknown> {
  switch (message.op) {
    case 'mint': {
      const tokens = await mintTokens(message.spec, message.count);
      tokenSets.set(message.setId, tokens);
      return { count: tokens.length };
    }
    case 'tokens':
      tokenSets.set(message.setId, message.tokens);
      return { count: message.tokens.length };
    case 'load':
      return runJob(message);
    case 'probe':
      return probe(message);
    case 'close':
      return { closed: await closePools(message.prefix) };
  }
}

process.on('message', (message: Request) => {
  handle(message).then(
    (result) => process.send!({ seq: message.seq, ok: true, result }),
    (err: unknown) => process.send!({ seq: message.seq, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
