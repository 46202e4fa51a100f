// The console's live view of the services' decision logs: recent decisions and per-edge counts.
import { LogTail, type LogTailOptions } from './log-tail.ts';

/** One decision as the page shows it: fields copied from a decision line, nothing else. */
export interface ConsoleDecision {
  /** The workload whose log the line came from: the receiving service. */
  service: string;
  /** The calling workload's registry name, or its SPIFFE ID when the registry does not know it. */
  caller: string | null;
  callerId: string | null;
  time: string;
  decisionId: string;
  method: string;
  allow: boolean;
  /** True for a denial that dry-run mode let through. */
  dryRun: boolean;
  grpcCode: number | null;
  errorCode: string | null;
  failedCheck: string | null;
  subject: string | null;
  tokenKind: string | null;
  actorChain: string[];
  checks: Record<string, string>;
  checkDetails: string[];
  reason: string;
}

// Events that record how a call was decided: the interceptor's decision, and a refusal in the handler.
const EVENTS = new Set(['authz.decision', 'authz.resource_denied', 'call.refused']);

const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/**
 * Parses one log line into a decision, or undefined for any other line. Only named fields are
 * copied: a token id is not shown, and whatever else a line holds never reaches the page.
 */
export function parseDecisionLine(line: string, service: string, nameOf: (spiffeId: string) => string | undefined): ConsoleDecision | undefined {
  if (!line.startsWith('{')) return undefined;
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (raw === null || typeof raw !== 'object' || !EVENTS.has(raw['event'] as string)) return undefined;
  const decisionId = text(raw['decision_id']);
  const method = text(raw['method']);
  if (decisionId === null || method === null) return undefined;
  const callerId = text(raw['peer_spiffe_id']);
  const checks: Record<string, string> = {};
  if (raw['checks'] !== null && typeof raw['checks'] === 'object') {
    for (const [k, v] of Object.entries(raw['checks'] as Record<string, unknown>)) if (typeof v === 'string') checks[k] = v;
  }
  const resourceDenied = raw['event'] === 'authz.resource_denied';
  if (resourceDenied) checks['resource'] = 'fail';
  const details = Array.isArray(raw['check_details']) ? raw['check_details'].filter((d): d is string => typeof d === 'string') : [];
  const reason = text(raw['reason']) ?? '';
  const time = typeof raw['time'] === 'number' ? new Date(raw['time']).toISOString() : (text(raw['time']) ?? '');
  return {
    service,
    caller: callerId === null ? null : (nameOf(callerId) ?? callerId),
    callerId,
    time,
    decisionId,
    method,
    allow: raw['allow'] === true && raw['would_deny'] !== true,
    dryRun: raw['dry_run'] === true,
    grpcCode: typeof raw['grpc_code'] === 'number' ? raw['grpc_code'] : null,
    errorCode: text(raw['error_code']),
    failedCheck: resourceDenied ? 'resource' : text(raw['failed_check']),
    subject: text(raw['subject']),
    tokenKind: text(raw['token_kind']),
    actorChain: Array.isArray(raw['actor_chain']) ? raw['actor_chain'].filter((a): a is string => typeof a === 'string') : [],
    checks,
    checkDetails: resourceDenied ? [`resource: ${reason}`] : details,
    reason,
  };
}

export interface EdgeCount {
  from: string;
  to: string;
  allowed: number;
  denied: number;
}

export interface DecisionFeedOptions {
  /** Log file per receiving service, or per process of one (`image-store-2`; see `serviceOf`). */
  logs: Readonly<Record<string, string>>;
  /** The service a `logs` key's process belongs to, for a replicated one; default: the key itself. */
  serviceOf?: (process: string) => string;
  nameOf: (spiffeId: string) => string | undefined;
  /** Decisions kept for a page that connects later. */
  recent?: number;
  /** The window edge counts cover. */
  windowMs?: number;
  clock?: () => number;
  tail?: LogTailOptions;
}

const BUCKET_MS = 10_000;

/**
 * Tails every service's log and fans decisions out to subscribers. Memory is bounded: a fixed
 * number of recent decisions, and per edge one counter pair per ten-second bucket in the window.
 */
export class DecisionFeed {
  readonly #tails: LogTail[];
  readonly #recent: ConsoleDecision[] = [];
  readonly #maxRecent: number;
  readonly #windowMs: number;
  readonly #clock: () => number;
  readonly #nameOf: (spiffeId: string) => string | undefined;
  readonly #subscribers = new Set<(d: ConsoleDecision) => void>();
  // edge key -> bucket start -> [allowed, denied]
  readonly #buckets = new Map<string, Map<number, [number, number]>>();

  constructor(opts: DecisionFeedOptions) {
    this.#maxRecent = opts.recent ?? 500;
    this.#windowMs = opts.windowMs ?? 5 * 60_000;
    this.#clock = opts.clock ?? Date.now;
    this.#nameOf = opts.nameOf;
    const serviceOf = opts.serviceOf ?? ((p: string) => p);
    this.#tails = Object.entries(opts.logs).map(([process, path]) => new LogTail(path, (line) => this.#line(serviceOf(process), line), opts.tail));
  }

  #line(service: string, line: string): void {
    const d = parseDecisionLine(line, service, this.#nameOf);
    if (d === undefined) return;
    this.#recent.push(d);
    if (this.#recent.length > this.#maxRecent) this.#recent.splice(0, this.#recent.length - this.#maxRecent);
    this.#count(d);
    for (const fn of this.#subscribers) fn(d);
  }

  #count(d: ConsoleDecision): void {
    // An edge joins two workloads the registry knows; a caller it does not know has no node to draw from.
    if (d.caller === null || d.caller === d.callerId) return;
    const at = Date.parse(d.time);
    const bucket = Math.floor((Number.isNaN(at) ? this.#clock() : at) / BUCKET_MS) * BUCKET_MS;
    if (bucket < this.#clock() - this.#windowMs) return;
    const key = `${d.caller}\u0000${d.service}`;
    let edge = this.#buckets.get(key);
    if (edge === undefined) this.#buckets.set(key, (edge = new Map()));
    let pair = edge.get(bucket);
    if (pair === undefined) edge.set(bucket, (pair = [0, 0]));
    pair[d.allow ? 0 : 1]++;
  }

  /** Allowed and denied calls per caller -> service over the window, dropping buckets that left it. */
  counts(): EdgeCount[] {
    const oldest = this.#clock() - this.#windowMs;
    const out: EdgeCount[] = [];
    for (const [key, edge] of this.#buckets) {
      let allowed = 0;
      let denied = 0;
      for (const [bucket, [a, d]] of edge) {
        if (bucket + BUCKET_MS <= oldest) edge.delete(bucket);
        else {
          allowed += a;
          denied += d;
        }
      }
      if (edge.size === 0) {
        this.#buckets.delete(key);
        continue;
      }
      const [from, to] = key.split('\u0000') as [string, string];
      out.push({ from, to, allowed, denied });
    }
    return out;
  }

  get windowMs(): number {
    return this.#windowMs;
  }

  recent(): readonly ConsoleDecision[] {
    return this.#recent;
  }

  /** Calls `fn` for every new decision until the returned function is called. */
  subscribe(fn: (d: ConsoleDecision) => void): () => void {
    this.#subscribers.add(fn);
    return () => this.#subscribers.delete(fn);
  }

  /** Reads what the logs gained now, instead of at the next poll. */
  poll(): void {
    for (const t of this.#tails) t.poll();
  }

  close(): void {
    for (const t of this.#tails) t.close();
    this.#subscribers.clear();
  }
}
